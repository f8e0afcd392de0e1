"""Extraction without Ray: ids, row selection, resource plans, adoption of a dead run's parts."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines.extract import ExtractConfig, load_extract_config, plan_resources
from pipelines.extract_io import decode_images, read_image, resized_uint8
from pipelines.extract_resume import delete_parts_of_run, inspect_store
from pipelines.extract_rows import (
    default_dataset_name,
    image_rows,
    make_ids,
    relative_id,
    select_rows,
    without_ids,
)
from sare_core.data import PlaceDataset
from sare_core.models import Preprocessor, load_rgb
from sare_core.store import PartWriter, StoreMetadata, commit, open_store


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


def test_resource_plans_follow_the_cluster():
    config = ExtractConfig(dataset="d", model="m", out="o")
    laptop = plan_resources(config, 2, 0, 10_000, 4096, 96 * 72 * 3)
    assert not laptop.use_gpu and laptop.num_actors == 2 and laptop.threads_per_actor == 1
    assert laptop.decode_tasks == 1 and laptop.decode_cpus == 1 and laptop.actor_cpus == 0.5
    assert laptop.rows_per_part == 1250  # 1/8 of the images (< 64 MB)
    assert 16 <= laptop.decode_batch_size <= 1024
    gpus = plan_resources(config, 32, 4, 250_000, 4096, 480 * 640 * 3, object_store_capacity=8e9)
    assert gpus.use_gpu and gpus.num_actors == 4 and gpus.decode_tasks == 28 and gpus.batch_size == 128
    assert gpus.rows_per_part == 4096 and gpus.object_store_memory == 4_000_000_000
    assert gpus.decode_batch_size == 36  # about 32 MB of 480x640 images
    cpus16 = plan_resources(config, 16, 0, 250_000, 32768, 480 * 640 * 3)
    assert cpus16.threads_per_actor == 1 and cpus16.num_actors == 16 and cpus16.decode_tasks == 4
    assert cpus16.actor_cpus == 0.75
    assert cpus16.rows_per_part == 512
    one_cpu = plan_resources(config, 1, 0, 100, 64, 100)
    assert (one_cpu.num_actors, one_cpu.actor_cpus, one_cpu.decode_cpus) == (1, 0.5, 0.5)
    threads = plan_resources(config.model_copy(update={"threads_per_actor": 2}), 8, 0, 100, 64, 100)
    assert (threads.num_actors, threads.decode_tasks, threads.actor_cpus) == (4, 2, 1.5)
    with pytest.raises(ValueError, match="no CPU for decoding"):
        plan_resources(config.model_copy(update={"num_actors": 2, "actor_cpus": 1}), 2, 0, 100, 64, 100)
    with pytest.raises(ValueError, match="no GPU"):
        plan_resources(config.model_copy(update={"use_gpu": True}), 2, 0, 100, 64, 100)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        load_extract_config(None, ["batch_size=0"], {"dataset": "d", "model": "m", "out": "o"})
    with pytest.raises(ValueError, match="max_failure_fraction"):
        load_extract_config(None, ["max_failure_fraction=2"], {"dataset": "d", "model": "m", "out": "o"})
    with pytest.raises(ValueError, match="no_such_field"):
        load_extract_config(None, ["no_such_field=1"], {"dataset": "d", "model": "m", "out": "o"})
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("extract:\n  dataset: d\n  model: m\n  out: o\n  batch_size: 7\nmodel:\n  backbone: tiny\n")
    config = load_extract_config(yaml_file, ["num_actors=2"], {"out": "o2"})
    assert (config.batch_size, config.num_actors, config.out) == (7, 2, "o2")
    with pytest.raises(FileNotFoundError, match="dataset"):
        config.check_inputs()


def _write(uri, metadata, ids, task_id="t"):
    writer = PartWriter(uri, metadata, task_id=task_id)
    return writer.write(ids=ids, roles="database", descriptors=np.ones((len(ids), 4), np.float32))


def test_adoption_keeps_disjoint_parts_and_deletes_repeats_and_strangers(tmp_path):
    uri = str(tmp_path / "store")
    meta = StoreMetadata(dim=4, dataset="d", model_hash="m1")
    committed = _write(uri, meta, ["a", "b"])
    commit(uri, [committed], meta)
    _write(uri, meta, ["c", "d"])                  # a dead run's parts: one adopted, the other repeats "d"
    _write(uri, meta, ["d", "e"])                  # (as after a retried task) and is deleted
    _write(uri, meta, ["b", "f"])                  # repeats a committed id: deleted
    stranger = _write(uri, StoreMetadata(dim=4, dataset="d", model_hash="other"), ["g"])  # another model
    state = inspect_store(uri, meta)
    assert state.committed and state.done_ids == {"a", "b"}
    assert len(state.adopted) == 1 and state.adopted_ids in ({"c", "d"}, {"d", "e"})
    assert stranger.name in state.deleted and len(state.deleted) == 3
    assert state.skip_ids == {"a", "b"} | state.adopted_ids  # the others ("f", ...) are extracted again
    with pytest.raises(ValueError, match="other settings"):
        inspect_store(uri, StoreMetadata(dim=4, dataset="d", model_hash="m2"))
    assert open_store(uri).ids().tolist() == ["a", "b"]


def test_a_run_deletes_only_its_own_leftover_parts(tmp_path):
    uri = str(tmp_path / "store")
    meta = StoreMetadata(dim=4, dataset="d", model_hash="m1")
    mine = _write(uri, meta, ["a"], task_id="run1")
    other = _write(uri, meta, ["b"], task_id="run2")
    assert delete_parts_of_run(uri, "run1") == [mine.name]
    assert (tmp_path / "store" / other.name).exists()


def test_rows_schema_roundtrip_for_label_datasets(tmp_path):
    d = PlaceDataset(name="gl", db_paths=[f"{tmp_path}/x.jpg"], q_paths=[f"{tmp_path}/y.jpg"],
                     db_labels=np.array([7]), q_labels=np.array([-1]))
    rows = image_rows([d], str(tmp_path))
    assert rows.column("label").to_pylist() == [7, -1]
    assert np.isnan(rows.column("utm_east").to_numpy()).all()
    assert rows.schema.field("id").type == pa.string()


@pytest.mark.parametrize("image_size, max_side", [((48, 64), None), (None, 100), (None, 2000), (None, None)])
def test_torch_free_decoding_gives_the_preprocessors_pixels(toy_street_images, image_size, max_side):
    """The decode tasks restate the model's resize rule without torch; the pixels must be identical."""
    prep = Preprocessor("tiny", image_size, max_side)
    for path in toy_street_images[::4]:
        expected = prep.to_uint8(load_rgb(str(path)))
        np.testing.assert_array_equal(resized_uint8(read_image(str(path)), image_size, max_side), expected)
    rows = pa.table({"id": ["a"], "path": [str(toy_street_images[0])]})
    out = decode_images(rows, image_size, max_side)
    h, w = out.column("height")[0].as_py(), out.column("width")[0].as_py()
    pixels = np.frombuffer(out.column("pixels")[0].as_py(), np.uint8).reshape(h, w, 3)
    np.testing.assert_array_equal(pixels, prep.to_uint8(load_rgb(str(toy_street_images[0]))))


def test_decode_and_write_workers_do_not_import_torch():
    code = "import sys, pipelines.extract_io; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2]).returncode == 0
