"""A one-node Slurm cluster on this machine, in a folder of its own: for the test suite and for
rehearsing ``make all LAUNCH="srun ..."`` before taking it to a real cluster.

    python tools/slurm_local.py start DIR    # prints: export SLURM_CONF=DIR/slurm.conf
    python tools/slurm_local.py stop DIR

It runs Debian's ``slurm-wlm`` (slurmctld, slurmd) and ``munge`` as root, all listening on
127.0.0.1 on free ports, with every file (config, key, sockets, state, logs) under DIR, so it
touches nothing of a Slurm the machine may already have. ``tools/install_slurm.sh`` installs
the packages. A job runs like on any cluster: ``srun``, ``sbatch``, ``scancel`` with
``SLURM_CONF`` set; finished jobs are listed in ``DIR/jobcomp.log`` (Slurm's jobcomp/filetxt
record), which the tests compare with what ``run.json`` says.

The node offers the machine's CPUs and no GPU: ``--gres=gpu:1`` is refused here, so rehearse
with ``--cpus-per-task``. Processes are tracked by parent (proctrack/linuxproc), so that
``scancel`` signals every process of a job, a notebook's kernel included.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
PARTITION = "tcl"
NODE = "tcl-node"


class SlurmUnavailable(RuntimeError):
    """Slurm or munge is not installed, or we are not root: the cluster cannot start."""


def _find(name: str) -> str | None:
    """``name``'s path on PATH or in /usr/sbin, /sbin (daemons live there), or None."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which(name, path=path)


def missing_programs() -> list[str]:
    """The programs a local cluster needs that are not on PATH (or in /usr/sbin)."""
    needed = (*DAEMONS, "srun", "scancel", "sinfo")
    return [name for name in needed if _find(name) is None]


def _program(name: str) -> str:
    found = _find(name)
    if found is None:
        raise SlurmUnavailable(f"{name} not found")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_config(root: Path, cpus: int | None = None, memory_mb: int = 4096) -> Path:
    """slurm.conf (and the empty plugstack.conf it names) for a node of ``cpus`` CPUs."""
    cpus = cpus or os.cpu_count() or 1
    host = socket.gethostname().split(".")[0]
    (root / "plugstack.conf").write_text("")
    settings = {
        "ClusterName": "tcl-local",
        "SlurmctldHost": f"{host}(127.0.0.1)",
        "SlurmctldPort": _free_port(),
        "SlurmdPort": _free_port(),
        "AuthType": "auth/munge",
        "CredType": "cred/munge",
        "AuthInfo": f"socket={root / 'munge.socket'}",
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "StateSaveLocation": root / "ctld",
        "SlurmdSpoolDir": root / "slurmd",
        "SlurmctldPidFile": root / "slurmctld.pid",
        "SlurmdPidFile": root / "slurmd.pid",
        "SlurmctldLogFile": root / "slurmctld.log",
        "SlurmdLogFile": root / "slurmd.log",
        "PlugStackConfig": root / "plugstack.conf",
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_CPU",
        "SchedulerType": "sched/builtin",
        "JobCompType": "jobcomp/filetxt",
        "JobCompLoc": root / "jobcomp.log",
        "AccountingStorageType": "accounting_storage/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "MpiDefault": "none",
        "ReturnToService": 2,
        "SlurmdParameters": "config_overrides",  # this node is what the config says
        "KillWait": 30,  # SIGTERM, then SIGKILL 30 s later: time to write a checkpoint
        "InactiveLimit": 0,
        "MinJobAge": 600,
    }
    lines = [f"{name}={value}" for name, value in settings.items()]
    lines += [
        f"NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} "
        f"RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
    ]
    conf = root / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def environment(root: Path) -> dict[str, str]:
    """This process's environment with SLURM_CONF pointing at the cluster in ``root``."""
    return {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}


def start(root: Path, cpus: int | None = None, timeout_s: float = 60.0) -> dict[str, str]:
    """Start munged, slurmctld and slurmd for ``root``; return the environment to use it with.

    Raises SlurmUnavailable when a program is missing or we are not root, RuntimeError (with
    the daemons' logs) when the node does not come up within ``timeout_s``.
    """
    missing = missing_programs()
    if missing:
        raise SlurmUnavailable(
            f"not installed: {', '.join(missing)} (tools/install_slurm.sh installs them)"
        )
    if os.geteuid() != 0:
        raise SlurmUnavailable("slurmd and munged must run as root here")
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    for sub in ("ctld", "slurmd"):
        (root / sub).mkdir(exist_ok=True)
    key = root / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
    conf = write_config(root, cpus)
    env = environment(root)
    munge = [
        _program("munged"),
        "--force",
        f"--key-file={key}",
        f"--socket={root / 'munge.socket'}",
        f"--pid-file={root / 'munged.pid'}",
        f"--log-file={root / 'munged.log'}",
        f"--seed-file={root / 'munged.seed'}",
    ]
    subprocess.run(munge, check=True, env=env, capture_output=True)
    # -i: ignore state saved by an earlier start in this folder; daemons fork into background
    subprocess.run([_program("slurmctld"), "-i", "-f", str(conf)], check=True, env=env)
    subprocess.run([_program("slurmd"), "-f", str(conf)], check=True, env=env)
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        probe = subprocess.run(
            ["sinfo", "-h", "-n", NODE, "-o", "%t"], env=env, capture_output=True, text=True
        )
        state = probe.stdout.strip()
        if probe.returncode == 0 and state in {"idle", "mix", "alloc"}:
            return env
        time.sleep(0.25)
    logs = "\n".join(
        f"--- {name}.log\n{(root / f'{name}.log').read_text(errors='replace')[-2000:]}"
        for name in ("slurmctld", "slurmd")
        if (root / f"{name}.log").exists()
    )
    stop(root)
    raise RuntimeError(f"the local Slurm node did not come up (state {state!r})\n{logs}")


def stop(root: Path, timeout_s: float = 20.0) -> None:
    """Stop the daemons started by :func:`start` for ``root`` (by their pid files)."""
    root = Path(root).resolve()
    pids = []
    for name in ("slurmd", "slurmctld", "munged"):
        pid_file = root / f"{name}.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGTERM)
            pids.append(pid)
        except (OSError, ValueError, IndexError):
            continue
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def completed_jobs(root: Path) -> list[dict[str, str]]:
    """Slurm's own record of the finished jobs (jobcomp/filetxt): one dict per job, with keys
    such as JobId, Name, NodeList, JobState, ExitCode."""
    log = Path(root) / "jobcomp.log"
    if not log.exists():
        return []
    jobs = []
    for line in log.read_text().splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if fields:
            jobs.append(fields)
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/slurm_local.py", description=__doc__)
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("root", type=Path, help="folder for the cluster's files")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of the node (all)")
    args = parser.parse_args(argv)
    if args.action == "stop":
        stop(args.root)
        return 0
    try:
        start(args.root, args.cpus)
    except SlurmUnavailable as error:
        print(f"error: cannot start a local Slurm: {error}", file=sys.stderr)
        return 1
    print(f"export SLURM_CONF={args.root.resolve() / 'slurm.conf'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
