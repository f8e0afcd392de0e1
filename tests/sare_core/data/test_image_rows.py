"""Image rows of datasets: stable ids relative to the dataset root, qualified where a path repeats; selection."""

import numpy as np
import pyarrow as pa
import pytest

from sare_core.data.image_rows import (
    default_dataset_name,
    image_rows,
    make_ids,
    relative_id,
    select_rows,
    without_ids,
)
from sare_core.data.place_dataset import PlaceDataset


def _dataset(split, db, q, root):
    return PlaceDataset(name=split, db_paths=[f"{root}/{p}" for p in db], q_paths=[f"{root}/{p}" for p in q],
                        db_utm=np.arange(2 * len(db), dtype=float).reshape(-1, 2),
                        q_utm=np.arange(2 * len(q), dtype=float).reshape(-1, 2), split=split)


def test_ids_are_paths_relative_to_the_dataset_root(tmp_path):
    root = str(tmp_path)
    rows = image_rows({"test": _dataset("test", ["db/a.jpg", "db/b.jpg"], ["q/c.jpg"], root)}, root)
    assert rows.column("id").to_pylist() == ["db/a.jpg", "db/b.jpg", "q/c.jpg"]
    assert rows.column("role").to_pylist() == ["database", "database", "query"]
    assert rows.column("path").to_pylist()[0] == f"{root}/db/a.jpg"
    assert rows.column("utm_east").to_pylist() == [0.0, 2.0, 0.0]
    assert rows.column("label").to_pylist() == [-1, -1, -1]
    assert relative_id("/elsewhere/x.jpg", root) == "/elsewhere/x.jpg"
    assert relative_id("s3://bucket/city/images/x.jpg", "s3://bucket/city") == "images/x.jpg"


def test_a_path_in_two_roles_or_splits_gets_qualified_ids(tmp_path):
    root = str(tmp_path)
    splits = {"val": _dataset("val", ["shared.jpg", "v.jpg"], ["shared.jpg"], root),
              "test": _dataset("test", ["shared.jpg"], ["t.jpg"], root)}
    rows = image_rows(splits, root)
    ids = rows.column("id").to_pylist()
    assert len(set(ids)) == len(ids) == 5
    assert "v.jpg" in ids and "t.jpg" in ids  # paths listed once keep their plain id
    assert {"val::database::shared.jpg", "test::database::shared.jpg", "val::query::shared.jpg"} <= set(ids)
    # Ids come from the whole dataset, so selecting a split does not change them.
    assert select_rows(rows, ["test"]).column("id").to_pylist() == ["test::database::shared.jpg", "t.jpg"]
    assert make_ids(["x", "x"], ["database", "query"], ["", ""]) == ["database::x", "query::x"]
    with pytest.raises(ValueError, match="listed twice"):
        make_ids(["x", "x"], ["database", "database"], ["", ""])


def test_selection_and_skipping(tmp_path):
    root = str(tmp_path)
    rows = image_rows({"test": _dataset("test", ["a", "b", "c"], ["q"], root)}, root)
    assert select_rows(rows, roles=["query"]).column("id").to_pylist() == ["q"]
    with pytest.raises(ValueError, match="no split"):
        select_rows(rows, ["train"])
    assert without_ids(rows, {"a", "q"}).column("id").to_pylist() == ["b", "c"]
    assert default_dataset_name(str(tmp_path / "manifest.parquet")) == f"{tmp_path.name}/manifest.parquet"


def test_rows_schema_roundtrip_for_label_datasets(tmp_path):
    d = PlaceDataset(name="gl", db_paths=[f"{tmp_path}/x.jpg"], q_paths=[f"{tmp_path}/y.jpg"],
                     db_labels=np.array([7]), q_labels=np.array([-1]))
    rows = image_rows([d], str(tmp_path))
    assert rows.column("label").to_pylist() == [7, -1]
    assert np.isnan(rows.column("utm_east").to_numpy()).all()
    assert rows.schema.field("id").type == pa.string()
