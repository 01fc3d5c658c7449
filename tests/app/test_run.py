"""``liveness run``'s eye worker pool follows the cameras' eye path, and needs the opt-in eye model."""

from __future__ import annotations

import logging

import pytest

from pathlib import Path

from liveness import defaults
from liveness.app.run import eye_pool
from liveness.config import Settings
from liveness.defaults import eye_model_path
from liveness.errors import ModelError
from liveness.workers.eye import EyeWorker


def settings(eyes: bool, eye_model: str | None = None) -> Settings:
    return Settings.model_validate({"ingest": {"eyes": eyes}, "eye_worker": {"model": eye_model},
                                    "cameras": [{"id": "door", "source": "door.mp4"}]})


def test_no_eye_worker_unless_a_camera_sends_eye_windows(caplog: pytest.LogCaptureFixture) -> None:
    assert eye_pool(settings(False), None) == 0
    assert eye_pool(settings(False), 2) == 2, "--eye-workers says"
    assert not caplog.records
    assert eye_pool(settings(True), None) == 1


def test_eye_path_on_under_a_policy_that_weighs_it_zero_is_noted(caplog: pytest.LogCaptureFixture) -> None:
    """The shipped policy (fusion.json) weighs the eye model 0."""
    with caplog.at_level(logging.WARNING):
        eye_pool(settings(True), None)
    assert "weighs the eye model 0" in caplog.text and "door" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert eye_pool(settings(True), 0) == 0
    assert "no eye worker" in caplog.text


def test_eye_path_without_an_eye_model_fails_at_start_saying_where_to_get_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As an installed wheel or the image, which ship no eye model (research-use data, eye.md)."""
    monkeypatch.setattr(defaults, "artifact_path", lambda name: tmp_path / name)
    assert eye_pool(settings(False), None) == 0, "the eye path off needs no eye model"
    for fails in (lambda: eye_pool(settings(True), None), lambda: eye_pool(settings(False), 1),
                  lambda: EyeWorker.model_path(None)):
        with pytest.raises(ModelError) as e:
            fails()
        assert "no eye model is installed" in str(e.value)
        assert "liveness train eye" in str(e.value) and "research use only" in str(e.value)
        assert "eye_worker.model" in str(e.value)
    with pytest.raises(ModelError, match=f"eye_worker.model {tmp_path}/missing.onnx: no such file"):
        eye_pool(settings(True, str(tmp_path / "missing.onnx")), None)
    model = tmp_path / "mine.onnx"
    model.write_bytes(Path(__file__).resolve().parents[2].joinpath("models/artifacts/eye.onnx").read_bytes())
    assert eye_pool(settings(True, str(model)), None) == 1, "an explicit eye model turns the eye path on"
    assert EyeWorker.model_path(str(model)) == model


def test_a_checkout_carries_the_eye_model_for_development() -> None:
    assert eye_model_path() == Path(__file__).resolve().parents[2] / "models" / "artifacts" / "eye.onnx"
