"""Fixtures shared by the extraction tests."""

import shutil

import numpy as np
import pytest

from sare_core.data import PlaceDataset, write_manifest


@pytest.fixture(scope="module")
def toy_dataset(tmp_path_factory, toy_street_images):
    """The 22 real toy_street photos (sizes 480..826 px, several aspect ratios) as a manifest dataset."""
    root = tmp_path_factory.mktemp("toy")
    db, q = [], []
    for path in toy_street_images:
        target = root / path.parent.name / path.name
        target.parent.mkdir(exist_ok=True)
        shutil.copy(path, target)
        (db if path.parent.name == "database" else q).append(str(target))
    dataset = PlaceDataset(name="toy", db_paths=db, q_paths=q,
                           db_utm=np.column_stack([np.arange(len(db)) * 10.0, np.zeros(len(db))]),
                           q_utm=np.column_stack([np.arange(len(q)) * 10.0 + 3, np.ones(len(q))]), split="test")
    return write_manifest(str(root / "manifest.parquet"), dataset)
