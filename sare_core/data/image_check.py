"""Images on disk: list the image files of a folder, and check that a dataset's images exist and decode.

`check_images` runs before any real work (conversion, extraction, training), so a missing or truncated
file fails fast with a count and the first offending paths instead of deep inside a Ray task.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from PIL import Image

from ..paths import is_remote

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_images(folder: str, recursive: bool = True) -> list[str]:
    """Image files (by extension, case-insensitive) under `folder`, as sorted paths relative to it.

    Raises FileNotFoundError when `folder` is not a directory.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: not a directory")
    found = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, folder)
            for name in filenames:
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    found.append(name if rel_dir == "." else os.path.join(rel_dir, name))
    else:
        found = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS)
                 and os.path.isfile(os.path.join(folder, n))]
    return sorted(found)


@dataclass
class ImageCheckReport:
    """Outcome of `check_images`: how many paths were checked and which failed (in input order)."""

    checked: int
    missing: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unreadable

    def summary(self, max_paths: int = 5) -> str:
        """One paragraph: counts and the first `max_paths` offending paths of each kind."""
        if self.ok:
            return f"all {self.checked} images present and readable"
        parts = [f"{len(self.missing) + len(self.unreadable)} of {self.checked} images are bad"]
        if self.missing:
            first = ", ".join(self.missing[:max_paths])
            more = " ..." if len(self.missing) > max_paths else ""
            parts.append(f"{len(self.missing)} missing (first: {first}{more})")
        if self.unreadable:
            first = ", ".join(f"{p} [{why}]" for p, why in self.unreadable[:max_paths])
            more = " ..." if len(self.unreadable) > max_paths else ""
            parts.append(f"{len(self.unreadable)} unreadable (first: {first}{more})")
        return "; ".join(parts)

    def raise_if_bad(self) -> None:
        """Raise ValueError with `summary()` unless every image passed."""
        if not self.ok:
            raise ValueError(self.summary())


def _check_one(path: str, decode: bool) -> tuple[str, str] | None:
    """None when fine, else ("missing" | "unreadable", reason)."""
    source: str | io.BytesIO = path
    if is_remote(path):
        import fsspec  # remote images (s3://...): read through fsspec, then the same checks

        try:
            with fsspec.open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return ("missing", "")
        except OSError as exc:
            return ("unreadable", f"{type(exc).__name__}: {exc}")
        source = io.BytesIO(data)
    elif not os.path.isfile(path):
        return ("missing", "")
    try:
        with Image.open(source) as img:
            if decode:
                img.load()  # full decode: catches truncated pixel data
            else:
                img.verify()  # header and structure only: fast
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt files
        return ("unreadable", f"{type(exc).__name__}: {exc}")
    return None


def check_images(paths: Sequence[str], decode: bool = False, workers: int = 8) -> ImageCheckReport:
    """Check that every path exists and is an image PIL can open.

    decode=False verifies the header and file structure (fast); decode=True fully decodes each image,
    which also catches truncated pixel data. Work runs in a thread pool of `workers` threads (I/O bound).
    """
    paths = [os.fspath(p) for p in paths]
    report = ImageCheckReport(checked=len(paths))
    if not paths:
        return report
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(paths)))) as pool:
        results = pool.map(lambda p: _check_one(p, decode), paths, chunksize=64)
        for path, result in zip(paths, results, strict=True):
            if result is None:
                continue
            kind, reason = result
            if kind == "missing":
                report.missing.append(path)
            else:
                report.unreadable.append((path, reason))
    return report
