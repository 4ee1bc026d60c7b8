"""Exceptions with one-line messages that name the problem and the fix."""


class FrozenError(Exception):
    """Base class for errors raised by this package."""


class FrozenConfigError(FrozenError, ValueError):
    """A bad name or value in a configuration (unknown backbone, k < 1, ...)."""


class LMNotFoundError(FrozenError, OSError):
    """A language model could not be found locally (and the network is off or unreachable)."""


class DataError(FrozenError, ValueError):
    """Bad data paths or patterns detected before any work starts (missing shard, empty pattern)."""


class InputError(FrozenError, ValueError):
    """A bad input to the library (an image, a prompt, a record's text), named with the fix."""


class ContextLengthError(InputError):
    """A prompt and its answer need more positions than the language model has."""
