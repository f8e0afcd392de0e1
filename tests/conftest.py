"""Shared fixtures: the real data in ../shared/data (present in CI and on developer machines)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SARE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Keep BLAS/torch from oversubscribing the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real test data (toy_street, nordland_dev, real_gt); skips where it is not laid out."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (set SARE_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def toy_street_images(shared_data) -> list[Path]:
    """The 22 real street photos (17 database + 5 queries), sorted."""
    return sorted((shared_data / "toy_street").glob("*/*.jpg"))
