import json

import numpy as np
import pytest

from pipelines.cli import main
from pipelines.evaluate.stores import EvalConfig, ModelStores, run
from sare_core.data import positives_within
from sare_core.evaluation import recall_at_n
from sare_core.store import StoreMetadata, write_store


def make_geometry(seed=0, n_db=600, n_q=80):
    rng = np.random.default_rng(seed)
    db_utm = rng.uniform(0, 800, size=(n_db, 2))
    q_utm = db_utm[rng.choice(n_db, n_q, replace=False)] + rng.normal(0, 8, size=(n_q, 2))
    return db_utm, q_utm


def descriptors(utm, noise, seed):
    """Descriptors that encode position plus noise: less noise = a better model."""
    rng = np.random.default_rng(seed)
    x = np.hstack([utm / 60.0, noise * rng.normal(size=(len(utm), 14))])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_model_store(uri, noise, model_hash, db_utm, q_utm, ids_db=None, ids_q=None):
    ids_db = ids_db or [f"db/{i:05d}.jpg" for i in range(len(db_utm))]
    ids_q = ids_q or [f"q/{i:05d}.jpg" for i in range(len(q_utm))]
    desc = np.vstack([descriptors(db_utm, noise, 1), descriptors(q_utm, noise, 2)])
    write_store(uri, StoreMetadata(dim=16, dataset="synthetic-geometry", model_hash=model_hash),
                ids=ids_db + ids_q, roles=["database"] * len(db_utm) + ["query"] * len(q_utm),
                descriptors=desc, utm=np.vstack([db_utm, q_utm]), splits="test", rows_per_part=150)
    return desc[: len(db_utm)], desc[len(db_utm):]


@pytest.fixture
def two_models(tmp_path):
    db_utm, q_utm = make_geometry()
    weak = write_model_store(str(tmp_path / "weak"), 3.0, "weak0001", db_utm, q_utm)
    strong = write_model_store(str(tmp_path / "strong"), 0.6, "strong01", db_utm, q_utm)
    return tmp_path, db_utm, q_utm, weak, strong


