import math

import pytest

from liveness.contract import Decision, EyeSample, FaceCrop, FaceScore, Keys
from liveness.errors import MessageError, PoisonMessageError


def crop() -> FaceCrop:
    return FaceCrop("door", "door:1:1", 7, 1000.5, 1000.6, (1, 2, 30, 40), b"\xff\xd8jpeg", [2.7, 4.0], "live")


def test_round_trip_every_message() -> None:
    window = [[0.3, 0.31]] * 10
    msgs = [
        crop(),
        EyeSample("door", "door:1:1", 7, 1000.5, 1000.6, (1, 2, 30, 40), 0.3, 0.29, 0.3, window, 10.0),
        EyeSample("door", "door:1:1", 8, 1000.5, 1000.6, (1, 2, 30, 40), 0.3, 0.29, 0.3),
        FaceScore("1-0", "door", "door:1:1", 7, 1.0, 1.1, 1.2, 0.25, "face", "3"),
        Decision("door", "door:1:1", "spoof", 0.99, 4.2, 1.0, 20, 1.0, 2.0, 2.1, "evidence"),
    ]
    for msg in msgs:
        assert type(msg).from_fields(msg.to_fields()) == msg


def test_keys_live_under_prefix() -> None:
    keys = Keys("site-a")
    assert keys.stream(FaceCrop) == "site-a:faces"
    assert keys.dead(keys.stream(FaceCrop)) == "site-a:dead:faces"
    assert keys.group("face-workers") == "site-a:face-workers"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"v": b"99"}, "schema version"),
        ({"frame": b"seven"}, "field 'frame'"),
        ({"box": b"[1,2]"}, "field 'box'"),
        ({"capture_ts": b"nan"}, "not a finite number"),
        ({"jpeg": b""}, "field 'jpeg'"),
        ({"camera": b""}, "field 'camera'"),
        ({"jpeg": b"x" * 300_000}, "field 'jpeg'"),
    ],
)
def test_malformed_fields_say_what_is_wrong(change: dict[str, bytes], message: str) -> None:
    fields = {**crop().to_fields(), **change}
    with pytest.raises(PoisonMessageError, match=message):
        FaceCrop.from_fields(fields)


def test_missing_field() -> None:
    fields = crop().to_fields()
    del fields["track"]
    with pytest.raises(MessageError, match="missing field 'track'"):
        FaceCrop.from_fields(fields)


def test_window_must_be_pairs() -> None:
    sample = EyeSample("c", "t", 1, 1.0, 1.0, (0, 0, 1, 1), 0.3, 0.3, 0.3, [[0.1]] * 10, 10.0)
    with pytest.raises(PoisonMessageError, match="window"):
        EyeSample.from_fields(sample.to_fields())


def test_nan_ratio_rejected() -> None:
    fields = EyeSample("c", "t", 1, 1.0, 1.0, (0, 0, 1, 1), 0.3, 0.3, 0.3).to_fields()
    fields["left"] = repr(math.nan).encode()
    with pytest.raises(PoisonMessageError, match="left"):
        EyeSample.from_fields(fields)
