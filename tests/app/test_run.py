"""``liveness run``'s eye worker pool follows the cameras' eye path."""

from __future__ import annotations

import logging

import pytest

from liveness.app.run import eye_pool
from liveness.config import Settings


def settings(eyes: bool) -> Settings:
    return Settings.model_validate({"ingest": {"eyes": eyes}, "cameras": [{"id": "door", "source": "door.mp4"}]})


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
