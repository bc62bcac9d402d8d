"""The one exception type for user mistakes.

``UserError`` carries a one-line message; the CLI prints it and exits with code 2,
without a traceback. Library callers can catch it like any ``ValueError``.
"""

from __future__ import annotations

CONTEXT_WORDS = "the model's context (max_seq_len"
"""How every refusal of a template, form, schema or text too long for the model's context
says it (``f"... more than {CONTEXT_WORDS} {n})"``): the server codes such a 400
``context_length_exceeded`` by these words (``unmask.server.routes.infill.context_code``)."""


class UserError(ValueError):
    """Bad input from the user: a missing file, a bad template, an impossible length."""


def refuse(message: str | None) -> None:
    """Raise ``message`` as a ``UserError``, where there is one: the answer of a torch-free
    ``missing_*`` check (``unmask.folders.missing_model``, ``unmask.flag_checks``'
    ``missing_dataset`` and ``missing_input``), which a command's ``check_flags`` and the
    library both raise."""
    if message is not None:
        raise UserError(message)
