from liveness.pacing import FramePacer


def taken(fps: float, max_fps: float, seconds: float = 10.0, jitter: float = 0.0) -> int:
    pacer = FramePacer(max_fps)
    n = int(seconds * fps)
    return sum(pacer.take(i / fps + (jitter if i % 2 else -jitter)) for i in range(n))


def test_a_camera_at_the_cap_keeps_every_frame_despite_jitter() -> None:
    assert taken(10, 10, jitter=0.012) == 100


def test_a_faster_camera_is_brought_down_to_the_cap() -> None:
    assert 95 <= taken(15, 10) <= 101
    assert 95 <= taken(30, 10) <= 101


def test_no_burst_after_a_stall() -> None:
    pacer = FramePacer(10)
    assert pacer.take(0.0)
    assert pacer.take(5.0)  # the camera stalled for 5 s
    assert not pacer.take(5.01) and not pacer.take(5.02)
