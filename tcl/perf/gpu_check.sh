#!/usr/bin/env bash
# The GPU check (tcl/perf/gpu_check.py --help): from a fresh checkout on a GPU machine without
# network, with the wheels of `make gpu-wheels` copied beside it in .whl/:
#   bash tcl/perf/gpu_check.sh --out DIR
# Rehearsal on a CPU:
#   bash tcl/perf/gpu_check.sh --profile smoke --device cpu --jobs 2 --threads 1 --budget-s 1200
# Options go to tcl/perf/gpu_check.py. The Python is $PYTHON, else .venv/bin/python where it
# exists (this project's environment), else python3 (the GPU image's).
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-}
if [ -z "$py" ] || ! command -v "$py" >/dev/null 2>&1; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" tcl/perf/gpu_check.py --python "$py" "$@"
