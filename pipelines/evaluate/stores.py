"""The evaluation stage: descriptor stores -> exact search -> Recall@N (mAP@k, localisation error) ->
table, JSON, Recall@N curve PNG and HTML report.

Each evaluated model is a database store and a query store (the same URI when one store holds both
roles). Ground truth comes from the stores' own columns: database rows within `radius` metres of a query
(UTM), or sharing its label (label datasets).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sare_core.data import positives_same_label, positives_within
from sare_core.evaluation import (
    Evaluation,
    evaluate_ranking,
    format_recall_table,
    plot_recall_curves,
    write_html_report,
    write_json,
)
from sare_core.evaluation.search import SEARCH_MODES, SearchResult
from sare_core.evaluation.store_search import (
    StoreRows,
    read_descriptors,
    read_rows,
    resolve_mode,
    search_store,
)
from sare_core.store import DescriptorStore, open_store

log = logging.getLogger(__name__)

SEED_NS = (1, 2, 3, 4, 5, 10)  # the columns of the SARE seed's result table


class ModelStores(BaseModel):
    """One row of the table: a name and the stores holding its database and query descriptors."""

    model_config = ConfigDict(extra="forbid")
    name: str
    database: str
    queries: str | None = Field(None, description="defaults to the database store (both roles in one store)")


class EvalConfig(BaseModel):
    """What `sare eval` does. Recalls are reported in percent; radius in metres."""

    model_config = ConfigDict(extra="forbid")
    models: list[ModelStores] = Field(min_length=1)
    out_dir: str = "runs/eval"
    ns: list[int] = Field(default_factory=lambda: list(SEED_NS))
    radius: float | None = Field(None, gt=0, description="positives within this many metres (default: store's, else 25)")
    map_k: int | None = Field(None, ge=1, description="mAP@k; default 100 for label datasets, off for UTM")
    split: str | None = None
    search_mode: Literal[SEARCH_MODES + ("ray",)] = "auto"  # type: ignore[valid-type]
    ray_shards: int = Field(0, ge=0, description="shards for search_mode=ray (0: one per store part)")
    memory_budget_gb: float | None = Field(None, gt=0)
    images_root: str | None = Field(None, description="where image ids resolve to files, for the HTML report")
    units: str = Field("m", description="unit of the UTM columns in printed distances: m, or e.g. frames when "
                       "utm_east is a frame index")
    report_queries: int = Field(12, ge=0)
    seed: int = 0

    @field_validator("ns")
    @classmethod
    def _positive_ns(cls, ns: list[int]) -> list[int]:
        if not ns or min(ns) < 1:
            raise ValueError("ns must be a non-empty list of positive integers")
        return sorted(set(ns))


def ground_truth(db: StoreRows, q: StoreRows, radius: float) -> list[np.ndarray]:
    if db.is_geographic and q.is_geographic:
        return positives_within(q.utm, db.utm, radius)
    if (db.labels >= 0).any():
        return positives_same_label(q.labels, db.labels)
    raise ValueError("stores carry neither finite UTM coordinates nor labels: no ground truth to evaluate against")


def _ray_search(queries: np.ndarray, store: DescriptorStore, k: int, split: str | None, shards: int) -> SearchResult:
    from .ray_search import Shard, ray_sharded_search

    parts = [p for p in store.parts if p.kind == "descriptors" and p.rows("database", split) > 0]
    groups = [parts] if not parts else np.array_split(np.arange(len(parts)), shards or len(parts))
    shard_list, offset = [], 0
    for group in groups:
        names = [parts[i].name for i in group]
        rows = sum(parts[i].rows("database", split) for i in group)
        if rows == 0:
            continue
        shard_list.append(Shard(functools.partial(_load_parts, store.uri, names, split), offset))
        offset += rows
    return ray_sharded_search(queries, shard_list, k)


def _load_parts(uri: str, part_names: list[str], split: str | None) -> np.ndarray:
    store = open_store(uri)
    chunks = [b.descriptors for b in store.iter_batches(role="database", split=split, columns=["descriptor"],
                                                          parts=part_names)]
    return np.concatenate(chunks) if chunks else np.zeros((0, store.dim), np.float32)


def evaluate_model(entry: ModelStores, config: EvalConfig) -> tuple[Evaluation, dict]:
    """Search and score one model's stores; returns the metrics and what the HTML report needs."""
    db_store = open_store(entry.database)
    q_store = open_store(entry.queries or entry.database)
    if db_store.dim != q_store.dim:
        raise ValueError(f"{entry.name}: database store has {db_store.dim}-dim descriptors, query store {q_store.dim}")
    if db_store.metadata.model_hash != q_store.metadata.model_hash:
        raise ValueError(f"{entry.name}: database and query stores come from different models "
                         f"({db_store.metadata.model_hash} vs {q_store.metadata.model_hash})")
    db_rows = read_rows(db_store, "database", config.split)
    q_rows = read_rows(q_store, "query", config.split)
    if len(db_rows.ids) == 0 or len(q_rows.ids) == 0:
        raise ValueError(f"{entry.name}: {len(db_rows.ids)} database and {len(q_rows.ids)} query rows"
                         + (f" in split {config.split!r}" if config.split else "") + "; need both")
    q_desc = read_descriptors(q_store, "query", config.split)
    radius = config.radius or float(db_store.metadata.provenance.get("pos_dist_thr", 25.0))
    positives = ground_truth(db_rows, q_rows, radius)
    label_data = not (db_rows.is_geographic and q_rows.is_geographic)
    map_k = config.map_k or (100 if label_data else None)
    k = max(max(config.ns), map_k or 0, 5)
    budget = int(config.memory_budget_gb * 2**30) if config.memory_budget_gb else None
    started = time.perf_counter()
    if config.search_mode == "ray":
        result = _ray_search(q_desc, db_store, k, config.split, config.ray_shards)
    else:
        mode = resolve_mode(db_store, config.search_mode, config.split, budget)
        result = search_store(q_desc, db_store, k, mode=mode, split=config.split, memory_budget_bytes=budget)
    seconds = time.perf_counter() - started
    evaluation = evaluate_ranking(
        result.indices, positives, len(db_rows.ids), config.ns,
        q_utm=None if label_data else q_rows.utm, db_utm=None if label_data else db_rows.utm,
        map_k=map_k, search_mode=result.mode,
    )
    evaluation.extra = {"search_seconds": seconds, "radius_m": None if label_data else radius,
                        "database_store": db_store.uri, "query_store": q_store.uri,
                        "model_hash": db_store.metadata.model_hash}
    log.info("%s: %d queries x %d database in %.2f s (%s)", entry.name, len(q_rows.ids), len(db_rows.ids),
             seconds, result.mode)
    return evaluation, {"db": db_rows, "q": q_rows, "result": result, "positives": positives}


