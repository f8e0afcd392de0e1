"""Where a store lives: a local directory or an object-store prefix (s3://bucket/prefix), one interface.

Storage goes through fsspec, so a local path and s3://bucket/prefix behave alike. S3 credentials come from
the usual AWS sources (environment variables, profiles, instance roles) or from `storage_options`
(passed to `s3fs.S3FileSystem`, e.g. {"endpoint_url": ..., "key": ..., "secret": ...}). When no endpoint
is given, the AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL environment variables name one (MinIO, a loopback
test server). Storage options are handed to the file system and never kept, printed or logged; URIs shown
in messages have any user:password@ part and query string removed.

Writes are atomic per file: locally a temporary file in the same directory is fsynced then renamed over
the final name; on an object store the whole file goes up as one object (a PUT, or a multipart upload that
only becomes visible when completed), so a reader sees the old object, the new one, or none.

Conditional writes (`write_bytes_if`), for the store's manifest: a file is created only if absent, or
replaced only if it is still the version a writer read (its tag). On S3 these are conditional PUTs
(If-None-Match: *, If-Match: <ETag>), so two writers racing on one store cannot both win; locally the
check and the rename happen under an exclusive lock (fcntl) on a lock file beside the manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from dataclasses import dataclass, field
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..paths import is_remote

TEMP_SUFFIX = ".tmp"
ENDPOINT_ENV_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def redact_uri(uri: str) -> str:
    """`uri` without credentials: drops a user:password@ part and any query string or fragment."""
    parts = urlsplit(uri)
    if not parts.scheme or len(parts.scheme) == 1:  # a local path (or a Windows drive letter)
        return uri
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _s3_options(storage_options: dict) -> dict:
    """Storage options for s3fs, adding the endpoint from the environment when none is given."""
    options = dict(storage_options)
    client_kwargs = options.get("client_kwargs") or {}
    if "endpoint_url" not in options and "endpoint_url" not in client_kwargs:
        for name in ENDPOINT_ENV_VARS:
            if os.environ.get(name):
                options["endpoint_url"] = os.environ[name]
                break
    return options


@dataclass
class StoreLocation:
    """A store's root: `uri` (for messages, credentials removed), the file system, and the root path in it.

    Files of a store sit directly under the root; `name` arguments are plain file names.
    """

    uri: str
    fs: fsspec.AbstractFileSystem = field(repr=False)
    root: str
    is_local: bool

    @classmethod
    def from_uri(cls, uri: str | os.PathLike, storage_options: dict | None = None) -> StoreLocation:
        text = os.fspath(uri)
        protocol = urlsplit(text).scheme if is_remote(text) else ""
        if protocol in ("", "file", "local"):
            root = os.path.abspath(text.split("://", 1)[1] if protocol else text)
            return cls(uri=root, fs=LocalFileSystem(), root=root, is_local=True)
        options = dict(storage_options or {})
        if protocol in ("s3", "s3a"):
            options = _s3_options(options)
        fs, root = fsspec.core.url_to_fs(text, **options)
        return cls(uri=redact_uri(text).rstrip("/"), fs=fs, root=root.rstrip("/"), is_local=False)

    def path(self, name: str) -> str:
        """The file system path of file `name` of the store."""
        return os.path.join(self.root, name) if self.is_local else f"{self.root}/{name}"

    def display(self, name: str) -> str:
        """The URI of file `name`, for messages."""
        return f"{self.uri}/{name}"

    def read_bytes(self, name: str) -> bytes:
        """Whole content of file `name`; FileNotFoundError when it does not exist."""
        if self.is_local:
            with open(self.path(name), "rb") as f:
                return f.read()
        return self.fs.cat_file(self.path(name))

    def open_read(self, name: str) -> IO[bytes]:
        """A seekable binary file for random-access reads (Parquet), without read-ahead on object stores."""
        if self.is_local:
            return open(self.path(name), "rb")
        return self.fs.open(self.path(name), "rb", cache_type="none")

    def write_bytes_atomic(self, name: str, data: bytes) -> None:
        """Create or replace file `name` with `data` so that no reader ever sees a partial file."""
        if not self.is_local:
            self.fs.pipe_file(self.path(name), data)
            return
        os.makedirs(self.root, exist_ok=True)
        temp_path = os.path.join(self.root, f".{name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
        try:
            with open(temp_path, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp_path, self.path(name))
        except BaseException:
            if os.path.exists(temp_path):
                os.remove(temp_path)
            raise
        _fsync_directory(self.root)

    def tag(self, name: str) -> str | None:
        """An opaque version tag of file `name` (S3: its ETag; locally: size and modification time in ns),
        None when it does not exist. Read it before the content it guards."""
        try:
            if self.is_local:
                st = os.stat(self.path(name))
                return f"{st.st_size}-{st.st_mtime_ns}-{st.st_ino}"
            self.fs.invalidate_cache(self.path(name))
            return str(self.fs.info(self.path(name))["ETag"]).strip('"')
        except FileNotFoundError:
            return None

    def write_bytes_if(self, name: str, data: bytes, expected_tag: str | None) -> bool:
        """Create file `name` if `expected_tag` is None and it does not exist, or replace it if its tag is
        still `expected_tag`; atomically, like `write_bytes_atomic`. False (nothing written) when the file
        is not in the expected state: another writer got there first."""
        if not self.is_local:
            from botocore.exceptions import ClientError

            condition = {"IfNoneMatch": "*"} if expected_tag is None else {"IfMatch": f'"{expected_tag}"'}
            try:
                self.fs.pipe_file(self.path(name), data, **condition)
            except (ClientError, OSError) as error:
                if _precondition_failed(error):
                    return False
                raise
            return True
        with self._locked(name):
            if self.tag(name) != expected_tag:
                return False
            self.write_bytes_atomic(name, data)
            return True

    @contextlib.contextmanager
    def _locked(self, name: str):
        """An exclusive lock (fcntl) that local conditional writers of `name` take in turn."""
        os.makedirs(self.root, exist_ok=True)
        with open(os.path.join(self.root, f".{name}.lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def list_sizes(self) -> dict[str, int]:
        """{file name: size in bytes} of the plain files directly under the root ({} when it is absent)."""
        if self.is_local:
            try:
                with os.scandir(self.root) as entries:
                    return {e.name: e.stat().st_size for e in entries if e.is_file(follow_symlinks=False)}
            except FileNotFoundError:
                return {}
        self.fs.invalidate_cache(self.root)
        try:
            entries = self.fs.ls(self.root, detail=True)
        except FileNotFoundError:
            return {}
        return {e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e["size"]) for e in entries if e["type"] == "file"}

    def delete(self, name: str) -> None:
        """Remove file `name` (no error when it is already gone)."""
        try:
            if self.is_local:
                os.remove(self.path(name))
            else:
                self.fs.rm_file(self.path(name))
        except FileNotFoundError:
            pass


def _precondition_failed(error: BaseException) -> bool:
    """Whether an S3 error (botocore's, or the OSError s3fs turns it into) is a failed precondition (412)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "412") or status == 412:
                return True
        if "PreconditionFailed" in str(error) or "Precondition Failed" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _fsync_directory(path: str) -> None:
    """Make a rename in directory `path` durable (best effort: not every platform can open directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
