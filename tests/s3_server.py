"""A real S3 endpoint on loopback for tests: moto's threaded server on 127.0.0.1, no patched client.

Fixtures in tests/conftest.py wrap it: `s3_server` (one server per test session) and `s3_uri` (a new empty
bucket per test, with the AWS_* environment pointing at the server, so code under test reaches it through
the usual credential/endpoint lookup, as do subprocesses and Ray workers started from the test).

    def test_something(s3_uri):                      # "s3://sare-test-<random>"
        write_store(f"{s3_uri}/store", ...)

    def test_ray(s3_server, s3_uri):                 # Ray workers: pass the environment on
        ray.init(runtime_env={"env_vars": s3_server.env})

`s3_server.storage_options` are explicit fsspec/s3fs options for the same server, and `s3_server.client()`
a boto3 client to inspect or tamper with objects.
"""

from __future__ import annotations

import logging
import os
import uuid

from moto.server import ThreadedMotoServer

REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"


class LoopbackS3:
    """moto's S3 server on 127.0.0.1 and a free port; `start()` / `stop()`, or use as a context manager."""

    def __init__(self):
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint_url = ""

    def start(self) -> LoopbackS3:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request in test output
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> LoopbackS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point AWS SDKs (boto3, s3fs) at this server, ignoring ~/.aws."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    # Variables of the developer's environment that would override or confuse the ones above.
    CLEARED_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3")

    @property
    def storage_options(self) -> dict:
        """Explicit fsspec/s3fs options for this server (for code that takes storage_options)."""
        return {"endpoint_url": self.endpoint_url, "key": ACCESS_KEY, "secret": SECRET_KEY}

    def client(self):
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh random name by default) and return its name."""
        name = name or f"sare-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name
