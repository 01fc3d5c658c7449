"""The face model's selection rules: do no harm on any left-out source, prints and screens weigh the same."""

from __future__ import annotations

import numpy as np
import pytest

from liveness.models import train_face
from liveness.models.face_data import FaceCrops
from liveness.models.train_face import Fitted, Source, SourceSpec, balanced, leave_one_source_out, sources
from tests.conftest import SHARED


def synthetic(name: str, attack: str, pair: np.ndarray, labels: np.ndarray) -> Source:
    n = len(labels)
    data = FaceCrops(np.zeros((n, 1, 1, 3), np.uint8), np.ones(n, bool), np.zeros((n, 4), np.int32),
                     labels.astype(np.int64), np.arange(n), [str(i) for i in range(n)], np.array([""] * n),
                     np.array([""] * n), [str(i) for i in range(n)])
    return Source(SourceSpec(name, "folders", "", name, attack), data, np.zeros((n, 256), np.float32), pair)


class Shifted(Fitted):
    """The pair's score moved by a fixed amount on some sources: better on screens, worse on one print source."""

    shift: dict[str, float] = {}

    def scores(self, source: Source) -> np.ndarray:
        return np.clip(source.pair + self.shift.get(source.name, 0.0), 0.0, 1.0)


def test_a_candidate_worse_than_the_pair_on_one_source_is_rejected_whatever_it_gains(monkeypatch: pytest.MonkeyPatch) -> None:
    labels = np.array([0] * 50 + [1] * 50)
    prints = np.r_[np.full(2, 0.45), np.full(48, 0.2), np.full(50, 0.8)]  # two live frames close to the threshold
    screens = np.r_[np.full(50, 0.2), np.full(25, 0.8), np.full(25, 0.4)]  # the pair accepts half the attacks
    data = [synthetic("print-a", "print", np.r_[np.full(50, 0.2), np.full(50, 0.8)], labels),
            synthetic("print-b", "print", prints, labels)]
    data += [synthetic(f"room-{i}", "screen", screens.copy(), labels) for i in range(8)]
    # every attack of the rooms caught, but print-b's two live frames rejected: ACER +0.02 there
    Shifted.shift = {**{f"room-{i}": 0.15 for i in range(8)}, "print-b": 0.15}

    def shifted(train: list[Source]) -> Fitted:
        return Shifted(None, 0.0, False, 0.5)

    monkeypatch.setattr(train_face, "CANDIDATES", {"pair as is": train_face._pair_as_is, "shifted": shifted})
    report = leave_one_source_out(data)
    cand = report["candidates"]["shifted"]
    assert cand["balanced_acer"] < report["candidates"]["pair as is"]["balanced_acer"]
    assert cand["worst_vs_pair_source"] == "print-b" and cand["worst_vs_pair"] == pytest.approx(0.02)
    assert cand["rejected"] and report["chosen"] == "pair as is"
    assert all("pair_acer" in r for r in cand["per_source"])
    assert set(cand["per_type"]) == {"print", "screen"}


def test_prints_and_screens_weigh_the_same_however_many_sources_each_has() -> None:
    acer = {"p": 0.1, **{f"s{i}": 0.0 for i in range(8)}}
    attack = {"p": "print", **{f"s{i}": "screen" for i in range(8)}}
    mean, per_type = balanced(acer, attack)
    assert per_type == {"print": 0.1, "screen": 0.0} and mean == pytest.approx(0.05)


def test_sources_are_typed_by_attack_and_the_video_collections_are_sampled() -> None:
    specs = sources(str(SHARED / "data" / "nuaa-train"), str(SHARED / "data" / "webcam-sources"),
                    str(SHARED / "data" / "video-sources"))
    kinds = {s.name: (s.attack, s.video_rate) for s in specs}
    assert kinds["nuaa-01"] == ("print", None) and kinds["yashpatil"] == ("screen", None)
    assert kinds["krzysiek"] == ("screen", train_face.VIDEO_RATE)  # a live-only collection is still a source
    assert len(specs) == 17


def test_a_video_source_of_one_class_counts_that_class_error() -> None:
    assert train_face.source_acer(np.array([0, 0, 0, 0]), np.array([0.1, 0.9, 0.2, 0.3]), 0.5) == 0.25


def test_fusion_takes_each_video_of_a_collection_whole_as_one_sequence() -> None:
    from liveness.models.calibrate_fusion import video_sequences

    seqs = video_sequences(str(SHARED / "data" / "video-sources"), "trainingdata")
    assert len(seqs) == 14 and all(s.video is not None and s.session == "trainingdata" for s in seqs)
    assert len({s.subject for s in seqs}) == 14  # calibration halves alternate videos
    assert sorted({s.label for s in seqs}) == ["live", "spoof"]
