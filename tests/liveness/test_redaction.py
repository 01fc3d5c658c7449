from hypothesis import given
from hypothesis import strategies as st

from liveness.redaction import redact_text, redact_url


def test_redact_url_hides_user_and_password() -> None:
    assert redact_url("rtsp://admin:s3cret@10.0.0.5:554/stream1") == "rtsp://***@10.0.0.5:554/stream1"
    assert redact_url("rediss://:pw@redis.local:6380/0") == "rediss://***@redis.local:6380/0"
    assert redact_url("rtsp://10.0.0.5/s") == "rtsp://10.0.0.5/s"


def test_redact_text_inside_messages() -> None:
    text = "cannot open rtsp://u:p@host/x and redis://:pw@r:6379"
    assert "p@" not in redact_text(text) and "pw" not in redact_text(text)


def test_passwords_with_url_delimiters_are_redacted_whole() -> None:
    for password in ("pa#ss", "pa?ss", "p@ss", "pa/ss", "a#b?c/d@e:f"):
        url = f"rtsp://admin:{password}@10.0.0.5:554/stream1?channel=1"
        assert redact_url(url) == "rtsp://***@10.0.0.5:554/stream1?channel=1", password
        assert redact_text(f"cannot open {url}; retrying") == "cannot open rtsp://***@10.0.0.5:554/stream1?channel=1; retrying"


@given(user=st.text(st.characters(blacklist_categories=("Z", "C")), max_size=12),
       password=st.text(st.characters(blacklist_categories=("Z", "C")), min_size=1, max_size=24))
def test_no_password_survives_whatever_it_holds(user: str, password: str) -> None:
    """Any password without whitespace (a URL holds none): nothing of it is left."""
    url = f"rtsp://{user}:{password}@cam.local:554/live"
    assert redact_url(url) == "rtsp://***@cam.local:554/live"
