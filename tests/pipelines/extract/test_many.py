"""Several models in one extraction (`run_many`): the same stores as one extraction per model, the shared
frozen prefix run once per batch, a model's failure kept to its own store, each store given exactly what
it lacks (also when the stores lack different images), and mismatched settings refused."""

import copy
import os
import shutil

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipelines.extract.config import ExtractConfig
from pipelines.extract.embedder import ImageEmbedder
from pipelines.extract.pipeline import run, run_many
from sare_core.data.image_rows import dataset_root, image_rows, open_dataset
from sare_core.models import ModelConfig, build_model, load_model, save_model
from sare_core.models.images import load_rgb, resized_uint8
from sare_core.store import open_store


def tiny_model(seed, max_side=96):
    torch.manual_seed(seed)
    return build_model(ModelConfig(backbone="tiny", num_clusters=8, max_side=max_side, train_from="conv3"))


def fine_tuned(model):
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        for param in tuned.trainable_parameters():
            param.add_(0.05 * torch.randn_like(param))
    return tuned


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """base, base fine-tuned (same frozen prefix), another seed (own prefix), base at another image size."""
    folder = tmp_path_factory.mktemp("models")
    base = tiny_model(0)
    models = {"base": base, "tuned": fine_tuned(base), "other": tiny_model(1), "smaller": tiny_model(0, max_side=64)}
    paths = {}
    for name, model in models.items():
        paths[name] = str(folder / f"{name}.pt")
        save_model(paths[name], model)
    return paths


def config(dataset, model, out, **fields):
    return ExtractConfig(dataset=dataset, model=model, out=str(out), batch_size=4, decode_batch_size=5,
                         rows_per_part=7, progress_bars=False, **fields)


def descriptors_by_id(uri):
    batch = open_store(uri).read()
    assert len(set(batch.ids)) == len(batch.ids)  # every id once
    return dict(zip(batch.ids, batch.descriptors))


def test_the_shared_prefix_runs_once_per_batch_and_changes_no_bit(toy_street_images):
    base = tiny_model(0)
    models = [base, fine_tuned(base), tiny_model(1)]
    pixels = np.stack([resized_uint8(load_rgb(str(p)), (48, 64), None) for p in toy_street_images[:6]])
    alone = [ImageEmbedder(m).embed(pixels) for m in models]
    calls = []
    together = ImageEmbedder(models)
    for m in together.models:
        m.backbone.frozen.register_forward_hook(lambda module, args, out: calls.append(id(module)))
    got = together.embed_all(pixels)
    assert together.groups == [[0, 1], [2]]
    assert len(calls) == 2  # one prefix pass for base and tuned, one for other
    for want, have in zip(alone, got):
        np.testing.assert_array_equal(have, want)
    rows = pa.table({"id": ["a"], "path": ["a.jpg"], "role": ["database"], "split": ["test"], "utm_east": [0.0],
                     "utm_north": [0.0], "label": [-1], "pixels": [pixels[0].tobytes()], "height": [48],
                     "width": [64], "error": [""]})
    out = together(rows)
    assert [c for c in out.column_names if c.startswith("descriptor")] == ["descriptor", "descriptor_1",
                                                                           "descriptor_2"]
    one = ImageEmbedder(models[2]).embed(pixels[:1])[0]  # a batch of one, as the row was embedded
    np.testing.assert_array_equal(np.asarray(out.column("descriptor_2")[0].as_py(), np.float32), one)


def test_several_models_make_the_stores_one_run_per_model_makes(ray_local, toy_dataset, model_files, tmp_path):
    names = ["base", "tuned", "other", "smaller"]
    results = run_many([config(toy_dataset, model_files[n], tmp_path / "many" / n, layout="driver") for n in names])
    assert [r.uri for r in results] == [str(tmp_path / "many" / n) for n in names]
    for name, result in zip(names, results):
        alone = run(config(toy_dataset, model_files[name], tmp_path / "alone" / name, layout="driver"))
        assert (result.extracted, result.rows, result.failures, result.model_hash) == (22, 22, 0, alone.model_hash)
        want = descriptors_by_id(alone.uri)
        have = descriptors_by_id(result.uri)
        assert sorted(have) == sorted(want)
        for image_id, descriptor in want.items():
            np.testing.assert_array_equal(have[image_id], descriptor)


def test_the_actor_pool_runs_several_models_as_a_plain_loop_does(ray_local, toy_dataset, model_files, tmp_path):
    names = ["base", "tuned"]
    results = run_many([config(toy_dataset, model_files[n], tmp_path / n, layout="actors") for n in names])
    assert {r.plan["layout"] for r in results} == {"actors"}
    rows = image_rows(open_dataset(toy_dataset), dataset_root(toy_dataset))
    paths = rows.column("path").to_pylist()
    for name, result in zip(names, results):
        model = load_model(model_files[name]).eval()
        with torch.inference_mode():  # one image at a time (the toy photos differ in size)
            want = [model(model.preprocessor.load(p)[None])[0].numpy() for p in paths]
        have = descriptors_by_id(result.uri)
        for image_id, descriptor in zip(rows.column("id").to_pylist(), want):
            np.testing.assert_allclose(have[image_id], descriptor, atol=1e-5, rtol=0)


