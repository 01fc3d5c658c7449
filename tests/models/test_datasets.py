"""NUAA's official protocol: ``--split test`` reads the database's own test lists, as ``train`` reads its training lists."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from liveness.app.cli import main
from liveness.models.datasets import DatasetError, folders, load, nuaa
from tests.conftest import SHARED

TRAIN = {"ClientRaw": ["0001_00_00_01_0", "0001_00_00_01_1", "0002_01_00_02_0"],
         "ImposterRaw": ["0001_00_00_01_0", "0001_00_00_01_2"]}
TEST = {"ClientRaw": ["0003_00_00_03_0", "0003_00_00_03_1", "0003_00_00_03_2", "0004_00_01_03_0"],
        "ImposterRaw": ["0003_00_00_03_0", "0003_00_00_03_1", "0004_01_00_03_5", "0005_00_00_03_0"]}


@pytest.fixture
def nuaa_root(tmp_path: Path) -> Path:
    """A small NUAA root laid out as the database is: frames under ClientRaw/<subject>/, four list files
    (CRLF endings, backslashes), and a test list that names one frame the copy lacks."""
    root = tmp_path / "nuaa"
    image = np.full((48, 64, 3), 128, np.uint8)
    for split, files in (("train", TRAIN), ("test", TEST)):
        for folder, stems in files.items():
            for stem in stems:
                path = root / folder / stem[:4] / f"{stem}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                assert cv2.imwrite(str(path), image)
            listed = [f"{s[:4]}\\{s}.jpg" for s in stems]
            if split == "test" and folder == "ImposterRaw":
                listed.append("0006\\0006_00_00_03_0.jpg")  # listed, not in this copy
            list_name = f"{'client' if folder == 'ClientRaw' else 'imposter'}_{split}_raw.txt"
            (root / list_name).write_bytes("\r\n".join(listed).encode() + b"\r\n")
    return root


def test_test_split_reads_the_test_lists(nuaa_root: Path) -> None:
    data = load("nuaa", nuaa_root, "test")
    assert data.counts() == {"live": 2, "spoof": 3}
    assert data.skipped == 1, "the listed frame the copy lacks"
    assert {s.session for s in data.sequences} == {"03"}
    by_name = {s.name: len(s) for s in data.sequences}
    assert by_name == {"nuaa-live-0003_00_00_03": 3, "nuaa-live-0004_00_01_03": 1, "nuaa-spoof-0003_00_00_03": 2,
                       "nuaa-spoof-0004_01_00_03": 1, "nuaa-spoof-0005_00_00_03": 1}
    train = nuaa(nuaa_root, "train")
    assert train.counts() == {"live": 2, "spoof": 1} and train.skipped == 0
    assert not {p for s in train.sequences for p in s.frames} & {p for s in data.sequences for p in s.frames}
    assert sum(len(s) for s in nuaa(nuaa_root, "all").sequences) == 5 + 8


def test_missing_test_list_names_the_file(nuaa_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (nuaa_root / "imposter_test_raw.txt").unlink()
    with pytest.raises(DatasetError, match=r"imposter_test_raw\.txt: NUAA test list file missing"):
        nuaa(nuaa_root, "test")
    assert nuaa(nuaa_root, "train").counts() == {"live": 2, "spoof": 1}, "the training lists are still read"
    rc = main(["evaluate", "--model", "eye", "--dataset", "nuaa", "--root", str(nuaa_root), "--split", "test"])
    assert rc == 2 and "imposter_test_raw.txt: NUAA test list file missing" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="unknown NUAA split 'dev'"):
        nuaa(nuaa_root, "dev")


def test_a_root_of_source_folders_reads_each_as_a_source(tmp_path: Path) -> None:
    for room in ("sudipto", "yashpatil"):
        (tmp_path / room).symlink_to(SHARED / "data" / "webcam-sources" / room)
    data = folders(tmp_path)
    assert {s.session for s in data.sequences} == {"sudipto", "yashpatil"}
    assert data.counts() == {"live": 300, "spoof": 300}
    assert all(s.name.startswith(s.session + "-") for s in data.sequences)
