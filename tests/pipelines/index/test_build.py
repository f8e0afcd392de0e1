"""`sare index build` on Ray: shards built in parallel tasks write their rows into the one re-ranking file,
and the sharded index answers as the one-process build does."""

import json

import numpy as np

from pipelines.cli import main
from sare_core.index.store_index import LocalizationIndex
from sare_core.store import StoreMetadata, write_store


def test_sharded_reranked_ivfpq_build_equals_one_process(tmp_path, ray_local, indexed_tiny_city, capsys):
    rng = np.random.default_rng(0)
    db = rng.normal(size=(2000, 32)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    store = str(tmp_path / "store")
    write_store(store, StoreMetadata(dim=32, model_hash="m"), ids=[f"{i:05d}.jpg" for i in range(2000)],
                roles="database", descriptors=db, utm=np.zeros((2000, 2)), splits="test", rows_per_part=300)
    args = ["index", "build", "--store", store, "--kind", "ivfpq", "--nlist", "8", "--pq-m", "4", "--rerank", "40"]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    assert main(args + ["--out", str(tmp_path / "three"), "--shards", "3"]) == 0
    record = json.loads(open(tmp_path / "three" / "index.json").read())
    assert [s["rows"] for s in record["shards"]] == [900, 600, 500] and record["spec"]["rerank"] == 40
    one, three = LocalizationIndex.load(str(tmp_path / "one")), LocalizationIndex.load(str(tmp_path / "three"))
    np.testing.assert_array_equal(one.refine, db.astype(np.float16))
    np.testing.assert_array_equal(three.refine, one.refine)
    queries = db[::100] + 0.05 * rng.normal(size=(20, 32)).astype(np.float32)
    assert [[m.id for m in r] for r in one.search(queries, 3)] == [[m.id for m in r] for r in three.search(queries, 3)]
    # The tiny city's database (under 256 images) is too small for IVF-PQ: said before any work.
    work = indexed_tiny_city[0]
    capsys.readouterr()
    assert main(["index", "build", "--store", str(work / "store"), "--out", str(tmp_path / "x"), "--kind", "ivfpq",
                 "--nlist", "4"]) != 0
    assert "cannot train its 256-entry codebooks; use kind flat" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
