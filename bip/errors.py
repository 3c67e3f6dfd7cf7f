"""Errors a user can fix: the CLI prints them as one message, without a traceback; and the redaction of
credentials in any text a message or log shows."""

from __future__ import annotations

import re

_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s:@]+(?::[^/\s@]*)?@", re.IGNORECASE)


def redacted(text: str) -> str:
    """`text` with the user and password of every URL in it replaced by '***' (for logs and messages)."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}***@", text)


class UserError(Exception):
    """A mistake in the input or the invocation; the message says what to do."""


class TooFewData(UserError, ValueError):
    """The data hold too little for what was asked (e.g. no labelled rows of both outcomes to evaluate
    on); a ValueError too, for callers in code."""
