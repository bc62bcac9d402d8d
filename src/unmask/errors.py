"""The one exception type for user mistakes.

``UserError`` carries a one-line message; the CLI prints it and exits with code 2,
without a traceback. Library callers can catch it like any ``ValueError``.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: a missing file, a bad template, an impossible length."""
