"""The extraction stage on real Ray (local, 2 CPUs): equivalence with a plain loop, bad images, S3, CLI.

Models are the tiny backbone on small images, so each extraction takes a few seconds on 2 cores.
"""

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from pipelines.cli import main
from pipelines.extract.config import ExtractConfig
from pipelines.extract.pipeline import EXIT_FAILURES_EXCEEDED, build_dataset, run
from pipelines.extract.plan import plan_resources
from pipelines.model.specs import load_model_spec
from sare_core.data import PlaceDataset, write_manifest
from sare_core.data.image_rows import dataset_root, image_rows, open_dataset
from sare_core.data.synth.city import generate_city
from sare_core.models import ModelConfig, build_model, model_hash, save_model
from sare_core.store import StoreMetadata, open_store

TINY = {"backbone": "tiny", "num_clusters": 8}


def plain_loop(model, paths, batch_size=8):
    """The reference: one process, images decoded and embedded in order, no Ray."""
    prep = model.preprocessor
    out = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            images = [prep.load(p) for p in paths[start:start + batch_size]]
            if len({tuple(x.shape) for x in images}) == 1:
                out.append(model(torch.stack(images)).numpy())
            else:  # images of different sizes: one at a time
                out.extend(model(x[None]).numpy() for x in images)
    return np.concatenate(out) if out else np.zeros((0, model.descriptor_dim), np.float32)


def store_by_id(uri, storage_options=None):
    batch = open_store(uri, storage_options=storage_options).read()
    return {i: (d, r, u) for i, d, r, u in zip(batch.ids, batch.descriptors, batch.roles, batch.utm)}


@pytest.fixture(scope="module")
def toy_model_file(tmp_path_factory):
    """A saved tiny model whose images keep their aspect ratio (longer side 96 px): batches mix sizes."""
    torch.manual_seed(3)
    model = build_model(ModelConfig(**TINY, max_side=96))
    path = str(tmp_path_factory.mktemp("model") / "tiny.pt")
    save_model(path, model)
    return path


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    out = tmp_path_factory.mktemp("city")
    generate_city(str(out), preset="tiny", seed=0, workers=1)
    return out


@pytest.mark.parametrize("layout", ["actors", "driver"])
def test_toy_street_matches_a_plain_loop(ray_local, toy_dataset, toy_model_file, tmp_path, layout):
    out = str(tmp_path / "store")
    result = run(ExtractConfig(dataset=toy_dataset, model=toy_model_file, out=out, batch_size=4,
                               decode_batch_size=5, rows_per_part=7, progress_bars=False, layout=layout))
    assert result.plan["layout"] == layout
    assert (result.total, result.rows, result.failures, result.extracted) == (22, 22, 0, 22)
    assert result.exit_status == 0 and result.images_per_s > 0
    parts = open_store(out).parts
    assert len(parts) == result.parts_written >= 4 and max(p.num_rows for p in parts) <= 7
    model = load_model_spec(toy_model_file)
    rows = image_rows(open_dataset(toy_dataset), dataset_root(toy_dataset))
    expected = plain_loop(model, rows.column("path").to_pylist())
    stored = store_by_id(out)
    assert sorted(stored) == sorted(rows.column("id").to_pylist())
    assert "database/db1.jpg" in stored and "queries/q3.jpg" in stored  # relative to the manifest's folder
    for i, image_id in enumerate(rows.column("id").to_pylist()):
        descriptor, role, utm = stored[image_id]
        np.testing.assert_allclose(descriptor, expected[i], atol=1e-5, rtol=0)
        assert role == rows.column("role")[i].as_py()
        np.testing.assert_array_equal(utm, [rows.column("utm_east")[i].as_py(), rows.column("utm_north")[i].as_py()])
    metadata = open_store(out).metadata
    assert metadata.model_hash == model_hash(model) and metadata.dim == model.descriptor_dim
    assert metadata.dataset.startswith("toy") and metadata.dataset.endswith("/manifest.parquet")


