"""Keep credentials out of logs, metric labels and events: RTSP and Redis URLs carry passwords.

Everything between ``scheme://`` and the last ``@`` of the URL goes, whatever it holds: a camera's
password may hold ``#``, ``?``, ``/`` or ``@`` unescaped, which ends the authority for a URL
parser and would leave the rest of the password in the log. An ``@`` in a path without
credentials hides the host too: a log may lose a host, never a password.
"""

import re

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)\S*@")
"""A URL's scheme and everything up to its last ``@`` (URLs hold no whitespace)."""


def redact_url(url: str) -> str:
    """Return ``url`` with any user and password replaced by ``***``."""
    return redact_text(url)


def redact_text(text: str) -> str:
    """Redact every URL with credentials inside free text (exception messages, logs)."""
    return _USERINFO.sub(r"\g<scheme>***@", text)