def test_sare_eval_compares_two_models(two_models, capsys):
    tmp, db_utm, q_utm, weak, strong = two_models
    out = tmp / "report"
    code = main(["eval", "--store", f"off-the-shelf={tmp / 'weak'}", "--store", f"trained={tmp / 'strong'}",
                 "--out-dir", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "ratio trained/off-the-shelf" in printed and "R@10" in printed
    report = json.loads((out / "eval.json").read_text())
    positives = positives_within(q_utm, db_utm, 25.0)
    for name, (db, q) in (("off-the-shelf", weak), ("trained", strong)):
        expected = recall_at_n(q, db, positives, ns=(1, 2, 3, 4, 5, 10))
        got = {int(n): r for n, r in report["results"][name]["recalls"].items()}
        assert got == pytest.approx(expected)
    assert report["results"]["trained"]["recalls"]["1"] > report["results"]["off-the-shelf"]["recalls"]["1"]
    # Localisation error of the top-1 match, in metres, from a brute-force ranking of the same descriptors.
    db, q = strong
    top1 = np.argmin(((q[:, None, :] - db[None]) ** 2).sum(-1), axis=1)
    errors = np.linalg.norm(db_utm[top1] - q_utm, axis=1)
    localization = report["results"]["trained"]["localization"]
    assert localization["median_m"] == pytest.approx(float(np.median(errors)), rel=1e-6)
    assert localization["within_25m"] == pytest.approx(float((errors <= 25).mean()))
    assert (out / "recall_at_n.png").read_bytes()[:4] == b"\x89PNG"
    assert "Retrieval report" in (out / "report.html").read_text()


@pytest.mark.parametrize("mode", ["stream", "cpu_shards", "ray"])
def test_search_modes_give_identical_results(two_models, mode, ray_local):
    tmp, *_ = two_models
    base = EvalConfig(models=[ModelStores(name="m", database=str(tmp / "strong"))], out_dir=str(tmp / "flat"),
                      search_mode="flat", report_queries=0)
    other = base.model_copy(update={"search_mode": mode, "out_dir": str(tmp / mode), "ray_shards": 3})
    assert run(other)["m"].recalls == run(base)["m"].recalls
    assert run(other)["m"].search_mode == mode


@pytest.mark.parametrize("mode", ["flat", "stream", "ray"])
def test_truncate_scores_the_first_k_dims_renormalised(two_models, mode, ray_local, capsys):
    from sare_core.descriptors import truncate

    tmp, db_utm, q_utm, _, (db, q) = two_models
    positives = positives_within(q_utm, db_utm, 25.0)
    config = EvalConfig(models=[ModelStores(name="m", database=str(tmp / "strong"))], out_dir=str(tmp / mode),
                        search_mode=mode, report_queries=0, truncate=3, ns=[1, 5])
    expected = recall_at_n(truncate(q, 3), truncate(db, 3), positives, ns=(1, 5))
    assert run(config)["m"].recalls == pytest.approx(expected)
    assert expected != recall_at_n(q, db, positives, ns=(1, 5))  # three of 16 dims: another ranking
    assert main(["eval", "--store", f"m={tmp / 'strong'}", "--truncate", "3", "--ns", "1,5", "--search-mode", mode,
                 "--out-dir", str(tmp / f"cli_{mode}")]) == 0
    saved = json.loads((tmp / f"cli_{mode}" / "eval.json").read_text())["results"]["m"]
    assert {int(n): r for n, r in saved["recalls"].items()} == pytest.approx(expected)
    assert saved["extra"]["truncate"] == 3
    assert main(["eval", "--store", f"m={tmp / 'strong'}", "--truncate", "17", "--out-dir", str(tmp / "x")]) == 2
    assert "truncate: 17" in capsys.readouterr().err


def test_html_report_shows_real_images(tmp_path, toy_street_images):
    rng = np.random.default_rng(0)
    db_ids = [p.name for p in toy_street_images if "db" in p.name]
    q_ids = [p.name for p in toy_street_images if p.name.startswith("q")]
    root = toy_street_images[0].parent.parent
    ids_db = [f"database/{i}" for i in db_ids]
    ids_q = [f"queries/{i}" for i in q_ids]
    db_utm = np.column_stack([np.arange(len(ids_db)) * 10.0, np.zeros(len(ids_db))])
    q_utm = db_utm[:len(ids_q)] + 3
    write_store(str(tmp_path / "s"), StoreMetadata(dim=4, model_hash="h"), ids=ids_db + ids_q,
                roles=["database"] * len(ids_db) + ["query"] * len(ids_q),
                descriptors=rng.normal(size=(len(ids_db) + len(ids_q), 4)).astype(np.float32),
                utm=np.vstack([db_utm, q_utm]))
    run(EvalConfig(models=[ModelStores(name="m", database=str(tmp_path / "s"))], out_dir=str(tmp_path / "r"),
                   images_root=str(root), report_queries=3))
    page = (tmp_path / "r" / "report.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 3 * 6  # each query plus its top 5, all real thumbnails


def test_eval_on_s3_stores(s3_uri, tmp_path):
    db_utm, q_utm = make_geometry(seed=1, n_db=200, n_q=30)
    db, q = write_model_store(f"{s3_uri}/stores/m", 1.0, "h3", db_utm, q_utm)
    result = run(EvalConfig(models=[ModelStores(name="m", database=f"{s3_uri}/stores/m")],
                            out_dir=f"{s3_uri}/reports/m", report_queries=2))
    assert result["m"].recalls == pytest.approx(recall_at_n(q, db, positives_within(q_utm, db_utm, 25.0), ns=(1, 2, 3, 4, 5, 10)))
    import fsspec

    assert json.loads(fsspec.open(f"{s3_uri}/reports/m/eval.json").open().read())["results"]["m"]["num_queries"] == 30


def test_errors_name_the_problem(two_models, capsys, tmp_path):
    tmp, *_ = two_models
    assert main(["eval", "--db", str(tmp / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["eval", "--db", str(tmp / "weak"), "--queries", str(tmp / "strong")]) == 2
    assert "different models" in capsys.readouterr().err
    assert main(["eval", "--store", "justaname"]) == 2
    assert "NAME=URI" in capsys.readouterr().err
