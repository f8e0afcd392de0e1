"""From photos to positions with the commands: `sare extract` -> `sare index build` -> `sare locate`."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.cli import main
from sare_core.models.config import ModelConfig
from sare_core.models.embedding import build_model
from sare_core.models.io import save_model

TINY = {"backbone": "tiny", "num_clusters": 8, "whitening_dim": None, "image_size": [72, 96]}


@pytest.fixture
def indexed_city(indexed_tiny_city):
    return indexed_tiny_city


def test_database_photos_are_placed_where_they_were_taken(indexed_city, capsys):
    work, model, index, test = indexed_city
    photos = [test.db_paths[i] for i in (0, 17, 42)]
    out = work / "located"
    capsys.readouterr()
    assert main(["locate", *photos, "--model", model, "--index", index, "--k", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "locate.json").read_text())["results"]
    for photo, i, result in zip(photos, (0, 17, 42), results):
        best = result["matches"][0]
        assert best["distance"] == pytest.approx(0.0, abs=1e-5)  # the photo itself is in the database
        assert Path(best["path"]).resolve() == Path(photo).resolve()
        assert (best["utm_east"], best["utm_north"]) == pytest.approx(tuple(test.db_utm[i]))
        p = result["position"]
        assert np.hypot(p["utm_east"] - test.db_utm[i, 0], p["utm_north"] - test.db_utm[i, 1]) <= 25.0
        assert 0 < p["support"] <= 1 and p["spread"] >= 0 and len(result["matches"]) == 5
        assert Path(result["sheet"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert Path(photo).name in printed
    page = (out / "locate.html").read_text()
    assert page.count("data:image/png;base64,") == 3


def test_query_photos_get_matches_and_an_estimate(indexed_city):
    _, model, index, test = indexed_city
    from pipelines.locate.locate import LocateConfig, run

    results = run(LocateConfig(model=model, index=index, photos=test.q_paths[:4], k=8,
                               truth=[tuple(u) for u in test.q_utm[:4]]))
    for result in results:
        assert len(result["matches"]) == 8 and result["position"] is not None
        assert result["error"] == pytest.approx(np.hypot(result["position"]["utm_east"] - result["truth"]["utm_east"],
                                                         result["position"]["utm_north"] - result["truth"]["utm_north"]))


def test_a_model_that_did_not_make_the_index_is_refused(indexed_city, tmp_path, capsys):
    _, _, index, test = indexed_city
    torch.manual_seed(1)
    other = str(tmp_path / "other.pt")
    save_model(other, build_model(ModelConfig(**TINY)))
    assert main(["locate", test.q_paths[0], "--model", other, "--index", index]) == 2
    err = capsys.readouterr().err
    assert "built from descriptors of model" in err and len(err.strip().splitlines()) == 1


def test_search_settings_are_applied_and_a_bad_one_is_refused(indexed_city, capsys):
    work, model, index, split = indexed_city
    photo = str(Path(split.q_paths[0]))
    # A flat index takes nprobe (it has no lists: the setting is recorded and changes nothing).
    assert main(["locate", "--model", model, "--index", index, photo, "--set", "search.nprobe=4", "--json"]) == 0
    first = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert main(["locate", "--model", model, "--index", index, photo, "--json"]) == 0
    second = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert [m["id"] for m in first[0]["matches"]] == [m["id"] for m in second[0]["matches"]]
    # Re-ranking needs the float16 copies an index built with --rerank has.
    assert main(["locate", "--model", model, "--index", index, photo, "--set", "search.rerank=5"]) != 0
    assert "built without re-ranking vectors" in capsys.readouterr().err
