"""Opening an ONNX file with onnxruntime, once for every model the pipeline runs.

The checks run at load, so a missing, oversized or broken file fails at start-up with a clear
ModelError instead of on the first frame or message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from liveness.errors import ModelError

MAX_MODEL_BYTES = 50 * 1024 * 1024
"""Largest ONNX file accepted, bytes: our models are a few MB; more means a wrong file."""


def open_session(path: str | os.PathLike[str], threads: int = 1, what: str = "model") -> Any:
    """An onnxruntime CPU session of ``path`` with ``threads`` intra-op threads (1 suits many processes per machine)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: {what} file not found")
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ModelError(f"{path}: {size} bytes, larger than the {MAX_MODEL_BYTES} accepted")
    if threads < 1:
        raise ModelError(f"threads must be >= 1, got {threads}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # a memory pattern is planned and kept per input shape: with batches of every size up to the
    # largest, that grew a face worker by 270 MB; without it, as fast here
    opts.enable_mem_pattern = False
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises several private types for a bad file
        raise ModelError(f"{path}: not a loadable ONNX model: {e}") from None
