"""Packaging: the metadata builds without deprecation warnings; both environment files agree."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_metadata_builds_without_a_license_warning_and_declares_mit(tmp_path):
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("the installed setuptools predates SPDX license strings (needs >= 77)")
    # A copy of what the metadata reads, so that the build leaves nothing in the checkout.
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "tcl").mkdir()
    (tmp_path / "tcl" / "__init__.py").write_text("")
    script = (
        "from setuptools import build_meta\n"
        "print(build_meta.prepare_metadata_for_build_wheel('meta'))\n"
    )
    (tmp_path / "meta").mkdir()
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    # setuptools warned "`project.license` as a TOML table is deprecated" on every install
    assert "license" not in done.stderr.lower(), done.stderr
    metadata = (tmp_path / "meta" / done.stdout.strip().splitlines()[-1] / "METADATA").read_text()
    assert "License-Expression: MIT" in metadata.splitlines()


def test_build_requirement_admits_only_setuptools_that_read_an_spdx_license():
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(project["project"]["license"], str)
    (setuptools,) = [
        Requirement(r) for r in project["build-system"]["requires"] if r.startswith("setuptools")
    ]
    assert not setuptools.specifier.contains("76.1") and setuptools.specifier.contains("77.0")


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()


def test_every_dependency_is_in_both_environment_files():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    declared |= {_name(r) for r in project["optional-dependencies"]["dev"]}
    conda = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    listed = {_name(d) for d in conda if isinstance(d, str)}
    listed |= {_name(d) for item in conda if isinstance(item, dict) for d in item.get("pip", [])}
    assert declared - listed == set()


def _locked() -> dict[str, list[tuple[str, str, list[str]]]]:
    """requirements.lock as {name: [(version, marker, via), ...]} (one entry per marker)."""
    entries: dict[str, list[tuple[str, str, list[str]]]] = {}
    current = None
    via_block = False
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)\s*(?:;\s*([^\\]*?))?\s*\\?$", line)
        if pin:
            current = (pin[2], (pin[3] or "").strip(), [])
            entries.setdefault(pin[1].lower().replace("_", "-"), []).append(current)
            via_block = False
        elif current is not None and line.strip().startswith("# via"):
            rest = line.strip().removeprefix("# via").strip()
            via_block = not rest
            if rest:
                current[2].append(rest)
        elif current is not None and via_block and line.strip().startswith("#   "):
            current[2].append(line.strip().removeprefix("#").strip())
        elif current is not None and line.strip().startswith("--hash=sha256:"):
            current[2].append("hash")
    return entries


def test_the_lock_pins_exactly_what_pyproject_declares_with_hashes():
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    declared += [Requirement(r) for r in project["optional-dependencies"]["dev"]]
    locked = _locked()
    assert locked, "requirements.lock holds no pins"
    direct = {name for name, pins in locked.items() for _, _, via in pins
              if "tcl (pyproject.toml)" in via}  # fmt: skip
    # torch is resolved but left out of the lock: the Makefile's TORCH installs it
    wanted = {r.name.lower() for r in declared} - {"torch"}
    assert direct == wanted, (
        f"run `make lock`: declared but not locked {sorted(wanted - direct)}, locked as direct "
        f"but no longer declared {sorted(direct - wanted)}"
    )
    assert "torch" not in locked and not any(name.startswith("nvidia-") for name in locked)
    for requirement in declared:
        for version, _, via in locked.get(requirement.name.lower(), []):
            assert requirement.specifier.contains(version, prereleases=True), (requirement, version)
            assert "hash" in via, f"{requirement.name} is locked without a hash"


def test_the_makefile_installs_the_exact_torch_pyproject_admits():
    from packaging.requirements import Requirement

    makefile = (ROOT / "Makefile").read_text()
    (pin,) = re.findall(r"^TORCH\s*\?=\s*(\S+)", makefile, flags=re.MULTILINE)
    torch = Requirement(pin)
    (version,) = [spec.version for spec in torch.specifier if spec.operator == "=="]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (declared,) = [Requirement(r) for r in project["dependencies"] if _name(r) == "torch"]
    assert declared.specifier.contains(version)
    assert "--require-hashes -r $(LOCK)" in makefile  # make env installs from the lock
