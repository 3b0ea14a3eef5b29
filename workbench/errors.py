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


__all__ = ["DatabaseUnavailableError", "LoupeError", "ProjectError", "UnsafePathError"]