@pytest.mark.parametrize("layout", ["auto", "actors"])
def test_synthetic_city_matches_a_plain_loop(ray_local, city, tmp_path, layout):
    model_yaml = tmp_path / "model.yaml"  # an off-the-shelf model config (run-config style), seeded
    model_yaml.write_text("model:\n  backbone: tiny\n  num_clusters: 8\n")
    out = str(tmp_path / "store")
    result = run(ExtractConfig(dataset=str(city / "manifest.parquet"), model=str(model_yaml), out=out,
                               progress_bars=False, layout=layout))
    assert result.plan["layout"] == ("driver" if layout == "auto" else "actors")  # 400 images on 2 CPUs
    assert result.rows == result.total == 400 and result.failures == 0
    model = load_model_spec(str(model_yaml))
    assert result.model_hash == model_hash(model)  # the same YAML gives the same weights every time
    rows = image_rows(open_dataset(str(city / "manifest.parquet")), str(city))
    expected = plain_loop(model, rows.column("path").to_pylist(), batch_size=64)
    stored = store_by_id(out)
    got = np.stack([stored[i][0] for i in rows.column("id").to_pylist()])
    assert np.abs(got - expected).max() < 1e-5
    store = open_store(out)
    assert store.num_rows("database", "test") == 96 and store.num_rows("query", "train") == 32
    assert set(store.ids()) == set(rows.column("id").to_pylist())


def test_decoding_runs_in_its_own_cpu_tasks(ray_local, city, tmp_path, capsys):
    """Ray Data must not fuse decoding into the model actors (it would then run serially with the model)."""
    model = build_model(ModelConfig(**TINY))
    rows = image_rows(open_dataset(str(city / "manifest.parquet")), str(city))
    config = ExtractConfig(dataset="d", model="m", out=str(tmp_path), layout="actors")
    plan = plan_resources(config, 2, 0, rows.num_rows, model.descriptor_dim, 96 * 72 * 3)
    metadata = StoreMetadata(dim=model.descriptor_dim)
    stores = [{"uri": str(tmp_path), "metadata": metadata, "column": "descriptor"}]
    ds = build_dataset(rows, plan, [ray_local.put({})], ["hash"], model.config, stores, "t")
    ds.explain()
    physical = capsys.readouterr().out.split("Physical Plan (Optimized)")[-1]
    assert "TaskPoolMapOperator[MapBatches(decode_images)]" in physical
    assert "ActorPoolMapOperator[MapBatches(ImageEmbedder)]" in physical
    assert "TaskPoolMapOperator[MapBatches(write_parts_to_stores)]" in physical


def test_the_driver_layout_decodes_its_small_first_block_and_then_the_plans_blocks(ray_local, city, tmp_path):
    """Layout driver: Ray Data hands the decode tasks the blocks as cut (a small first block, then the plan's
    size, then the rest), not re-bundled to one size; every image once."""
    model = build_model(ModelConfig(**TINY))
    rows = image_rows(open_dataset(str(city / "manifest.parquet")), str(city))
    config = ExtractConfig(dataset="d", model="m", out=str(tmp_path), layout="driver", batch_size=16)
    plan = plan_resources(config, 2, 0, rows.num_rows, model.descriptor_dim, 96 * 72 * 3)
    assert (plan.first_block_size, plan.decode_batch_size, rows.num_rows) == (32, 100, 400)
    stores = [{"uri": str(tmp_path), "metadata": StoreMetadata(dim=model.descriptor_dim), "column": "descriptor"}]
    ds = build_dataset(rows, plan, [], ["hash"], model.config, stores, "t")
    batches = list(ds.iter_batches(batch_format="pyarrow", batch_size=None))
    assert sorted(b.num_rows for b in batches) == [32, 68, 100, 100, 100]
    ids = [i for b in batches for i in b.column("id").to_pylist()]
    assert sorted(ids) == sorted(rows.column("id").to_pylist())
    assert all(b.column("pixels").type == pa.large_binary() for b in batches)


