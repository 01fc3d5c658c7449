from liveness.redaction import redact_text, redact_url


def test_redact_url_hides_user_and_password() -> None:
    assert redact_url("rtsp://admin:s3cret@10.0.0.5:554/stream1") == "rtsp://***@10.0.0.5:554/stream1"
    assert redact_url("rediss://:pw@redis.local:6380/0") == "rediss://***@redis.local:6380/0"
    assert redact_url("rtsp://10.0.0.5/s") == "rtsp://10.0.0.5/s"


def test_redact_text_inside_messages() -> None:
    text = "cannot open rtsp://u:p@host/x and redis://:pw@r:6379"
    assert "p@" not in redact_text(text) and "pw" not in redact_text(text)