def _sample_report_rows(config: EvalConfig, detail: dict) -> list[dict]:
    q, db, result, positives = detail["q"], detail["db"], detail["result"], detail["positives"]
    rng = np.random.default_rng(config.seed)
    picks = np.sort(rng.choice(len(q.ids), size=min(config.report_queries, len(q.ids)), replace=False))

    def path(image_id: str) -> str | None:
        if config.images_root is None:
            return image_id if os.path.isfile(image_id) else None
        return os.path.join(config.images_root, image_id)

    rows = []
    for qi in picks:
        retrieved = []
        for rank in range(min(5, result.indices.shape[1])):
            di = int(result.indices[qi, rank])
            if di < 0:
                break
            retrieved.append({"id": str(db.ids[di]), "path": path(str(db.ids[di])),
                              "correct": bool(np.isin(di, positives[qi])), "distance": float(result.distances[qi, rank])})
        rows.append({"query_id": str(q.ids[qi]), "query_path": path(str(q.ids[qi])), "retrieved": retrieved})
    return rows


def run(config: EvalConfig) -> dict[str, Evaluation]:
    """Evaluate every model; print the table and write eval.json, recall_at_n.png and report.html."""
    names = [m.name for m in config.models]
    if len(set(names)) != len(names):
        raise ValueError(f"models: names must be distinct, got {names}")
    results: dict[str, Evaluation] = {}
    details: dict[str, dict] = {}
    for entry in config.models:
        results[entry.name], details[entry.name] = evaluate_model(entry, config)
    table = format_recall_table({n: e.recalls for n, e in results.items()}, config.ns)
    print(table)
    for name, ev in results.items():
        notes = [f"{ev.num_queries} queries, {ev.num_database} database images"]
        if ev.queries_without_positives:
            notes.append(f"{ev.queries_without_positives} queries have no positive (counted as misses)")
        if ev.map_at_k is not None:
            notes.append(f"mAP@{ev.map_k} {100 * ev.map_at_k:.2f}")
        if ev.localization and config.units == "m":
            notes.append(f"top-1 error median {ev.localization['median_m']:.1f} m, "
                         f"{100 * ev.localization['within_25m']:.1f}% within 25 m")
        elif ev.localization:
            notes.append(f"top-1 error median {ev.localization['median_m']:.1f} {config.units}")
        print(f"{name}: " + "; ".join(notes))
    if "://" not in config.out_dir:
        os.makedirs(config.out_dir, exist_ok=True)
    out = config.out_dir.rstrip("/")
    write_json(f"{out}/eval.json", {"config": config.model_dump(mode="json"), "table": table,
                                     "results": {n: e.to_json() for n, e in results.items()}})
    plot_recall_curves({n: e.recalls for n, e in results.items()}, f"{out}/recall_at_n.png")
    last = names[-1]
    summary = table.splitlines() + [
        f"{n}: {e.num_queries} queries, {e.queries_without_positives} without positives" for n, e in results.items()]
    write_html_report(f"{out}/report.html", f"Retrieval report: {last}", summary,
                      _sample_report_rows(config, details[last]))
    log.info("wrote %s/eval.json, recall_at_n.png, report.html", out)
    return results
