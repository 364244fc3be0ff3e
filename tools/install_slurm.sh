#!/usr/bin/env bash
# Install what tests/test_slurm.py starts a one-node Slurm cluster with: Debian's slurm-wlm
# (slurmctld, slurmd, srun, scancel) and munge. Needs root and apt-get; elsewhere it says so
# and does nothing (the test then says in one line that it was skipped). CI runs it.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
   && command -v srun >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "tools/install_slurm.sh: installing Slurm needs root and apt-get; not installed" >&2
  exit 0
fi
start=$(date +%s)
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  slurm-wlm munge >/dev/null
echo "tools/install_slurm.sh: slurm-wlm and munge installed in $(( $(date +%s) - start )) s"
