"""Local paths and remote URIs (s3://bucket/key, any fsspec protocol) through one set of helpers.

Every stage that reads or writes a file whose location the user chooses (runs, checkpoints, stores,
sweeps, reports) goes through these, so a local path and an s3:// URI behave alike. Local paths are made
absolute where work moves between processes (Ray workers do not share the driver's working directory).
Descriptor stores have their own, richer access layer (`sare_core.store.location`), built on `is_remote`.
"""

from __future__ import annotations

import os
import posixpath

import fsspec


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` is a URI with a protocol (s3://, gs://, file://, ...) rather than a plain local path."""
    return "://" in os.fspath(path)


def absolute(path: str | None) -> str | None:
    """A local path made absolute; URIs and None unchanged."""
    return path if path is None or is_remote(path) else os.path.abspath(path)


def join(base: str, *names: str) -> str:
    """`base`/name/...: os.path.join for local paths, '/' for URIs."""
    if is_remote(base):
        return posixpath.join(base.rstrip("/"), *names)
    return os.path.join(base, *names)


def parent(path: str) -> str:
    """The folder holding `path` (a URI keeps its protocol)."""
    return posixpath.dirname(path.rstrip("/")) if is_remote(path) else os.path.dirname(path)


def make_dirs(directory: str) -> None:
    """Create a local folder and its parents (object stores have none to create)."""
    if not is_remote(directory):
        os.makedirs(directory, exist_ok=True)


def list_names(directory: str) -> list[str]:
    """The names of the entries directly in `directory` ([] when it does not exist), sorted."""
    if not is_remote(directory):
        return sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    fs, _, (root,) = fsspec.get_fs_token_paths(directory)
    fs.invalidate_cache(root)
    try:
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
    except FileNotFoundError:
        return []


def exists(path: str) -> bool:
    fs, _, paths = fsspec.get_fs_token_paths(path)
    return fs.exists(paths[0])


def read_bytes(path: str) -> bytes:
    """The file's content; FileNotFoundError naming `path` when it does not exist."""
    with fsspec.open(path, "rb") as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    """Create or replace the file at `path` (creating its local folder)."""
    make_dirs(parent(path) or ".")
    with fsspec.open(path, "wb") as f:
        f.write(data)


def read_text(path: str) -> str | None:
    """The file's text, None when it does not exist."""
    try:
        return read_bytes(path).decode()
    except FileNotFoundError:
        return None


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode())


def move(source: str, target: str) -> None:
    """Rename within one file system (e.g. a partial file made final)."""
    fs, _, (src,) = fsspec.get_fs_token_paths(source)
    fs.mv(src, fsspec.get_fs_token_paths(target)[2][0])
