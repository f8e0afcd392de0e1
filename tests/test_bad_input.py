"""Bad input, one case per row of docs/BAD_INPUT.md: each makes a `sare` command exit non-zero with one
line on stderr that names the file and the field (or part), and leaves nothing half-written behind."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import yaml

from pipelines.cli import main
from sare_core.models.config import ModelConfig
from sare_core.models.embedding import build_model
from sare_core.models.io import model_payload, save_model
from sare_core.store import StoreMetadata, write_store

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "BAD_INPUT.md"
TINY = {"backbone": "tiny", "num_clusters": 4, "whitening_dim": None, "image_size": [32, 48]}


@pytest.fixture(scope="module")
def images(toy_street_images, tmp_path_factory) -> list[Path]:
    """Six real photos in a folder of their own."""
    folder = tmp_path_factory.mktemp("photos")
    out = []
    for src in toy_street_images[:6]:
        out.append(folder / src.name)
        shutil.copy(src, out[-1])
    return out


def manifest(folder: Path, rows: list[str], name: str = "m.csv", header: str = "path,role,utm_east,utm_north") -> str:
    path = folder / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return str(path)


def good_rows(images) -> list[str]:
    return [f"{images[i]},database,{10 * i},0" for i in range(4)] + [f"{images[4]},query,1,0", f"{images[5]},query,31,0"]


def tiny_model(path: Path, config: dict | None = None) -> str:
    torch.manual_seed(0)
    save_model(str(path), build_model(ModelConfig(**(config or TINY))))
    return str(path)


def store(path: Path, dim: int = 8, model_hash: str = "h") -> str:
    rng = np.random.default_rng(0)
    write_store(str(path), StoreMetadata(dim=dim, model_hash=model_hash), ids=[f"i{k}" for k in range(6)],
                roles=["database"] * 4 + ["query"] * 2, descriptors=rng.normal(size=(6, dim)).astype(np.float32),
                utm=np.array([[0, 0], [10, 0], [20, 0], [30, 0], [1, 0], [31, 0]], float), rows_per_part=3)
    return str(path)


def case_manifest_missing_columns(tmp_path, images):
    m = manifest(tmp_path, [f"{images[0]},database"], header="path,role")
    return ["data", "convert", "--format", "manifest", "--input", m, "--out", str(tmp_path / "out.parquet")], \
        ["m.csv", "utm_east"], [tmp_path / "out.parquet"]


def case_manifest_nan_coordinates(tmp_path, images):
    rows = good_rows(images)
    rows[1] = f"{images[1]},database,nan,0"
    m = manifest(tmp_path, rows)
    return ["data", "convert", "--format", "manifest", "--input", m, "--out", str(tmp_path / "out.parquet")], \
        ["m.csv", "utm_east", "NaN"], [tmp_path / "out.parquet"]


def case_manifest_infinite_coordinates(tmp_path, images):
    rows = good_rows(images)
    rows[4] = f"{images[4]},query,1,inf"
    m = manifest(tmp_path, rows)
    return ["eval", "--manifest", m, "--model", "pretrained:efficientnet_lite0-gem", "--out-dir",
            str(tmp_path / "eval")], ["m.csv", "utm_north", "infinite"], [tmp_path / "eval"]


def case_manifest_duplicate_paths(tmp_path, images):
    rows = good_rows(images) + [f"{images[0]},database,0,0"]
    m = manifest(tmp_path, rows)
    return ["extract", "--dataset", m, "--model", tiny_model(tmp_path / "model.pt"), "--out", str(tmp_path / "s")], \
        ["m.csv", "duplicate", str(images[0].name)], [tmp_path / "s"]


def case_manifest_non_image_file(tmp_path, images):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    rows = good_rows(images) + [f"{text},database,50,0"]
    m = manifest(tmp_path, rows)
    return ["data", "convert", "--format", "manifest", "--input", m, "--out", str(tmp_path / "out.parquet"),
            "--check-images"], ["notes.jpg"], [tmp_path / "out.parquet"]


def case_manifest_path_escapes_the_root(tmp_path, images):
    folder = tmp_path / "dataset"
    folder.mkdir()
    rows = good_rows(images) + ["../../etc/passwd,database,50,0"]
    m = manifest(folder, rows)
    return ["data", "inspect", m, "--map", str(tmp_path / "map.png")], \
        ["m.csv", "'path'", "../../etc/passwd"], [tmp_path / "map.png"]


def case_manifest_unknown_role(tmp_path, images):
    rows = good_rows(images)
    rows[0] = f"{images[0]},databse,0,0"
    m = manifest(tmp_path, rows)
    return ["data", "convert", "--format", "manifest", "--input", m, "--out", str(tmp_path / "out.parquet")], \
        ["m.csv", "'role'", "databse"], [tmp_path / "out.parquet"]


def _train_config(tmp_path, **changes) -> str:
    config = {"name": "bad", "storage_path": str(tmp_path / "runs"), "dataset": "unused.parquet",
              "model": dict(TINY), **changes}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def case_config_unknown_key(tmp_path, images):
    return ["train", "--config", _train_config(tmp_path, num_epochs=3)], \
        ["train.yaml", "num_epochs", "Extra inputs"], [tmp_path / "runs"]


def case_config_wrong_type(tmp_path, images):
    return ["train", "--config", _train_config(tmp_path, epochs="three")], \
        ["train.yaml", "epochs", "integer"], [tmp_path / "runs"]


def case_config_negative_size(tmp_path, images):
    return ["train", "--config", _train_config(tmp_path, batch_size=-4)], \
        ["train.yaml", "batch_size", "greater than or equal to 1"], [tmp_path / "runs"]


def case_config_nested_unknown_key(tmp_path, images):
    return ["train", "--config", _train_config(tmp_path, model={**TINY, "num_clustres": 8})], \
        ["train.yaml", "model.num_clustres"], [tmp_path / "runs"]


def case_config_override_of_a_missing_section(tmp_path, images):
    return ["train", "--config", _train_config(tmp_path), "--set", "name.first=x"], \
        ["name.first", "not a section"], [tmp_path / "runs"]


def case_config_not_yaml(tmp_path, images):
    path = tmp_path / "train.yaml"
    path.write_text("name: [unclosed\n")
    return ["train", "--config", str(path)], ["train.yaml", "not valid YAML"], [tmp_path / "runs"]


def case_mat_without_dbstruct(tmp_path, images):
    path = tmp_path / "pitts30k_test.mat"
    scipy.io.savemat(str(path), {"other": np.zeros(3)})
    return ["data", "convert", "--format", "dbstruct", "--input", str(path), "--out", str(tmp_path / "o.parquet")], \
        ["pitts30k_test.mat", "dbStruct"], [tmp_path / "o.parquet"]


def case_mat_count_mismatch(tmp_path, images):
    path = tmp_path / "bad_counts.mat"
    db = np.array([[str(images[i])] for i in range(3)], dtype=object)
    q = np.array([[str(images[4])]], dtype=object)
    scipy.io.savemat(str(path), {"dbStruct": {
        "whichSet": "test", "dbImageFns": db, "utmDb": np.zeros((2, 3)), "qImageFns": q, "utmQ": np.zeros((2, 1)),
        "numImages": 5, "numQueries": 1, "posDistThr": 25, "posDistSqThr": 625, "nonTrivPosDistSqThr": 100}})
    return ["data", "convert", "--format", "dbstruct", "--input", str(path), "--out", str(tmp_path / "o.parquet")], \
        ["bad_counts.mat", "numImages"], [tmp_path / "o.parquet"]


def case_mat_not_a_mat_file(tmp_path, images):
    path = tmp_path / "garbage.mat"
    path.write_bytes(b"\x00\x01 this is not MATLAB")
    return ["data", "inspect", str(path), "--map", str(tmp_path / "map.png")], ["garbage.mat"], [tmp_path / "map.png"]


def case_store_truncated_part(tmp_path, images):
    uri = store(tmp_path / "store")
    part = sorted((tmp_path / "store").glob("part-*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:200])
    return ["eval", "--store", f"m={uri}", "--out-dir", str(tmp_path / "eval")], [part.name], [tmp_path / "eval"]


def case_store_edited_manifest(tmp_path, images):
    uri = store(tmp_path / "store")
    manifest_path = tmp_path / "store" / "_store.json"
    data = json.loads(manifest_path.read_text())
    data["parts"][0]["num_rows"] += 1
    manifest_path.write_text(json.dumps(data))
    return ["eval", "--store", f"m={uri}", "--out-dir", str(tmp_path / "eval")], ["store"], [tmp_path / "eval"]


def case_store_manifest_not_json(tmp_path, images):
    uri = store(tmp_path / "store")
    (tmp_path / "store" / "_store.json").write_text("{ not json")
    return ["eval", "--store", f"m={uri}", "--out-dir", str(tmp_path / "eval")], ["_store.json"], [tmp_path / "eval"]


def case_store_wrong_dimension(tmp_path, images):
    db = store(tmp_path / "db", dim=8, model_hash="same")
    q = store(tmp_path / "q", dim=16, model_hash="same")
    return ["eval", "--db", db, "--queries", q, "--out-dir", str(tmp_path / "eval")], ["16", "8", "dim"], \
        [tmp_path / "eval"]


def case_store_of_another_model_on_resume(tmp_path, images):
    m = manifest(tmp_path, good_rows(images))
    out = tmp_path / "store"
    store(out, dim=4 * 64, model_hash="another")  # a committed store made by some other model
    before = sorted(p.name for p in out.iterdir())
    return ["extract", "--dataset", m, "--model", tiny_model(tmp_path / "model.pt"), "--out", str(out)], \
        ["store", "model"], [], lambda: sorted(p.name for p in out.iterdir()) == before


def case_checkpoint_pickle_that_runs_code(tmp_path, images):
    path = tmp_path / "evil.pt"

    class RunsCode:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "victim"),))

    (tmp_path / "victim").mkdir()
    with open(path, "wb") as f:
        pickle.dump({"format": "sare-model", "x": RunsCode()}, f)
    m = manifest(tmp_path, good_rows(images))
    return ["extract", "--dataset", m, "--model", str(path), "--out", str(tmp_path / "s")], \
        ["evil.pt", "weights_only"], [tmp_path / "s"], lambda: (tmp_path / "victim").is_dir()


def case_checkpoint_config_does_not_match_weights(tmp_path, images):
    torch.manual_seed(0)
    payload = model_payload(build_model(ModelConfig(**TINY)))
    payload["config"]["num_clusters"] = 8  # the tensors are of 4 clusters
    path = tmp_path / "mismatch.pt"
    torch.save(payload, path)
    m = manifest(tmp_path, good_rows(images))
    return ["extract", "--dataset", m, "--model", str(path), "--out", str(tmp_path / "s")], \
        ["mismatch.pt", "pool"], [tmp_path / "s"]


def case_checkpoint_not_a_model(tmp_path, images):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, path)
    m = manifest(tmp_path, good_rows(images))
    return ["eval", "--manifest", m, "--model", str(path), "--out-dir", str(tmp_path / "eval")], \
        ["weights.pt", "format"], [tmp_path / "eval" / "stores"]


CASES = {name[len("case_"):]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_fails_with_one_clear_line_and_writes_nothing(name, tmp_path, images, capsys):
    args, expected, absent, *extra = CASES[name](tmp_path, images)
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code != 0, f"{name}: exit status 0"
    lines = err.splitlines()
    assert len(lines) == 1, f"{name}: expected one line on stderr, got:\n{err}"
    for fragment in expected:
        assert fragment.lower() in lines[0].lower(), f"{name}: {fragment!r} not in {lines[0]!r}"
    for path in absent:
        assert not Path(path).exists(), f"{name}: {path} was written"
    for check in extra:
        assert check(), f"{name}: {check}"


def test_the_doc_table_lists_every_case():
    rows = re.findall(r"^\| `([a-z_]+)` \|", DOC.read_text(), flags=re.M)
    assert sorted(rows) == sorted(CASES)
