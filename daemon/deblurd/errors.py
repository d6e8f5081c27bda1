"""Exceptions of deblurd's own.

Every error that crosses a module boundary is one of these, with the original cause
chained (``raise BurstError(...) from exc``) so the message says what went wrong in our
terms and the traceback still shows why.
"""

from __future__ import annotations


class DeblurdError(Exception):
    """Base class of every error deblurd raises on purpose."""


class ConfigError(DeblurdError):
    """The configuration is invalid. ``problems`` lists ``(key_path, message)`` pairs."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems: list[tuple[str, str]] = problems or []


class BurstError(DeblurdError):
    """A burst directory is missing, malformed or inconsistent."""


class ImageError(DeblurdError):
    """An image cannot be read, has an unsupported type, or cannot be written."""


class OutputError(DeblurdError):
    """An output file cannot be written where it was asked for (checked before any work)."""


class RegistrationError(DeblurdError):
    """Registration could not run at all (not: a frame was rejected; that is a result)."""


class InferenceError(DeblurdError):
    """A deblurring network could not be loaded or run."""


class RemoteInferenceError(InferenceError):
    """The inference server (Triton) could not be reached, was too slow, or answered an
    error or garbage: the job's ``error`` code ``inference_remote`` (worth a retry)."""


class SimulationError(DeblurdError):
    """The burst simulator was given parameters it cannot honour."""
