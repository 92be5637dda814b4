"""The exception type for user mistakes (bad input, bad options, missing files).

The CLI prints these as one line (``blspeech <command>: error: ...``) with exit code 2 and
no traceback; library callers can catch them like any ``ValueError``.
"""


class UserError(ValueError):
    """Bad input that the user can fix; the message says what and where."""
