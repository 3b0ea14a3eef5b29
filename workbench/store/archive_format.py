"""What export and restore of a backup archive share: its error, member prefixes and the
dataset-document keys it carries."""

from __future__ import annotations

from workbench.errors import ProjectError

#: Raw dataset-document keys archived (schema, bookkeeping, class lists).
DATASET_KEYS = ("sample_fields", "info", "tags", "classes", "default_classes", "media_type")
#: Member prefixes: images from outside the project folder, and the project folder.
_MEDIA = "media/"
_PROJECT = "project/"


class ArchiveError(ProjectError):
    """A file that is not a complete Loupe archive (the message says what is wrong)."""


def safe_suffix(suffix: str) -> str:
    """``suffix`` with everything but ASCII letters, digits and dots dropped."""
    return "".join(ch for ch in suffix if ch.isascii() and (ch.isalnum() or ch == "."))


__all__ = ["DATASET_KEYS", "ArchiveError", "safe_suffix"]
