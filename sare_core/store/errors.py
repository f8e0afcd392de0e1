"""Errors of the descriptor store. Every message names the store's URI (never credentials)."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of descriptor store errors."""


class StoreNotCommittedError(StoreError, FileNotFoundError):
    """The URI holds no committed manifest: nothing was written there, or a writer died before commit."""


class StoreCorruptError(StoreError, ValueError):
    """A committed store that cannot be trusted: bad manifest JSON, a listed part missing or changed."""


class StoreExistsError(StoreError, FileExistsError):
    """A first commit where a manifest already exists (use `commit_update` to add parts)."""


class StoreVersionConflictError(StoreError):
    """The manifest changed between reading it and committing an update (another committer ran)."""


class IncompatiblePartError(StoreError, ValueError):
    """A part that does not belong in the store: other dimension, dtype, model or dataset, or bad schema."""


class DuplicateIdsError(StoreError, ValueError):
    """A commit that would make an id appear more than once among the store's descriptor rows."""

    def __init__(self, message: str, examples: list[str], count: int):
        super().__init__(message)
        self.examples = examples
        self.count = count
