"""User-facing errors: one line, says what is wrong and what to do.

Not for internal invariants (those are `assert`s). The CLI prints `AthanorError` as `error: <message>`
with no traceback; the server maps it to each API's error shape.
"""


class AthanorError(Exception):
    """An error caused by user input (a name, a file, a config value) with a one-line human message."""


class ModelNotFoundError(AthanorError):
    """A model name that the store does not know."""


class ModelFormatError(AthanorError):
    """A weights/tokenizer file that is truncated, corrupt or not what its name says."""


class UnsupportedArchitectureError(AthanorError):
    """A checkpoint of an architecture that nn/ does not implement."""


class ContextLengthError(AthanorError):
    """A prompt (plus requested tokens) longer than the model's context window."""


class ContextConflictError(AthanorError):
    """A loaded model is in use with another context size; its users' context must not change under them."""


class CapacityError(AthanorError):
    """No room for a model or a request now (memory budget, every loaded model busy): retry later or raise a limit."""

    def __init__(self, message: str, code: str = "overloaded", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code, self.retry_after = code, retry_after
