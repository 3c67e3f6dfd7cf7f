"""Errors a user can fix: the CLI prints them as one message, without a traceback."""


class UserError(Exception):
    """A mistake in the input or the invocation; the message says what to do."""
