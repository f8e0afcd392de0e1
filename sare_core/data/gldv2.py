"""Google Landmarks v2: training labels and the retrieval benchmark, as label-style PlaceDatasets.

Files (as released):
- train.csv: `id,url,landmark_id`; images at `train/a/b/c/abc....jpg` (first three characters of the id).
- index.csv: `id` (the retrieval database); images at `index/a/b/c/<id>.jpg`.
- test.csv: `id` (the queries); images at `test/a/b/c/<id>.jpg`.
- retrieval_solution_v2.1.csv: `id,images,Usage`; `images` is the space-separated list of the index ids that
  are the query's positives, or `None` for distractor queries (no positives); Usage is Public/Private/Ignored.

The retrieval solution lists positives per query, not labels. The reader turns it into labels with the
connected components of the query-index graph (queries linked through shared index images get one label;
index images no query lists get -1, distractor queries get -1). When the components reproduce every query's
list exactly (the case for the released file, where a landmark's queries all list the same index images),
labels alone are the ground truth; otherwise the exact lists are also kept in `extras['q_positives']`,
which `PlaceDataset.positives()` prefers.
"""

from __future__ import annotations

import logging
import os

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .place_dataset import PlaceDataset
from .tables import column_ints, column_strings, duplicate_rows, duplicates_text, read_csv_table, rows_text

log = logging.getLogger(__name__)

SOLUTION_NAMES = ("retrieval_solution_v2.1.csv", "retrieval_solution_v2.csv", "retrieval_solution.csv")


def gldv2_image_path(images_root: str, image_id: str, ext: str = ".jpg") -> str:
    """`images_root/a/b/c/<id>.jpg` for id 'abc...'."""
    if len(image_id) < 3:
        raise ValueError(f"Google Landmarks image id {image_id!r} is shorter than 3 characters")
    return os.path.join(images_root, image_id[0], image_id[1], image_id[2], image_id + ext)


def _ids(path: str) -> list[str]:
    table = read_csv_table(path, required=("id",))
    ids = column_strings(table, "id", path)
    dups = duplicate_rows(ids)
    if dups:
        raise ValueError(f"{path}: duplicate ids: {duplicates_text(dups)}")
    return ids


def load_gldv2_train(
    csv_path: str,
    images_root: str | None = None,
    queries_per_landmark: int = 1,
    min_images_per_landmark: int = 2,
    seed: int = 0,
    name: str = "gldv2_train",
) -> PlaceDataset:
    """train.csv -> label dataset: per landmark with >= `min_images_per_landmark` images, a random
    `queries_per_landmark` of them (at most all but one) become queries; every other image is database.

    Labels are the landmark ids, so a query's positives are the database images of its landmark.
    images_root defaults to `train/` next to the CSV. Rows keep the CSV order within db and queries.
    """
    if queries_per_landmark < 1 or min_images_per_landmark < 2:
        raise ValueError("queries_per_landmark must be >= 1 and min_images_per_landmark >= 2")
    csv_path = os.fspath(csv_path)
    table = read_csv_table(csv_path, required=("id", "landmark_id"))
    ids = column_strings(table, "id", csv_path)
    labels = column_ints(table, "landmark_id", csv_path)
    dups = duplicate_rows(ids)
    if dups:
        raise ValueError(f"{csv_path}: duplicate ids: {duplicates_text(dups)}")
    if (labels < 0).any():
        raise ValueError(f"{csv_path}: field 'landmark_id' is negative in rows {rows_text(np.flatnonzero(labels < 0))}")
    images_root = images_root or os.path.join(os.path.dirname(os.path.abspath(csv_path)), "train")

    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(ids))
    order = shuffled[np.argsort(labels[shuffled], kind="stable")]  # grouped by label, random within
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    counts = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, counts)
    group_count = np.repeat(counts, counts)
    is_query_sorted = (group_count >= min_images_per_landmark) & (rank < np.minimum(queries_per_landmark, group_count - 1))
    is_query = np.zeros(len(ids), dtype=bool)
    is_query[order] = is_query_sorted
    q_rows, db_rows = np.flatnonzero(is_query), np.flatnonzero(~is_query)
    log.info("%s: %d landmarks, %d database images, %d queries", csv_path, len(starts), len(db_rows), len(q_rows))
    return PlaceDataset(
        name=name,
        db_paths=[gldv2_image_path(images_root, ids[i]) for i in db_rows],
        q_paths=[gldv2_image_path(images_root, ids[i]) for i in q_rows],
        db_labels=labels[db_rows],
        q_labels=labels[q_rows],
        split="train",
    )


def _read_solution(path: str, index_pos: dict[str, int]) -> tuple[dict[str, tuple[list[int], str]], int]:
    """{query id: (database indices of its positives, Usage)} and how many listed index ids were unknown."""
    table = read_csv_table(path, required=("id", "images"))
    ids = column_strings(table, "id", path)
    images = table.column("images").to_pylist()
    usage = table.column("Usage").to_pylist() if "Usage" in table.column_names else [""] * len(ids)
    dups = duplicate_rows(ids)
    if dups:
        raise ValueError(f"{path}: duplicate query ids: {duplicates_text(dups)}")
    empty = [i for i, v in enumerate(images) if v is None or not v.strip()]
    if empty:
        raise ValueError(f"{path}: field 'images' is empty in rows {rows_text(empty)} (use None for distractors)")
    out, unknown = {}, 0
    for qid, listed, use in zip(ids, images, usage, strict=True):
        tokens = listed.split()
        if tokens == ["None"]:
            out[qid] = ([], use or "")
            continue
        known = [index_pos[t] for t in tokens if t in index_pos]
        unknown += len(tokens) - len(known)
        out[qid] = (sorted(set(known)), use or "")
    return out, unknown


