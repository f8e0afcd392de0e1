"""Small file helpers of the sweep stage: text and bytes on a local path or an s3:// URI alike (fsspec)."""

from __future__ import annotations

import os

import fsspec


def is_remote(path: str) -> bool:
    return "://" in path


def absolute(path: str | None) -> str | None:
    """A local path made absolute (trials and Ray workers do not share the driver's working directory)."""
    return path if path is None or is_remote(path) else os.path.abspath(path)


def make_dirs(directory: str) -> None:
    """Create a local folder (object stores have none to create)."""
    if not is_remote(directory):
        os.makedirs(directory, exist_ok=True)


def write_bytes(path: str, data: bytes) -> None:
    make_dirs(os.path.dirname(path))
    with fsspec.open(path, "wb") as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode())


def read_text(path: str) -> str | None:
    """The file's text, None when it does not exist."""
    try:
        with fsspec.open(path, "r") as f:
            return f.read()
    except FileNotFoundError:
        return None


def exists(path: str) -> bool:
    fs, _, paths = fsspec.get_fs_token_paths(path)
    return fs.exists(paths[0])


def move(source: str, target: str) -> None:
    """Rename within one file system (a partial file made final)."""
    fs, _, (src,) = fsspec.get_fs_token_paths(source)
    fs.mv(src, fsspec.get_fs_token_paths(target)[2][0])
