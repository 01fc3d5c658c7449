"""The supervisor's children: forked from a fork server that holds the landmark model, yet started
in the supervisor's environment and directory of the moment, as spawned processes would be."""

import json
import os
import signal
from pathlib import Path

import pytest

from liveness.supervisor import ProcessSpec, Supervisor


def report(out: str) -> None:
    from liveness.landmarks import shape_predictor

    Path(out).write_text(json.dumps({"mark": os.environ.get("LIVENESS_TEST_MARK"), "cwd": os.getcwd(),
                                     "preloaded": shape_predictor.cache_info().currsize}))


def run_one(out: Path) -> dict[str, object]:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert Supervisor([ProcessSpec("reporter", report, (str(out),), restart=False)]).run() == 0
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return json.loads(out.read_text())


def test_children_share_the_preloaded_model_and_see_the_current_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVENESS_TEST_MARK", "first")
    first = run_one(tmp_path / "first.json")
    assert first["mark"] == "first"
    assert first["preloaded"] == 1, "the landmark model was loaded by the fork server, not by the child"
    # the fork server is already running now, with the old environment and directory
    monkeypatch.setenv("LIVENESS_TEST_MARK", "second")
    monkeypatch.chdir(tmp_path)
    second = run_one(tmp_path / "second.json")
    assert second == {"mark": "second", "cwd": str(tmp_path), "preloaded": 1}
