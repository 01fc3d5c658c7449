"""The layers import downwards only, and the installed ``liveness`` namespace is the only one used.

Folders and the packages they install as: ``liveness/`` the kernel (``liveness.*``); ``ingest/``,
``workers/``, ``fusion/`` the services; ``models/`` training and evaluation; ``app/`` the commands.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from liveness.app.cli import COMMANDS
from tests.conftest import ROOT

LAYERS = {"liveness": "kernel", "ingest": "ingest", "workers": "workers", "fusion": "fusion", "models": "models",
          "app": "app"}
"""Folder -> layer; the folder ``X`` other than ``liveness`` installs as ``liveness.X``."""

MAY_IMPORT = {
    "kernel": {"kernel"},
    "ingest": {"kernel", "ingest"},
    "workers": {"kernel", "workers"},
    "fusion": {"kernel", "fusion"},
    "models": {"kernel", "models", "workers"},  # evaluation scores with the workers' own runner and analyzer
    "app": set(LAYERS.values()),
}

ENTRY_POINTS = {ROOT / "liveness" / "__main__.py"}
"""``python -m liveness``: runs the CLI, imported by nothing."""


def layer_of(module: str) -> str | None:
    """The layer of an absolute module name; ``top-level X`` for a bare ``ingest``, ``models``, ...
    (installed only under ``liveness``); None outside this project."""
    parts = module.split(".")
    if parts[0] in LAYERS and parts[0] != "liveness":
        return f"top-level {parts[0]}"
    if parts[0] != "liveness":
        return None
    return LAYERS.get(parts[1], "kernel") if len(parts) > 1 else "kernel"


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, at any depth (lazy imports in functions count)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            assert node.module is not None
            # ``from liveness import ingest`` imports the package liveness.ingest
            names = [f"liveness.{a.name}" for a in node.names] if node.module == "liveness" else [node.module]
            out += [(node.lineno, name) for name in names]
    return out


def test_layers_import_downwards_only() -> None:
    wrong = []
    for folder, layer in LAYERS.items():
        files = sorted((ROOT / folder).rglob("*.py"))
        assert files, folder
        for path in files:
            if path in ENTRY_POINTS:
                continue
            for line, module in imports(path):
                target = layer_of(module)
                if target is not None and target not in MAY_IMPORT[layer]:
                    wrong.append(f"{path.relative_to(ROOT)}:{line}: {layer} imports {module} ({target})")
    assert not wrong, "\n".join(wrong)


def test_layer_of() -> None:
    assert layer_of("liveness.contract") == layer_of("liveness") == "kernel"
    assert layer_of("liveness.ingest.service") == "ingest"
    assert layer_of("liveness.app") == "app"
    assert layer_of("models.datasets") == "top-level models"
    assert layer_of("numpy") is None


def test_commands_name_installed_modules() -> None:
    for name, (target, _, _) in COMMANDS.items():
        module = target.partition(":")[0]
        assert module.startswith("liveness."), name
        assert importlib.util.find_spec(module) is not None, f"{name}: {module}"


def test_own_models_despite_another_models_package(tmp_path: Path) -> None:
    """Another project's ``models`` package first on the path: the shipped face model is still found."""
    other = tmp_path / "models"
    (other / "artifacts").mkdir(parents=True)
    (other / "__init__.py").write_text("OTHER = True\n")
    (other / "artifacts" / "face.onnx").write_bytes(b"not an ONNX model")
    code = ("import models; assert models.OTHER\n"
            "from liveness.defaults import artifact_path\n"
            "from liveness.workers.runners import OnnxModel\n"
            "print(OnnxModel(artifact_path('face.onnx')).metadata['liveness.name'])\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "face"
