"""Loupe's errors: one base, :class:`LoupeError`, for every error a user can meet.

Each error says what went wrong and what to do about it. Catch :class:`LoupeError` to
handle any of them; the more specific classes also keep the built-in base they had before
(``ValueError``, ``RuntimeError``), so existing ``except ValueError`` code still works.
"""

from __future__ import annotations


class LoupeError(Exception):
    """Base of every error Loupe raises on purpose; the message says how to fix it."""


class DatabaseUnavailableError(LoupeError, ConnectionError):
    """The database did not answer; nothing of the interrupted write was stored."""


class ProjectError(LoupeError, ValueError):
    """A project operation that cannot be done as asked (the message says what to do)."""


class UnsafePathError(LoupeError, ValueError):
    """A path that would leave the project folder (read, write or delete refused)."""


class DeploymentError(LoupeError, ValueError):
    """A promotion or rollback that cannot be done as asked (bad line name, no reason for a
    forced promotion, nothing to roll back to, a deployment folder that fails its checks)."""


class DeploymentConflictError(LoupeError, RuntimeError):
    """The line's current model changed while a promotion was being decided (another
    person promoted or rolled back first); nothing was switched, the attempt is recorded."""


class GateFailedError(LoupeError, RuntimeError):
    """The gate refused a candidate; ``report`` holds every check (``report.checks``)."""

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report


#: The name the promotion API promises (``except wb.GateFailed``).
GateFailed = GateFailedError
#: Short name of :class:`DeploymentConflictError`.
DeploymentConflict = DeploymentConflictError


class JobError(LoupeError, ValueError):
    """A background job that cannot be submitted or cancelled as asked (unknown kind or job,
    an argument a worker cannot take, a job that already ended or is being cancelled)."""


__all__ = ["DatabaseUnavailableError", "DeploymentConflict", "DeploymentConflictError",
           "DeploymentError", "GateFailed", "GateFailedError", "JobError", "LoupeError",
           "ProjectError", "UnsafePathError"]
