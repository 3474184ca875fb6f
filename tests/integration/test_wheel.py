"""The workbench as a wheel: built from this checkout, installed in a fresh venv, it works from there.

pyproject.toml finds the packages itself and ships workbench/netboot/files/* as
package data; a module or file it missed would only show once installed, which
the editable install of .venv never shows. So: build the wheel, install it into
a new venv, and run `fab -l`, import every module and read the package data there.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What a build reads from the checkout. Copied, not built in place: setuptools would
# leave build/ and workbench.egg-info/ in a tree other people are working in.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "README.md")

# Run by the new venv's python from outside the checkout: every module imports, and the
# workbench found is the wheel's, with its package data.
CHECK = """
import importlib, pkgutil, sys
from pathlib import Path

import workbench
from workbench.core import config
from workbench.netboot import image_files
from workbench.sandbox import sandboxes

venv, checkout = Path(sys.argv[1]), Path(sys.argv[2])
assert Path(workbench.__file__).is_relative_to(venv), workbench.__file__
names = [m.name for m in pkgutil.walk_packages(workbench.__path__, "workbench.")]
for name in names:
    module = importlib.import_module(name)
    assert Path(module.__file__).is_relative_to(venv), module.__file__
report = Path(image_files.__file__).parent / "files" / "workbench-report.py"
assert image_files.REPORT_SCRIPT.strip() and image_files.REPORT_SCRIPT == report.read_text()
assert image_files.REPORT_UNIT.strip()
# The sandboxes use the checkout's Vagrantfile on purpose, wherever the package is installed.
cfg = config.from_dict({"workbench": {"prefix": "wheel"}}, checkout / "workbench.toml")
assert sandboxes.vagrantfile_dir(cfg) == checkout and (checkout / "Vagrantfile").is_file()
print(len(names), "modules")
"""


def run(*argv: str | Path, cwd: Path) -> str:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(map(str, argv))}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "workbench", source / "workbench", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    # No build isolation: the build backend comes from .venv, so nothing is downloaded. Its
    # setuptools (66, from ensurepip) builds wheels only with the `wheel` package beside it.
    assert importlib.util.find_spec("wheel"), "the dev extra `wheel` is missing from .venv: make setup installs it"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, source, cwd=source)
    (built,) = out.glob("workbench-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv holding the wheel, and .venv's third-party packages for its dependencies.

    Installing fabric, docker, salt... afresh would take minutes and the network. A
    .pth line puts .venv's site-packages on the path instead, after the venv's own:
    a plain path, not a site directory, so the .pth files in it are not run, and
    among them the editable finder that would import the checkout's workbench.
    """
    root = tmp_path_factory.mktemp("venv") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    run(base, "-m", "venv", "--without-pip", root, cwd=root.parent)
    python = root / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=root).strip())
    (site / "workbench-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # .venv's pip installs into the new venv (`--python`): the new one needs no pip of its own.
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel, cwd=root)
    return root


def test_the_wheel_ships_every_package_and_the_netboot_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "workbench").rglob("__init__.py")}
    assert {f"{package}/__init__.py" for package in packages} <= names
    for data in (REPO / "workbench/netboot/files").iterdir():
        assert f"workbench/netboot/files/{data.name}" in names
    assert not any(name.startswith("tests/") for name in names)


def test_fab_lists_the_tasks_from_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    out = run(venv / "bin" / "fab", "-l", cwd=tmp_path)
    assert "image.bake" in out and "release.rollback" in out and "netboot.serve" in out


def test_every_module_imports_from_the_wheel_with_its_package_data(venv: Path, tmp_path: Path) -> None:
    out = run(venv / "bin" / "python", "-c", textwrap.dedent(CHECK), venv, REPO, cwd=tmp_path)
    assert int(out.split()[0]) > 50
