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
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sare_core.evaluation import (
    Evaluation,
    format_recall_table,
    plot_recall_curves,
    write_html_report,
    write_json,
)
from sare_core.evaluation.search import SEARCH_MODES, SearchResult
from sare_core.evaluation.store_search import StoreScore, score_stores
from sare_core.paths import is_remote
from sare_core.store import DescriptorStore, open_store

log = logging.getLogger(__name__)

SEED_NS = (1, 2, 3, 4, 5, 10)  # the columns of the SARE seed's result table


class ModelStores(BaseModel):
    """One row of the table: a name and the stores holding its database and query descriptors."""

    model_config = ConfigDict(extra="forbid")
    name: str
    database: str
    queries: str | None = Field(None, description="defaults to the database store (both roles in one store)")


class SearchSettings(BaseModel):
    """How stores are searched and reported, whatever is evaluated (also `sare eval --manifest`'s
    `evaluation:` section)."""

    model_config = ConfigDict(extra="forbid")
    map_k: int | None = Field(None, ge=1, description="mAP@k; default 100 for label datasets, off for UTM")
    search_mode: Literal[SEARCH_MODES + ("ray",)] = "auto"  # type: ignore[valid-type]
    ray_shards: int = Field(0, ge=0, description="shards for search_mode=ray (0: one per store part)")
    memory_budget_gb: float | None = Field(None, gt=0)
    report_queries: int = Field(12, ge=0)
    truncate: int | None = Field(None, ge=1, description="score each descriptor's first K elements, "
                                 "re-L2-normalised (smaller descriptors from PCA-whitened ones)")
    seed: int = 0


class EvalConfig(SearchSettings):
    """What `sare eval` does. Recalls are reported in percent; radius in metres."""

    models: list[ModelStores] = Field(min_length=1)
    out_dir: str = "runs/eval"
    ns: list[int] = Field(default_factory=lambda: list(SEED_NS))
    radius: float | None = Field(None, gt=0, description="positives within this many metres (default: store's, else 25)")
    split: str | None = None
    images_root: str | None = Field(None, description="where image ids resolve to files, for the HTML report")
    units: str = Field("m", description="unit of the UTM columns in printed distances: m, or e.g. frames when "
                       "utm_east is a frame index")

    @field_validator("ns")
    @classmethod
    def _positive_ns(cls, ns: list[int]) -> list[int]:
        if not ns or min(ns) < 1:
            raise ValueError("ns must be a non-empty list of positive integers")
        return sorted(set(ns))


def _ray_search(queries: np.ndarray, store: DescriptorStore, k: int, split: str | None, shards: int,
                truncate: int | None = None) -> SearchResult:
    from .ray_search import Shard, ray_sharded_search

    parts = [p for p in store.parts if p.kind == "descriptors" and p.rows("database", split) > 0]
    groups = [parts] if not parts else np.array_split(np.arange(len(parts)), shards or len(parts))
    shard_list, offset = [], 0
    for group in groups:
        names = [parts[i].name for i in group]
        rows = sum(parts[i].rows("database", split) for i in group)
        if rows == 0:
            continue
        shard_list.append(Shard(functools.partial(_load_parts, store.uri, names, split, truncate), offset))
        offset += rows
    return ray_sharded_search(queries, shard_list, k)


def _load_parts(uri: str, part_names: list[str], split: str | None, truncate: int | None = None) -> np.ndarray:
    from sare_core.descriptors import truncate as truncate_descriptors

    store = open_store(uri)
    chunks = [b.descriptors for b in store.iter_batches(role="database", split=split, columns=["descriptor"],
                                                          parts=part_names)]
    database = np.concatenate(chunks) if chunks else np.zeros((0, store.dim), np.float32)
    return truncate_descriptors(database, truncate) if truncate and len(database) else database


def evaluate_model(entry: ModelStores, config: EvalConfig) -> StoreScore:
    """Search and score one model's stores (`score_stores`; on Ray actors for search_mode "ray")."""
    search = None
    if config.search_mode == "ray":
        def search(queries, db_store, k):
            return _ray_search(queries, db_store, k, config.split, config.ray_shards, config.truncate)
    budget = int(config.memory_budget_gb * 2**30) if config.memory_budget_gb else None
    return score_stores(entry.name, entry.database, entry.queries, ns=config.ns, split=config.split,
                        radius=config.radius, map_k=config.map_k, search_mode=config.search_mode,
                        memory_budget_bytes=budget, search=search, truncate=config.truncate)


def _sample_report_rows(config: EvalConfig, detail: StoreScore) -> list[dict]:
    q, db, result, positives = detail.q, detail.db, detail.result, detail.positives
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
    details = {entry.name: evaluate_model(entry, config) for entry in config.models}
    results: dict[str, Evaluation] = {name: detail.evaluation for name, detail in details.items()}
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
    if not is_remote(config.out_dir):
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