@pytest.fixture(scope="module")
def damaged_dataset(tmp_path_factory, toy_street_images):
    """10 good photos, plus a corrupt file, a truncated JPEG, an empty file and a missing one."""
    root = tmp_path_factory.mktemp("damaged")
    paths = []
    for path in toy_street_images[:10]:
        shutil.copy(path, root / path.name)
        paths.append(str(root / path.name))
    (root / "corrupt.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    data = toy_street_images[10].read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "empty.jpg").write_bytes(b"")
    bad = [str(root / n) for n in ("corrupt.jpg", "truncated.jpg", "empty.jpg", "missing.jpg")]
    all_paths = paths[:5] + bad[:2] + paths[5:] + bad[2:]
    dataset = PlaceDataset(name="damaged", db_paths=all_paths[:-3], q_paths=all_paths[-3:],
                           db_utm=np.zeros((len(all_paths) - 3, 2)), q_utm=np.ones((3, 2)), split="")
    return write_manifest(str(root / "manifest.csv"), dataset)


@pytest.mark.parametrize("layout", ["actors", "driver"])
def test_bad_images_are_recorded_and_the_job_goes_on(ray_local, damaged_dataset, tmp_path, layout):
    model = tmp_path / "model.yaml"
    model.write_text("backbone: tiny\nnum_clusters: 8\nimage_size: [48, 64]\n")
    out = str(tmp_path / "store")
    result = run(ExtractConfig(dataset=damaged_dataset, model=str(model), out=out, decode_batch_size=4,
                               max_failure_fraction=0.5, progress_bars=False, layout=layout))
    assert (result.total, result.rows, result.failures, result.failed) == (14, 10, 4, 4)
    assert result.exit_status == 0 and not result.failures_exceeded
    store = open_store(out)
    failures = {row["id"]: row for row in store.failures().to_pylist()}
    assert sorted(failures) == ["corrupt.jpg", "empty.jpg", "missing.jpg", "truncated.jpg"]
    assert failures["missing.jpg"]["error"].startswith("missing:")
    assert failures["truncated.jpg"]["error"].startswith("decode:")
    assert failures["corrupt.jpg"]["path"].endswith("/corrupt.jpg")
    assert len(store) == 10 and not set(store.ids()) & set(failures)
    # The same images against a 1% budget: the CLI's exit status says the run failed (store still written).
    code = main(["extract", "--dataset", damaged_dataset, "--model", str(model), "--out", str(tmp_path / "s2"),
                 "--no-progress", "--set", "decode_batch_size=4"])
    assert code == EXIT_FAILURES_EXCEEDED
    assert len(open_store(str(tmp_path / "s2")).failures()) == 4


def test_rerun_of_a_finished_store_does_nothing_and_another_model_is_refused(ray_local, city, tmp_path):
    model = tmp_path / "model.yaml"
    model.write_text("backbone: tiny\nnum_clusters: 8\n")
    out = str(tmp_path / "store")
    first = run(ExtractConfig(dataset=str(city / "test.mat"), model=str(model), out=out, roles=["query"],
                              progress_bars=False))
    assert first.extracted == 24 and first.version == 1
    # Extending the same store with the database rows of the split: only those are computed.
    second = run(ExtractConfig(dataset=str(city / "test.mat"), model=str(model), out=out, progress_bars=False))
    assert (second.already_done, second.extracted, second.version) == (24, 96, 2)
    third = run(ExtractConfig(dataset=str(city / "test.mat"), model=str(model), out=out, progress_bars=False))
    assert (third.extracted, third.version, third.rows) == (0, 2, 120)
    assert len(open_store(out).ids()) == 120
    with pytest.raises(ValueError, match="other settings"):
        run(ExtractConfig(dataset=str(city / "test.mat"), model=str(model), out=out, seed=1, progress_bars=False))
    code = main(["extract", "--dataset", str(city / "test.mat"), "--model", str(model), "--out", out,
                 "--set", "seed=1"])
    assert code == 2


def test_extraction_to_s3(ray_local, s3_uri, toy_dataset, toy_model_file, tmp_path):
    uri = f"{s3_uri}/stores/toy"
    result = run(ExtractConfig(dataset=toy_dataset, model=toy_model_file, out=uri, rows_per_part=10,
                               progress_bars=False))
    assert result.rows == 22 and result.parts_written >= 3
    remote = store_by_id(uri)
    model = load_model_spec(toy_model_file)
    rows = image_rows(open_dataset(toy_dataset), dataset_root(toy_dataset))
    expected = plain_loop(model, rows.column("path").to_pylist())
    got = np.stack([remote[i][0] for i in rows.column("id").to_pylist()])
    assert np.abs(got - expected).max() < 1e-5
    assert open_store(uri).uri == uri and pc.count_distinct(open_store(uri).ids_arrow()).as_py() == 22


@pytest.mark.parametrize("layout", ["actors", "driver"])
def test_truncated_extraction_stores_the_first_k_dims_renormalised(ray_local, toy_dataset, toy_model_file, tmp_path,
                                                                   layout):
    from sare_core.descriptors import truncate

    out = str(tmp_path / "store")
    assert main(["extract", "--dataset", toy_dataset, "--model", toy_model_file, "--out", out, "--truncate", "20",
                 "--no-progress", "--set", f"layout={layout}"]) == 0
    store = open_store(out)
    assert store.dim == 20 and store.metadata.provenance["config"]["truncate"] == 20
    rows = image_rows(open_dataset(toy_dataset), dataset_root(toy_dataset))
    expected = truncate(plain_loop(load_model_spec(toy_model_file), rows.column("path").to_pylist()), 20)
    stored = store_by_id(out)
    got = np.stack([stored[i][0] for i in rows.column("id").to_pylist()])
    assert np.abs(got - expected).max() < 1e-5
    assert main(["extract", "--dataset", toy_dataset, "--model", toy_model_file, "--out", str(tmp_path / "x"),
                 "--truncate", "100000"]) == 2  # more than the model's dims: refused before any work


def test_the_splits_evaluation_radius_travels_with_the_store(ray_local, toy_street_images, toy_model_file,
                                                              tmp_path):
    """A manifest split whose positives lie within 2 units (Nordland: frames) is scored within 2 units by
    `sare eval --store`, not within the 25 m default: the store records the radius of what it extracted."""
    from sare_core.evaluation.store_search import score_stores

    db = [str(p) for p in toy_street_images if p.parent.name == "database"]
    q = [str(p) for p in toy_street_images if p.parent.name != "database"][:4]
    # database images 5 units apart; each query 1 unit from database image i and 4 from image i + 1
    dataset = PlaceDataset(name="frames", db_paths=db, q_paths=q, split="val", pos_dist_thr=2.0,
                           db_utm=np.column_stack([np.arange(len(db)) * 5.0, np.zeros(len(db))]),
                           q_utm=np.column_stack([np.arange(len(q)) * 5.0 + 1.0, np.zeros(len(q))]))
    manifest = write_manifest(str(tmp_path / "frames.parquet"), dataset)
    out = str(tmp_path / "store")
    run(ExtractConfig(dataset=manifest, model=toy_model_file, out=out, progress_bars=False))
    assert open_store(out).metadata.provenance["pos_dist_thr"] == 2.0
    scored = score_stores("toy", out, ns=(1, 5))
    default = score_stores("toy", out, ns=(1, 5), radius=25.0)
    assert scored.evaluation.extra["radius_m"] == 2.0
    # within 2 units each query has one positive; within 25 units five or more
    assert [len(p) for p in scored.positives] == [1] * len(q)
    assert all(len(p) >= 5 for p in default.positives)
