"""`sare eval --manifest`: extraction (Ray Data) and evaluation in one go, on a slice of the real Nordland frames."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from pipelines.cli import main
from pipelines.evaluate.manifest import ManifestEvalConfig, run
from pipelines.model.specs import parse_model_arg, pretrained_model_config
from sare_core.data import positives_within
from sare_core.evaluation import recall_at_n
from sare_core.models import ModelConfig, build_model, embed_paths, load_model, model_hash, save_model
from sare_core.store import open_store

FRAMES = 24


@pytest.fixture(scope="module")
def nordland_slice(shared_data, tmp_path_factory):
    """24 consecutive frames of each season copied under one folder, and a CSV manifest with relative paths
    and the frame index as utm_east (no split column)."""
    root = tmp_path_factory.mktemp("nordland_slice")
    names = sorted(p.name for p in (shared_data / "nordland_dev" / "summer").glob("*.png"))[600 : 600 + FRAMES]
    rows = []
    for season, role in (("summer", "database"), ("winter", "query")):
        (root / season).mkdir()
        for i, name in enumerate(names):
            shutil.copy(shared_data / "nordland_dev" / season / name, root / season / name)
            rows.append({"path": f"{season}/{name}", "role": role, "utm_east": i, "utm_north": 0})
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "role", "utm_east", "utm_north"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def tiny_config_yaml(path, pooling="netvlad", whitening_dim=None):
    model = {"backbone": "tiny", "pooling": pooling, "num_clusters": 4, "whitening_dim": whitening_dim,
             "image_size": [32, 64]}
    path.write_text(yaml.safe_dump({"name": "x", "model": model}))
    return str(path)


def plain_recall(model, root, radius=2.0):
    db = embed_paths(model, [str(root / "summer" / p) for p in sorted(x.name for x in (root / "summer").glob("*"))])
    q = embed_paths(model, [str(root / "winter" / p) for p in sorted(x.name for x in (root / "winter").glob("*"))])
    utm = np.stack([np.arange(FRAMES, dtype=float), np.zeros(FRAMES)], axis=1)
    return recall_at_n(q, db, positives_within(utm, utm, radius), ns=(1, 2, 3, 4, 5, 10))


def test_eval_manifest_matches_a_plain_loop(nordland_slice, tmp_path, ray_local, capsys):
    """A saved model and an off-the-shelf one (k-means + whitening fitted on the database images): the
    table's recalls are those of a plain extraction loop with +-2 frame positives."""
    torch.manual_seed(1)
    saved = build_model(ModelConfig(backbone="tiny", pooling="gem", whitening_dim=None, image_size=(32, 64)))
    ckpt = tmp_path / "trained.pt"
    save_model(str(ckpt), saved)
    spec = tiny_config_yaml(tmp_path / "tiny.yaml", whitening_dim=8)
    out = tmp_path / "eval"
    code = main(["eval", "--manifest", str(nordland_slice / "manifest.csv"), "--model", f"offtheshelf={spec}",
                 "--model", f"trained={ckpt}", "--radius", "2", "--out-dir", str(out),
                 "--set", "extract.progress_bars=false"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "ratio trained/offtheshelf" in printed and "positives within 2" in printed
    record = json.loads((out / "manifest_eval.json").read_text())
    assert record["radius"] == 2 and record["split"] == ""
    off = record["models"][0]
    assert off["off_the_shelf"] and off["fit"]["kmeans"]["images"] == FRAMES and off["fit"]["whitening"]["dims"] == 8
    fitted = load_model(off["path"])
    assert model_hash(fitted) == off["model_hash"] and fitted.descriptor_dim == 8
    for name, model in (("offtheshelf", fitted), ("trained", saved)):
        store = open_store(record["extractions"][name]["store"])
        assert store.metadata.model_hash == model_hash(model)
        got = {int(n): r for n, r in record["results"][name]["recalls"].items()}
        assert got == pytest.approx(plain_recall(model, nordland_slice), abs=1e-6)


def test_radius_defaults_to_the_manifest_split(nordland_slice, tmp_path, ray_local):
    """A Parquet manifest carries pos_dist_thr per split; without --radius it is the evaluation radius."""
    from sare_core.data import read_manifest, write_manifest

    data = read_manifest(str(nordland_slice / "manifest.csv"), pos_dist_thr=1)
    data.split = "test"
    manifest = write_manifest(str(nordland_slice / "one_frame.parquet"), data)
    spec = tiny_config_yaml(tmp_path / "gem.yaml", pooling="gem")
    result = run(ManifestEvalConfig(manifest=manifest, models=[spec], out_dir=str(tmp_path / "e"), ns=[1, 5],
                                    extract={"progress_bars": False}))
    assert result["radius"] == 1 and result["split"] == "test"
    model = load_model(result["models"][0].path)
    expected = plain_recall(model, nordland_slice, radius=1)
    assert result["results"][result["models"][0].name].recalls[1] == pytest.approx(expected[1])


def test_pretrained_names():
    cfg = pretrained_model_config("pretrained:efficientnet_lite0-netvlad",
                                  base={"backbone": "efficientnet_lite0", "cut": "blocks4", "num_clusters": 64,
                                        "whitening_dim": 512, "image_size": [64, 128]})
    assert (cfg.weights, cfg.pooling, cfg.cut, cfg.num_clusters) == ("imagenet", "netvlad", "blocks4", 64)
    gem = pretrained_model_config("pretrained:efficientnet_lite0-gem")
    assert gem.pooling == "gem" and gem.whitening_dim is None and gem.cut is None
    vgg = pretrained_model_config("pretrained:vgg16-netvlad", base={"backbone": "efficientnet_lite0", "cut": "blocks4"})
    assert vgg.cut is None and vgg.weights == "torchvision-download"
    with pytest.raises(ValueError, match="'resnet9-gem'.*choose from"):
        pretrained_model_config("pretrained:resnet9-gem")
    with pytest.raises(ValueError, match="tiny backbone has no pretrained weights"):
        pretrained_model_config("pretrained:tiny-gem")
    assert parse_model_arg("trained=runs/x/model.pt") == ("trained", "runs/x/model.pt")
    assert parse_model_arg("pretrained:efficientnet_lite0-gem") == (None, "pretrained:efficientnet_lite0-gem")
    assert parse_model_arg("runs/a=b/model.pt") == (None, "runs/a=b/model.pt")


def test_errors_name_the_file_field_and_value(nordland_slice, tmp_path, capsys):
    good = str(nordland_slice / "manifest.csv")

    def error(*args):
        assert main(["eval", *args, "--out-dir", str(tmp_path / "never")]) == 2
        return capsys.readouterr().err

    assert "nope.csv" in error("--manifest", str(tmp_path / "nope.csv"), "--model", "pretrained:efficientnet_lite0-gem")
    assert "'foo-gem'" in error("--manifest", good, "--model", "pretrained:foo-gem")
    assert "no such file: missing.pt" in error("--manifest", good, "--model", "missing.pt")
    err = error("--manifest", good, "--model", "pretrained:efficientnet_lite0-gem", "--set", "pretrained.cut=blocks9")
    assert "cut" in err and "blocks9" in err
    err = error("--manifest", good, "--model", "pretrained:efficientnet_lite0-gem", "--queries", "q_store")
    assert "--queries" in err and "existing stores" in err
    assert "--model needs --manifest" in error("--model", "pretrained:efficientnet_lite0-gem")
    assert "no split 'val'" in error("--manifest", good, "--split", "val", "--model", "pretrained:efficientnet_lite0-gem")
    bad_role = tmp_path / "bad_role.csv"
    bad_role.write_text("path,role,utm_east,utm_north\nsummer/a.png,datbase,0,0\n")
    err = error("--manifest", str(bad_role), "--model", "pretrained:efficientnet_lite0-gem")
    assert "bad_role.csv" in err and "'role'" in err and "datbase" in err
    missing_image = nordland_slice / "missing_image.csv"
    missing_image.write_text("path,role,utm_east,utm_north\nsummer/nothere.png,database,0,0\n"
                             f"winter/{sorted(p.name for p in (nordland_slice / 'winter').glob('*'))[0]},query,0,0\n")
    err = error("--manifest", str(missing_image), "--model", "pretrained:efficientnet_lite0-gem")
    assert "missing_image.csv" in err and "'path'" in err and "nothere.png" in err
    odd_model = tmp_path / "odd_model.yaml"
    odd_model.write_text("model: {backbone: tiny, num_clustres: 8}\n")
    err = error("--manifest", good, "--model", str(odd_model))
    assert "odd_model.yaml" in err and "num_clustres" in err
    assert not (tmp_path / "never").exists()


def test_nested_sections_are_typed_and_refuse_fields_set_elsewhere_and_unknown_ones():
    base = {"manifest": "m.csv", "models": ["pretrained:efficientnet_lite0-gem"]}
    for section, field in (("evaluation", "split"), ("evaluation", "serch_mode"), ("extract", "out"),
                           ("extract", "num_actor")):
        with pytest.raises(ValueError, match=rf"{section}\.{field}\s+Extra inputs are not permitted"):
            ManifestEvalConfig(**base, **{section: {field: "x"}})
    with pytest.raises(ValueError, match=r"extract\.num_actors"):
        ManifestEvalConfig(**base, extract={"num_actors": 0})
    config = ManifestEvalConfig(**base, extract={"num_actors": 2}, evaluation={"search_mode": "stream"})
    assert config.extract.num_actors == 2 and config.evaluation.search_mode == "stream"


def test_off_the_shelf_from_a_training_config_is_that_runs_initial_model(nordland_slice, tmp_path):
    """A training config as the model spec: its centroid settings and seed apply, so the fitted model is
    exactly `sare train`'s initial model (k-means on the same images, in the same order)."""
    from pipelines.evaluate.manifest import prepare_model
    from pipelines.train.driver import ensure_initial_model
    from sare_core.data import read_manifest
    from sare_core.training.config import TrainConfig

    data = read_manifest(str(nordland_slice / "manifest.csv"))
    train_yaml = tmp_path / "train.yaml"
    train_yaml.write_text(yaml.safe_dump({
        "name": "t", "dataset": "unused.parquet", "seed": 3, "centroid_images": 10,
        "centroid_descriptors_per_image": 7,
        "model": {"backbone": "tiny", "num_clusters": 4, "whitening_dim": None, "image_size": [32, 64]}}))
    reference = load_model(ensure_initial_model(TrainConfig(**yaml.safe_load(train_yaml.read_text())), data,
                                                str(tmp_path / "init.pt")))
    config = ManifestEvalConfig(manifest=str(nordland_slice / "manifest.csv"), models=[str(train_yaml)])
    prepared = prepare_model("off", str(train_yaml), config, data, None, str(tmp_path / "models"))
    assert prepared.model_hash == model_hash(reference)
    assert prepared.fit["kmeans"]["images"] == 10 and prepared.fit["seed"] == 3
    # set explicitly, the eval config's own settings win
    config = ManifestEvalConfig(manifest=str(nordland_slice / "manifest.csv"), models=[str(train_yaml)], seed=0)
    assert prepare_model("off", str(train_yaml), config, data, None, str(tmp_path / "m2")).model_hash != \
        model_hash(reference)


def test_strip_whitening(nordland_slice, tmp_path):
    from pipelines.evaluate.manifest import prepare_model
    from sare_core.data import read_manifest

    data = read_manifest(str(nordland_slice / "manifest.csv"))
    spec = tiny_config_yaml(tmp_path / "w.yaml", whitening_dim=6)
    config = ManifestEvalConfig(manifest=str(nordland_slice / "manifest.csv"), models=[spec])
    whitened = prepare_model("w", spec, config, data, None, str(tmp_path / "models"))
    assert whitened.descriptor_dim == 6 and "whitening" in whitened.fit
    stripped_config = config.model_copy(update={"strip_whitening": True})
    saved = prepare_model("s", whitened.path, stripped_config, data, None, str(tmp_path / "models"))
    assert saved.descriptor_dim == 4 * 64 and saved.path != whitened.path and load_model(saved.path).whitening is None
    fresh = prepare_model("f", spec, stripped_config, data, None, str(tmp_path / "models"))
    assert fresh.descriptor_dim == 4 * 64 and "whitening" not in fresh.fit
