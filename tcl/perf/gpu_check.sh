#!/usr/bin/env bash
# The device check of issue 10 (tools/gpu_check.py --help): from a fresh checkout on a GPU
# machine without network. The device tool's call, with the wheels of `make gpu-wheels`:
#   run(command="bash tools/gpu_check.sh", carry=[".whl"], timeout_s=600)
# Rehearsal on a CPU:
#   bash tools/gpu_check.sh --profile smoke --device cpu --jobs 2 --threads 1 --budget-s 1200
# Options go to tools/gpu_check.py. The Python is $PYTHON, else .venv/bin/python where it
# exists (this project's environment), else python3 (the GPU image's).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ] || ! command -v "$py" >/dev/null 2>&1; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" tools/gpu_check.py --python "$py" "$@"
