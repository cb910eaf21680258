"""Errors raised by the models package; the service maps each to an HTTP status in one place."""


class WhitevecError(Exception):
    """Base of every error whitevec raises on purpose; the message says what to fix."""

    #: The request field the error is about, when it is about one (the HTTP answer names it as `param`).
    param: str | None = None

    def __init__(self, *args: object, param: str | None = None) -> None:
        super().__init__(*args)
        if param is not None:
            self.param = param


class ModelFolderError(WhitevecError):
    """A model folder is missing, incomplete, or asks for something it cannot provide."""


class WhiteningError(WhitevecError):
    """Whitening cannot be fitted or applied as asked (bad input, dim out of range)."""


class WhiteningMismatchError(WhiteningError):
    """A whitening fit is applied to vectors of another model, pooling or dimension."""


class DimNotServed(WhiteningError):
    """A dim the served version cannot give (above its whitening's dims, or no whitening yet): a conflict
    with what is served now, not a malformed request (another version may serve it)."""
