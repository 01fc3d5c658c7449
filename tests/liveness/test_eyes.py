"""EyeHistory windows span the same second at any camera rate, and bad windows are refused."""

from __future__ import annotations

import numpy as np
import pytest

from liveness.errors import PoisonMessageError
from liveness.eyes import INPUT_SIZE, EyeHistory, eye_input, window_features

OPEN, CLOSED = 0.30, 0.08


def lid(t: float) -> float:
    """An eye that blinks from 2.0 s to 2.2 s."""
    return CLOSED if 2.0 <= t < 2.2 else OPEN


@pytest.mark.parametrize("fps", [5.0, 15.0, 30.0])
def test_window_spans_one_second_at_any_rate(fps: float) -> None:
    hist = EyeHistory()
    first = None
    for i in range(int(3 * fps)):
        t = i / fps
        hist.add(t, lid(t), lid(t) * 1.1)
        if first is None and hist.window() is not None:
            first = t
        if abs(t - 2.6) < 0.5 / fps:
            w = np.array(hist.window())
    assert first is not None and 0.8 <= first <= 1.0 + 1.0 / fps
    assert w.shape == (10, 2)
    closed = np.flatnonzero(w[:, 0] < OPEN)
    # the blink, 0.4-0.6 s before the newest sample, sits in the same bins whatever the rate
    assert closed.size and closed.min() >= 3 and closed.max() <= 6
    assert hist.open_level == pytest.approx(OPEN * 1.05, rel=0.01)


def test_newest_bin_holds_the_newest_frame() -> None:
    hist = EyeHistory()
    for i in range(30):
        hist.add(i / 15, 0.3, 0.3)
    hist.add(30 / 15, 0.1, 0.2)
    assert hist.window()[-1] == [0.1, 0.2]


def test_eye_input_refuses_what_cannot_be_scored() -> None:
    w = [[0.3, 0.3]] * 10
    assert eye_input(w, 0.3).shape == (INPUT_SIZE,)
    for bad, level in (([[0.3, float("nan")]] + w[1:], 0.3), (w[:9], 0.3), (w, 0.0), (w, float("inf"))):
        with pytest.raises(PoisonMessageError):
            eye_input(bad, level)


def test_features_see_lid_movement_not_eye_shape() -> None:
    w = np.array([[0.3, 0.3]] * 10)
    w[4:6] = 0.1
    a = window_features(eye_input(w, 0.3))
    b = window_features(eye_input(w * 1.5, 0.45))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert a[0, 4] == 2  # two samples below 0.75 of the open level
