"""Download the wheels that ``tcl/perf/gpu_check.sh`` installs on a GPU machine without network.

    python tcl/perf/gpu_wheels.py [--dest .whl] [--python-version 3.12] [--dry-run]

(``make gpu-wheels`` runs it with the project's environment.) The device machines of this
workplace have torch and the scientific stack but not everything ``make all`` needs (nibabel,
papermill and the Jupyter kernel machinery at least), and reach no package index. So the
wheels travel with the checkout: this script takes the project's runtime dependencies from
pyproject.toml, minus the heavy ones such a machine has (:data:`PROVIDED`), follows their
requirements through this environment's installed metadata, and downloads each at the version
installed here, as a binary wheel for CPython ``--python-version`` on manylinux x86-64 (no
dependency resolution by pip: the list is complete by construction). gpu_check.sh then installs
only the ones the machine lacks.

It also downloads GNU make's Debian package (``apt-get download make``, 0.4 MB) beside them:
the GPU image's package list does not say whether it has ``make``, and gpu_check.py unpacks
this one only where it has not.

The folder (``.whl/``, ignored by git) travels to the GPU machine with the checkout.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]  # the checkout (this file is tcl/perf/*.py)
# Already on the GPU machine's image, and large: never carried. jupyterlab is not needed
# to execute notebooks.
PROVIDED = {
    "torch", "numpy", "scipy", "pandas", "scikit-learn", "scikit-image", "matplotlib",
    "pillow", "jupyterlab", "setuptools", "pip", "wheel",
}  # fmt: skip
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def runtime_roots() -> list[str]:
    """pyproject.toml's runtime dependencies that are not :data:`PROVIDED`."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [canonicalize_name(Requirement(d).name) for d in project["dependencies"]]
    return [n for n in names if n not in PROVIDED]


def closure(roots: list[str], python_version: str) -> tuple[dict[str, str], list[str]]:
    """Every distribution ``roots`` need on CPython ``python_version`` (Linux), with the
    version installed in this environment: ({name: version}, [names not installed here]).

    A name needed on ``python_version`` but not on this Python (papermill needs aiohttp from
    3.12 on) has no version here to pin: it is reported, not downloaded (the GPU machine's image
    has aiohttp and its dependencies)."""
    environment = {
        "python_version": python_version,
        "python_full_version": f"{python_version}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    found: dict[str, str] = {}
    missing: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in found or name in PROVIDED or name in missing:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.add(name)
            continue
        found[name] = dist.version
        for line in dist.requires or ():
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                todo.append(canonicalize_name(requirement.name))
    return dict(sorted(found.items())), sorted(missing)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=ROOT / ".whl")
    parser.add_argument("--python-version", default="3.12", help="the GPU image's (3.12)")
    parser.add_argument("--dry-run", action="store_true", help="list, download nothing")
    args = parser.parse_args(argv)
    roots = runtime_roots()
    wanted, missing = closure(roots, args.python_version)
    if any(root in missing for root in roots):
        raise SystemExit(
            f"not installed here: {', '.join(r for r in roots if r in missing)}; run this with "
            "the project's environment (make gpu-wheels)"
        )
    for name, version in wanted.items():
        print(f"{name}=={version}")
    if missing:
        print(f"not carried (needed on Python {args.python_version} only, not installed here; "
              f"the GPU image has them): {', '.join(missing)}")  # fmt: skip
    if args.dry_run:
        return 0
    args.dest.mkdir(parents=True, exist_ok=True)
    # One wheel per distribution: stale versions would install side by side and clash.
    keep = {(name, Version(version)) for name, version in wanted.items()}
    for old in args.dest.glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(old.name)
        if (name, version) not in keep:
            old.unlink()
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--python-version", args.python_version, "--implementation", "cp",
        "--dest", str(args.dest),
    ]  # fmt: skip
    for platform in PLATFORMS:
        command += ["--platform", platform]
    command += [f"{name}=={version}" for name, version in wanted.items()]
    subprocess.run(command, check=True)
    wheels = sorted(args.dest.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels)
    print(f"{len(wheels)} wheels, {size / 2**20:.1f} MiB in {args.dest}")
    download_make(args.dest)
    return 0


def download_make(dest: Path) -> None:
    """GNU make's Debian package into ``dest`` (a warning, not a failure, where apt-get
    cannot fetch it: most GPU images have make)."""
    for old in dest.glob("make_*.deb"):
        old.unlink()
    try:
        subprocess.run(["apt-get", "download", "make"], cwd=dest, check=True,
                       capture_output=True, text=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", None) or error
        print(f"warning: could not download make's Debian package ({detail}); gpu_check "
              "needs make on the GPU machine")  # fmt: skip
        return
    for deb in dest.glob("make_*.deb"):
        print(f"{deb.name}, {deb.stat().st_size / 2**20:.1f} MiB in {dest}")


if __name__ == "__main__":
    raise SystemExit(main())
