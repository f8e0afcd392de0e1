"""`sare explain`: heat-map PNGs, raw maps and similarities for real Nordland pairs, two models side by side."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipelines.cli import main
from sare_core.models import ModelConfig, build_model, embed_paths, save_model
from sare_core.whitening import fit_pca_whitening


@pytest.fixture(scope="module")
def pairs(shared_data):
    names = ["images-08000.png", "images-12000.png"]
    root = shared_data / "nordland_dev"
    return [str(root / "winter" / n) for n in names], [str(root / "summer" / n) for n in names]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("explain_models")
    torch.manual_seed(0)
    netvlad = build_model(ModelConfig(backbone="tiny", num_clusters=4, whitening_dim=None, image_size=(32, 64)))
    netvlad.pool.init_from_centroids(F.normalize(torch.randn(4, 64), dim=1), alpha=5.0)
    paths = sorted(str(p) for p in (shared_data / "nordland_dev" / "summer").glob("*.png"))[:40]
    netvlad.set_whitening(fit_pca_whitening(embed_paths(netvlad, paths), 16))
    gem = build_model(ModelConfig(backbone="tiny", pooling="gem", whitening_dim=None, image_size=(32, 64)))
    save_model(str(out / "netvlad.pt"), netvlad)
    save_model(str(out / "gem.pt"), gem)
    return str(out / "netvlad.pt"), str(out / "gem.pt"), netvlad


def test_explain_pairs_side_by_side(pairs, two_models, tmp_path, capsys):
    queries, matches = pairs
    netvlad_path, gem_path, netvlad = two_models
    out = tmp_path / "explain"
    code = main(["explain", *queries, "--model", f"trained={netvlad_path}", "--compare", f"other={gem_path}",
                 "--match", matches[0], "--match", matches[1], "--out", str(out)])
    assert code == 0
    assert "cos" in capsys.readouterr().out
    record = json.loads((out / "explain.json").read_text())
    assert [m["name"] for m in record["models"]] == ["trained", "other"]
    maps = np.load(out / "maps.npz")
    for i, entry in enumerate(record["images"]):
        assert open(entry["png"], "rb").read(4) == b"\x89PNG"
        for name in ("trained", "other"):
            contribution = maps[f"{i:03d}__{name}__contribution"]
            assert contribution.shape == (4, 8) and contribution.min() >= 0
            assert contribution.sum() == pytest.approx(1, abs=1e-5)
            per = entry["per_model"][name]
            similarity = maps[f"{i:03d}__{name}__similarity"]
            assert similarity.sum() + per["bias"] == pytest.approx(per["cosine"], abs=1e-4)
    # the cosine is the one retrieval ranks by
    q, m = embed_paths(netvlad, queries), embed_paths(netvlad, matches)
    assert record["images"][0]["per_model"]["trained"]["cosine"] == pytest.approx(float(q[0] @ m[0]), abs=1e-5)


def test_explain_finds_the_best_database_match(pairs, two_models, tmp_path, shared_data):
    from sare_core.data import write_manifest
    from sare_core.data.aligned import load_aligned_traverses

    root = shared_data / "nordland_dev"
    data = load_aligned_traverses(root / "summer", root / "winter")
    data.db_paths, data.db_utm = data.db_paths[790:810], data.db_utm[790:810]
    data.q_paths, data.q_utm = data.q_paths[790:810], data.q_utm[790:810]
    manifest = write_manifest(str(tmp_path / "m.parquet"), data)
    queries, _ = pairs
    netvlad_path, _, netvlad = two_models
    out = tmp_path / "found"
    assert main(["explain", queries[0], "--model", netvlad_path, "--database", manifest, "--out", str(out)]) == 0
    record = json.loads((out / "explain.json").read_text())
    (per,) = record["images"][0]["per_model"].values()
    db = embed_paths(netvlad, data.db_paths)
    q = embed_paths(netvlad, queries[:1])
    assert per["match"] == data.db_paths[int(np.argmax(q @ db.T))]


def test_explain_errors(pairs, two_models, tmp_path, capsys):
    queries, matches = pairs
    netvlad_path, *_ = two_models
    assert main(["explain", queries[0], "--model", "nothere.pt", "--out", str(tmp_path)]) == 2
    assert "nothere.pt" in capsys.readouterr().err
    assert main(["explain", queries[0], "--model", netvlad_path, "--match", matches[0], "--match", matches[1],
                 "--out", str(tmp_path)]) == 2
    assert "matches: 2 given for 1 images" in capsys.readouterr().err
    assert main(["explain", queries[0], "--model", "pretrained:efficientnet_lite0-netvlad", "--out", str(tmp_path)]) == 2
    assert "k-means centroids" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "no.png"), "--model", netvlad_path, "--out", str(tmp_path)]) == 2
    assert "no.png" in capsys.readouterr().err
