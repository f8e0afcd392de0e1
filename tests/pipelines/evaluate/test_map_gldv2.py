"""mAP@k end to end through the commands, on a dataset in Google Landmarks v2's released format: `sare data
convert --format gldv2`, `sare extract`, `sare eval` (label ground truth from the retrieval solution)."""

import json
import os

import numpy as np
import pytest

from pipelines.cli import main
from sare_core.data.gldv2 import load_gldv2_retrieval
from sare_core.store import open_store
from tests.sare_core.data.test_gldv2 import make_gld_root


def ap_by_hand(distances: np.ndarray, relevant: set[int], k: int) -> float:
    """Average precision over the first k results, divided by min(#relevant, k) (the GLDv2 metric)."""
    order = np.argsort(distances, kind="stable")[:k]
    hits, total = 0, 0.0
    for rank, index in enumerate(order, start=1):
        if index in relevant:
            hits += 1
            total += hits / rank
    return total / min(len(relevant), k)


def test_map_at_k_through_convert_extract_and_eval(tmp_path, toy_street_images, ray_local, capsys):
    root = make_gld_root(tmp_path / "gldv2", toy_street_images)
    manifest = str(tmp_path / "gld.parquet")
    assert main(["data", "convert", "--format", "gldv2", "--input", str(root), "--out", manifest]) == 0
    model = tmp_path / "model.yaml"
    model.write_text("backbone: tiny\nnum_clusters: 8\nimage_size: [48, 64]\nwhitening_dim: null\n")
    store = str(tmp_path / "store")
    assert main(["extract", "--dataset", manifest, "--model", str(model), "--out", store, "--no-progress"]) == 0
    capsys.readouterr()
    out = tmp_path / "eval"
    assert main(["eval", "--store", f"tiny={store}", "--map-k", "3", "--ns", "1,3", "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "eval.json").read_text())["results"]["tiny"]
    assert result["map_k"] == 3 and f"mAP@3 {100 * result['map_at_k']:.2f}" in printed

    # By hand: the store's descriptors, positives from the released solution file's lists.
    dataset = load_gldv2_retrieval(str(root))
    read = open_store(store).read()
    by_name = {os.path.basename(image_id): row for row, image_id in enumerate(read.ids)}
    db_rows = [by_name[os.path.basename(p)] for p in dataset.db_paths]
    q_rows = [by_name[os.path.basename(p)] for p in dataset.q_paths]
    db, q = read.descriptors[db_rows], read.descriptors[q_rows]
    aps = []
    for qi, positives in enumerate(dataset.positives()):
        if len(positives):
            aps.append(ap_by_hand(((db - q[qi]) ** 2).sum(1), set(positives.tolist()), k=3))
    assert len(aps) == 3  # three queries list positives; the two distractors are not scored
    assert result["map_at_k"] == pytest.approx(float(np.mean(aps)))
    assert result["queries_without_positives"] == 2
