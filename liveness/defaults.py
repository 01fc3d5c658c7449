"""Defaults shared by every service. Units are in the names."""

from importlib.resources import files
from pathlib import Path

from liveness.errors import ModelError

SCHEMA_VERSION = 3
"""Version of the stream contract; bumped when a field changes meaning (2: face crops carry views;
3: decisions carry fusion's signature, ``mac``)."""

KEY_PREFIX = "liveness"
"""Prefix of every Redis key, so two installations can share one Redis."""

EYE_WINDOW = 10
"""Frames in one eye-ratio window, as in the original eye network."""

STREAM_MAXLEN = 10_000
"""Approximate cap on each stream's length (XADD MAXLEN ~)."""

CROP_RETENTION_S = 60.0
"""Face crops older than this are trimmed from Redis (XTRIM MINID): they are biometric data."""

METRICS_PORT = 9400
"""First port of the Prometheus endpoints; each process takes the next free one from here."""

SEQUENCE_FPS = 15.0
"""Rate of image sequences, whose frames carry no timestamps: NUAA's, and the folders
``liveness collect`` records, which ``--dataset folders`` reads back at this rate."""


def artifact_path(name: str) -> Path:
    """Path of a shipped model in ``liveness.models``' ``artifacts``.

    Found through the ``liveness`` namespace, so another project's top-level ``models`` package
    earlier on the path cannot shadow it; a real file, since onnxruntime opens a path.
    """
    folder = files("liveness.models") / "artifacts"
    if not isinstance(folder, Path):
        raise ModelError(f"liveness.models is not installed as files on disk ({folder!r}): reinstall the wheel")
    return folder / name


EYE_MODEL = "eye.onnx"
"""The eye model's file: in ``models/artifacts`` of a checkout, never in the wheel or the image."""


def eye_model_path(configured: str | None = None) -> Path:
    """The eye model to load: ``configured`` (``eye_worker.model``), else the one of a checkout.

    Opt-in, since it is fitted on NUAA, whose data is for research use only: the default install
    ships only models an integrator may use commercially. ModelError, saying where to get one,
    when there is none.
    """
    path = Path(configured) if configured else artifact_path(EYE_MODEL)
    if not path.is_file():
        where = f"eye_worker.model {path}: no such file" if configured else "no eye model is installed"
        raise ModelError(
            f"{where}. The eye path (ingest.eyes: true) needs one, and the package and image ship none: the "
            "project's is fitted on NUAA, whose data is for research use only, not for a commercial product "
            "(models/artifacts/eye.md). Write one with `liveness train eye --dataset nuaa --root NUAA_ROOT "
            "--out eye.onnx` (it is under the licence of the data it is fitted on), or take "
            "models/artifacts/eye.onnx of a checkout, and set eye_worker.model (LIVENESS_EYE_WORKER__MODEL) "
            "to its path")
    return path
