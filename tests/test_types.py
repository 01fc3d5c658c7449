"""mypy finds no error in the installed package, ``liveness`` and every folder mapped into it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import ROOT


def link_tree(dest: Path) -> Path:
    """``dest/liveness`` as installed: the kernel's files, and each mapped folder where it is installed.

    mypy resolves modules from folders; setuptools' editable finder, which maps ``liveness.app``
    to ``app/``, is an import hook it does not run.
    """
    package = dest / "liveness"
    package.mkdir(parents=True)
    for path in (ROOT / "liveness").iterdir():
        if path.suffix == ".py":
            (package / path.name).symlink_to(path)
    mapped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for name, folder in mapped.items():
        (package / name.removeprefix("liveness.")).symlink_to(ROOT / folder)
    return dest


def test_mypy_finds_no_error(tmp_path: Path) -> None:
    tree = link_tree(tmp_path / "src")
    run = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                          "--cache-dir", str(ROOT / ".mypy_cache"), "-p", "liveness"],
                         cwd=tree, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