def test_a_model_that_fails_on_an_image_fails_it_in_its_own_column_only(toy_street_images):
    base = tiny_model(0)
    picky = fine_tuned(base)
    forward = picky.forward

    def refuse_dark_images(images, from_frozen=False):
        if not from_frozen and bool((images.flatten(1).max(1).values <= -1).any()):
            raise ValueError("a dark image")
        return forward(images, from_frozen)

    picky.forward = refuse_dark_images
    pixels = np.stack([resized_uint8(load_rgb(str(p)), (48, 64), None) for p in toy_street_images[:3]])
    pixels[1] = 0  # normalised to -1 everywhere
    rows = pa.table({"id": list("abc"), "path": list("abc"), "role": ["database"] * 3, "split": ["test"] * 3,
                     "utm_east": [0.0] * 3, "utm_north": [0.0] * 3, "label": [-1] * 3,
                     "pixels": [p.tobytes() for p in pixels], "height": [48] * 3, "width": [64] * 3,
                     "error": ["", "", ""]})
    together = ImageEmbedder([base, picky], batch_size=3)
    together.groups = [[0], [1]]  # each model whole, so that the picky forward sees the pixels
    out = together(rows)
    assert out.column("error").to_pylist() == ["", "", ""]
    assert out.column("error_1").to_pylist()[0::2] == ["", ""] and "a dark image" in out.column("error_1")[1].as_py()
    for i in range(3):  # the failed batch was retried one image at a time, each model alone
        np.testing.assert_array_equal(np.asarray(out.column("descriptor")[i].as_py(), np.float32),
                                      ImageEmbedder(base).embed(pixels[i:i + 1])[0])
        if i != 1:
            np.testing.assert_array_equal(np.asarray(out.column("descriptor_1")[i].as_py(), np.float32),
                                          ImageEmbedder(picky).embed(pixels[i:i + 1])[0])


def test_each_store_gets_only_what_it_lacks(ray_local, toy_dataset, model_files, tmp_path):
    base, tuned = tmp_path / "base", tmp_path / "tuned"
    run(config(toy_dataset, model_files["base"], base))
    run(config(toy_dataset, model_files["tuned"], tuned, roles=["query"]))
    before = open_store(str(base)).manifest.version
    results = run_many([config(toy_dataset, model_files["base"], base),
                        config(toy_dataset, model_files["tuned"], tuned)])
    assert (results[0].extracted, results[0].already_done, results[0].version) == (0, 22, before)
    assert results[0].plan == {} and results[1].plan["layout"] == "driver"  # the complete store's model never ran
    assert (results[1].extracted, results[1].already_done, results[1].rows) == (17, 5, 22)  # the 17 database images
    assert len(descriptors_by_id(str(tuned))) == 22


@pytest.fixture(scope="module")
def damaged_dataset(tmp_path_factory, toy_dataset):
    """The toy dataset with one database image truncated (unreadable)."""
    root = tmp_path_factory.mktemp("damaged")
    shutil.copytree(os.path.dirname(toy_dataset), root / "toy")
    victim = sorted((root / "toy" / "database").glob("*.jpg"))[2]
    victim.write_bytes(victim.read_bytes()[:200])
    return str(root / "toy" / "manifest.parquet"), f"database/{victim.name}"


@pytest.mark.parametrize("layout", ["driver"])  # the rows' store mask goes through the same steps in both layouts
def test_stores_that_lack_different_images_each_get_theirs(ray_local, damaged_dataset, model_files, tmp_path, layout):
    dataset, bad_id = damaged_dataset
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    run(config(dataset, model_files["base"], a, roles=["database"], layout=layout))  # a lacks the queries
    run(config(dataset, model_files["tuned"], b, roles=["query"], layout=layout))  # b lacks the database
    results = run_many([config(dataset, model_files[m], s, layout=layout)
                        for m, s in (("base", a), ("tuned", b), ("other", c))])  # c lacks everything
    assert [(r.extracted, r.failed, r.already_done) for r in results] == [(5, 0, 17), (16, 1, 5), (21, 1, 0)]
    for name, store in (("base", a), ("tuned", b), ("other", c)):
        alone = run(config(dataset, model_files[name], tmp_path / f"alone_{name}", layout=layout))
        want, have = descriptors_by_id(alone.uri), descriptors_by_id(str(store))  # every id once
        assert sorted(have) == sorted(want) and len(have) == 21
        for image_id, descriptor in want.items():  # other batches than one full run: float rounding apart
            np.testing.assert_allclose(have[image_id], descriptor, atol=1e-5, rtol=0)
        failures = open_store(str(store)).failures().column("id").to_pylist()
        assert failures == [bad_id]  # once, in the store's own failures table


def test_settings_that_differ_and_a_store_given_twice_are_refused(toy_dataset, model_files, tmp_path):
    with pytest.raises(ValueError, match="batch_size: extraction 1 has 8"):
        run_many([config(toy_dataset, model_files["base"], tmp_path / "a"),
                  config(toy_dataset, model_files["tuned"], tmp_path / "b").model_copy(update={"batch_size": 8})])
    with pytest.raises(ValueError, match="is given to two models"):
        run_many([config(toy_dataset, model_files["base"], tmp_path / "a"),
                  config(toy_dataset, model_files["tuned"], tmp_path / "a")])
    assert not (tmp_path / "a").exists()