def _labels_from_positives(positives: list[list[int]], num_db: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Connected components of the query-database graph as labels; (db_labels, q_labels, exact)."""
    num_q = len(positives)
    q_idx = np.repeat(np.arange(num_q), [len(p) for p in positives])
    db_idx = np.concatenate([np.asarray(p, dtype=np.int64) for p in positives]) if num_q else np.zeros(0, int)
    graph = coo_matrix((np.ones(len(q_idx)), (q_idx + num_db, db_idx)), shape=(num_db + num_q,) * 2)
    _, comp = connected_components(graph, directed=False)
    db_comp, q_comp = comp[:num_db], comp[num_db:]
    db_linked = np.zeros(num_db, dtype=bool)
    db_linked[db_idx] = True
    q_linked = np.array([len(p) > 0 for p in positives], dtype=bool)
    used = np.unique(np.r_[db_comp[db_linked], q_comp[q_linked]])
    relabel = np.full(len(comp), -1, dtype=np.int64)
    relabel[used] = np.arange(len(used))
    db_labels = np.where(db_linked, relabel[db_comp], -1)
    q_labels = np.where(q_linked, relabel[q_comp], -1)
    per_label = np.bincount(db_labels[db_labels >= 0], minlength=len(used))
    exact = all(len(p) == per_label[q_labels[i]] for i, p in enumerate(positives) if len(p))
    return db_labels, q_labels, exact


def load_gldv2_retrieval(
    root: str,
    index_csv: str | None = None,
    test_csv: str | None = None,
    solution_csv: str | None = None,
    index_images: str | None = None,
    test_images: str | None = None,
    usage: tuple[str, ...] | None = None,
    keep_distractors: bool = True,
    name: str = "gldv2_retrieval",
) -> PlaceDataset:
    """The GLDv2 retrieval benchmark: index.csv = database, test.csv = queries, positives from the solution.

    root: folder with index.csv, test.csv, retrieval_solution_v2.1.csv and the `index/`, `test/` image
    trees (each overridable). usage: keep only queries whose Usage is listed (e.g. ("Public", "Private"));
    keep_distractors=False drops queries whose solution is None. extras: `q_usage` (M,) strings, and
    `q_positives` when labels cannot express the solution exactly (see module doc).
    Raises ValueError naming the file when a column is missing, an id is duplicated, or a test id has no
    solution row. Positives missing from index.csv (a trimmed index) are dropped with a warning.
    """
    root = os.fspath(root)
    index_csv = index_csv or os.path.join(root, "index.csv")
    test_csv = test_csv or os.path.join(root, "test.csv")
    if solution_csv is None:
        found = [os.path.join(root, n) for n in SOLUTION_NAMES if os.path.isfile(os.path.join(root, n))]
        if not found:
            raise FileNotFoundError(f"{root}: no retrieval solution file (looked for {list(SOLUTION_NAMES)})")
        solution_csv = found[0]
    index_images = index_images or os.path.join(os.path.abspath(root), "index")
    test_images = test_images or os.path.join(os.path.abspath(root), "test")

    index_ids = _ids(index_csv)
    test_ids = _ids(test_csv)
    index_pos = {v: i for i, v in enumerate(index_ids)}
    solution, unknown = _read_solution(solution_csv, index_pos)
    without = [i for i, q in enumerate(test_ids) if q not in solution]
    if without:
        raise ValueError(f"{test_csv}: test ids without a row in {solution_csv}: rows {rows_text(without)}")
    if unknown:
        log.warning("%s: %d listed positives are not in %s; dropped", solution_csv, unknown, index_csv)

    keep = []
    for qid in test_ids:
        positives, use = solution[qid]
        if usage is not None and use not in usage:
            continue
        if not keep_distractors and not positives:
            continue
        keep.append(qid)
    if len(keep) < len(test_ids):
        log.info("%s: kept %d of %d queries (usage=%s, keep_distractors=%s)", test_csv, len(keep),
                 len(test_ids), usage, keep_distractors)
    positives = [solution[q][0] for q in keep]
    db_labels, q_labels, exact = _labels_from_positives(positives, len(index_ids))
    extras: dict = {"q_usage": np.array([solution[q][1] for q in keep], dtype=object)}
    if not exact:
        log.info("%s: positives are not an equivalence by landmark; storing explicit per-query lists",
                 solution_csv)
        extras["q_positives"] = [np.asarray(p, dtype=np.int64) for p in positives]
    return PlaceDataset(
        name=name,
        db_paths=[gldv2_image_path(index_images, i) for i in index_ids],
        q_paths=[gldv2_image_path(test_images, q) for q in keep],
        db_labels=db_labels,
        q_labels=q_labels,
        split="test",
        extras=extras,
    )


def is_gldv2_folder(root: str) -> bool:
    """True when `root` holds index.csv, test.csv and a retrieval solution file (train-only: train.csv)."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        return False
    names = set(os.listdir(root))
    return ({"index.csv", "test.csv"} <= names and bool(names & set(SOLUTION_NAMES))) or "train.csv" in names
