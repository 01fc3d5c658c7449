"""The Redis connection every service uses: TLS, passwords, retries, waiting when it is down."""

from __future__ import annotations

import logging
import threading
import time
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from liveness.config import RedisSettings
from liveness.redaction import redact_url

log = logging.getLogger(__name__)

BACKOFF_CAP_S = 5.0
"""Longest wait between two connection attempts, seconds."""


def connect(settings: RedisSettings) -> redis.Redis:
    """A client for ``settings.url`` (``redis://`` or ``rediss://``, password allowed)."""
    kwargs: dict[str, object] = {
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.socket_timeout_s,
        "health_check_interval": 15,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=2),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }
    if settings.url.startswith("rediss://") and settings.ssl_ca_certs:
        kwargs["ssl_ca_certs"] = settings.ssl_ca_certs
    return redis.Redis.from_url(settings.url, **kwargs)


def username(url: str) -> str:
    """The ACL user a Redis URL logs in as: ``default`` when it names none."""
    return unquote(urlsplit(url).username or "") or "default"


def failure(error: redis.RedisError, url: str) -> str:
    """What to log of a failed Redis call: whose authentication failed, else the error's type
    (messages may quote what was sent, passwords included)."""
    if isinstance(error, redis.AuthenticationError):
        return f"authentication failed for user {username(url)}"
    return type(error).__name__


def wait_until_up(client: redis.Redis, who: str, url: str, stop: threading.Event | None = None) -> bool:
    """Ping until Redis answers, backing off to ``BACKOFF_CAP_S``; False if ``stop`` was set first.

    Refused credentials are retried as well, each refusal logged with the user name (never the
    password): the password may be rotated in Redis and in the service at different moments.
    """
    delay = 0.1
    warned = False
    while stop is None or not stop.is_set():
        try:
            client.ping()
            if warned:
                log.info("%s: Redis at %s is back", who, redact_url(url))
            return True
        except redis.AuthenticationError as e:  # before ConnectionError, its base class
            log.error("%s: Redis at %s: %s; retrying in %.1f s", who, redact_url(url), failure(e, url), delay)
            warned = True
        except (redis.ConnectionError, redis.TimeoutError) as e:
            if not warned:
                log.warning("%s: Redis at %s not answering (%s); waiting", who, redact_url(url), type(e).__name__)
                warned = True
        if stop is not None:
            stop.wait(delay)
        else:
            time.sleep(delay)
        delay = min(delay * 2, BACKOFF_CAP_S)
    return False
