"""A localisation index: a FAISS index over a descriptor store's database rows, with what each row is (its
id, coordinates or label, image path) and the model that made the descriptors.

Layout of an index folder (local or s3://):

    index.json        format, kind and spec, dim, count, model hash and config, source store (URI, version,
                      split), images root, shards (file, rows), build time
    entries.parquet   one row per indexed vector, in FAISS id order: id, utm_east, utm_north, label
    shard_NNN.faiss   the FAISS index, in one or several shards (successive ids)
    refine.f16.npy    (IVF-PQ with spec.rerank only) every indexed vector in float16, id order: a
                      shortlist from the codes is re-ranked by exact distance to these (memory-mapped)

`build_shard` adds a range of the store's parts to an (untrained-or-trained) index, so a database is
indexed in shards on several workers (pipelines.index) with one shared training; `LocalizationIndex.load`
refuses to pair the index with descriptors of another model (`check_model`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..paths import exists, is_remote, join, read_bytes, read_text, write_bytes, write_text
from ..store import DescriptorStore, open_store
from .faiss_index import (
    IndexSpec,
    add,
    configure_search,
    deserialize,
    join_shards,
    new_index,
    search,
    serialize,
    train,
)

log = logging.getLogger(__name__)

FORMAT = "sare-index"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
ENTRIES_FILE = "entries.parquet"
REFINE_FILE = "refine.f16.npy"


class ModelMismatchError(ValueError):
    """Descriptors of one model searched in an index built from another's."""


def database_parts(store: DescriptorStore, split: str | None) -> list[str]:
    """The store's descriptor parts that hold database rows of `split`, in the store's order."""
    return [p.name for p in store.parts if p.kind == "descriptors" and p.rows("database", split) > 0]


def training_sample(store: DescriptorStore, size: int, split: str | None, seed: int) -> np.ndarray:
    """`size` database vectors drawn uniformly (seeded) in one streamed pass over the store."""
    total = store.num_rows(role="database", split=split)
    chosen = np.sort(np.random.default_rng(seed).choice(total, min(size, total), replace=False))
    out = np.empty((len(chosen), store.dim), np.float32)
    seen = filled = 0
    for batch in store.iter_batches(role="database", split=split, columns=["descriptor"]):
        n = len(batch)
        take = chosen[(chosen >= seen) & (chosen < seen + n)] - seen
        out[filled : filled + len(take)] = batch.descriptors[take]
        filled += len(take)
        seen += n
    pa.default_memory_pool().release_unused()  # the read buffers go back; only the sample stays
    return out


def trained_empty_index(store: DescriptorStore, spec: IndexSpec, split: str | None):
    """An empty index of `spec` for the store's database, trained when its kind needs it."""
    index = new_index(spec, store.dim)
    if not index.is_trained:
        started = time.perf_counter()
        train(index, training_sample(store, spec.train_size, split, spec.seed), spec.seed)
        log.info("trained %s on %d vectors in %.1f s", spec.kind, spec.train_size, time.perf_counter() - started)
    return index


def build_shard(store_uri: str, index_bytes: bytes, parts: list[str], split: str | None,
                storage_options: dict | None = None, refine: tuple[str, int] | None = None) -> tuple[bytes, pa.Table]:
    """Add the database rows of `parts` (streamed, a batch at a time) to the serialized empty index;
    returns the filled index, serialized, and its entries (id, utm_east, utm_north, label) in id order.
    refine: (path of the allocated refine file, the shard's first row in it): the rows are written there too."""
    store = open_store(store_uri, storage_options=storage_options)
    index = deserialize(index_bytes)
    entries = []
    vectors = np.load(refine[0], mmap_mode="r+") if refine else None
    row = refine[1] if refine else 0
    for batch in store.iter_arrow_batches(role="database", split=split, parts=parts,
                                          columns=["id", "utm_east", "utm_north", "label", "descriptor"]):
        descriptors = batch.column("descriptor").flatten().to_numpy(zero_copy_only=False).reshape(-1, store.dim)
        add(index, descriptors)
        if vectors is not None:
            vectors[row : row + len(descriptors)] = descriptors
            row += len(descriptors)
        entries.append(pa.Table.from_batches([batch.select(["id", "utm_east", "utm_north", "label"])]))
    if vectors is not None:
        vectors.flush()
        del vectors
    table = pa.concat_tables(entries) if entries else _empty_entries()
    pa.default_memory_pool().release_unused()
    return serialize(index), table


def allocate_refine(out: str, store: DescriptorStore, spec: IndexSpec, split: str | None,
                    groups: list[list[str]]) -> list[tuple[str, int] | None]:
    """With spec.rerank: the index's refine file, allocated in `out` (local only), and each group's (path, first
    row) in it; otherwise a None per group."""
    if not spec.rerank:
        return [None] * len(groups)
    if is_remote(out):
        raise ValueError(f"spec.rerank: the re-ranking vectors are memory-mapped from a local index folder; "
                         f"{out!r} is remote (build locally and copy, or set rerank 0)")
    os.makedirs(out, exist_ok=True)
    rows_of = {p.name: p.rows("database", split) for p in store.parts}
    path = os.path.join(out, REFINE_FILE)
    count = sum(rows_of[name] for group in groups for name in group)
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(count, store.dim)).flush()
    firsts = np.cumsum([0] + [sum(rows_of[name] for name in group) for group in groups[:-1]])
    return [(path, int(first)) for first in firsts]


def _empty_entries() -> pa.Table:
    return pa.table({"id": pa.array([], pa.string()), "utm_east": pa.array([], pa.float64()),
                     "utm_north": pa.array([], pa.float64()), "label": pa.array([], pa.int64())})


def write_index(out: str, shards: list[bytes], entries: list[pa.Table], record: dict) -> dict:
    """Write the shards, the entries and index.json (last: an index is complete once it exists)."""
    table = pa.concat_tables(entries) if entries else _empty_entries()
    names = []
    for number, data in enumerate(shards):
        names.append(f"shard_{number:03d}.faiss")
        write_bytes(join(out, names[-1]), data)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes(join(out, ENTRIES_FILE), sink.getvalue().to_pybytes())
    record = {**record, "format": FORMAT, "format_version": FORMAT_VERSION, "count": table.num_rows,
              "shards": [{"file": n, "rows": t.num_rows} for n, t in zip(names, entries)]}
    write_text(join(out, INDEX_FILE), json.dumps(record, indent=2))
    return record


def build_index(store_uri: str, out: str, spec: IndexSpec, split: str | None = None, images_root: str | None = None,
                shards: int = 1, storage_options: dict | None = None) -> dict:
    """Index the database rows of the store at `store_uri` into the folder `out`, in `shards` shards
    built one after the other in this process (pipelines.index builds them on Ray workers)."""
    started = time.perf_counter()
    store = open_store(store_uri, storage_options=storage_options)
    spec = spec.resolved(store.dim, store.num_rows(role="database", split=split))
    empty = serialize(trained_empty_index(store, spec, split))
    groups = [list(g) for g in np.array_split(database_parts(store, split), max(1, shards)) if len(g)]
    refine = allocate_refine(out, store, spec, split, groups)
    built = [build_shard(store_uri, empty, group, split, storage_options, r)
             for group, r in zip(groups, refine)] or [(empty, None)]
    record = index_record(store, spec, split, images_root, time.perf_counter() - started)
    return write_index(out, [b for b, _ in built], [t for _, t in built if t is not None], record)


def index_record(store: DescriptorStore, spec: IndexSpec, split: str | None, images_root: str | None,
                 seconds: float) -> dict:
    """What index.json says of an index built from `store`."""
    metadata = store.metadata
    return {"kind": spec.kind, "spec": spec.model_dump(mode="json"), "dim": store.dim,
            "bytes_per_vector": spec.bytes_per_vector(store.dim), "model_hash": metadata.model_hash,
            "refine_file": REFINE_FILE if spec.rerank else None,
            "refine_bytes_per_vector": 2 * store.dim if spec.rerank else 0,
            "model_config": metadata.model_config, "store": store.uri, "store_version": store.version,
            "split": split, "images_root": images_root or default_images_root(store),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "build_seconds": seconds}


def default_images_root(store: DescriptorStore) -> str | None:
    """Where the store's image ids resolve to files: the folder of the dataset `sare extract` read."""
    dataset = (store.metadata.provenance.get("config") or {}).get("dataset")
    if not dataset:
        return None
    from ..data.image_rows import dataset_root

    return dataset_root(dataset)


@dataclass
class Match:
    """One retrieved database image: its id, image path (None when unknown), coordinates (metres, or the
    manifest's units; None for label data) or label, and squared L2 distance to the query."""

    id: str
    path: str | None
    utm: tuple[float, float] | None
    label: int | None
    distance: float

    def to_json(self) -> dict:
        return {"id": self.id, "path": self.path, "utm_east": None if self.utm is None else self.utm[0],
                "utm_north": None if self.utm is None else self.utm[1], "label": self.label,
                "distance": self.distance}


class LocalizationIndex:
    """A loaded index: `search(descriptors, k)` -> the matches of each query."""

    def __init__(self, record: dict, index, entries: pa.Table, uri: str, shards: list | None = None,
                 refine: np.ndarray | None = None):
        self.record, self.index, self.uri = record, index, uri
        self.refine = refine  # (count, D) float16, memory-mapped: the re-ranking vectors (IVF-PQ + rerank)
        self._shards = shards  # the FAISS shards a joined index searches, kept alive with it
        self.ids = entries.column("id").to_pylist()
        self.utm = np.column_stack([entries.column("utm_east").to_numpy(), entries.column("utm_north").to_numpy()])
        self.labels = entries.column("label").to_numpy()
        self.geographic = bool(len(self.utm)) and bool(np.isfinite(self.utm).all())

    @classmethod
    def load(cls, uri: str, expected_model_hash: str | None = None) -> LocalizationIndex:
        """Read the index at `uri`; ModelMismatchError when `expected_model_hash` is not its model's."""
        text = read_text(join(uri, INDEX_FILE))
        if text is None:
            raise FileNotFoundError(f"{uri}: no {INDEX_FILE}: not an index (build one with `sare index build`)")
        record = json.loads(text)
        if record.get("format") != FORMAT:
            raise ValueError(f"{join(uri, INDEX_FILE)}: field 'format' is not {FORMAT!r}")
        if record.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{join(uri, INDEX_FILE)}: format version {record['format_version']} is newer than "
                             f"this code reads ({FORMAT_VERSION})")
        if expected_model_hash is not None:
            check_model(record, expected_model_hash, uri)
        shards = [deserialize(read_bytes(join(uri, s["file"]))) for s in record["shards"]]
        index = join_shards(shards)
        configure_search(index, IndexSpec(**record["spec"]))
        entries = pq.read_table(pa.BufferReader(read_bytes(join(uri, ENTRIES_FILE))))
        if index.ntotal != entries.num_rows or entries.num_rows != record["count"]:
            raise ValueError(f"{uri}: {index.ntotal} vectors in the FAISS shards, {entries.num_rows} entries, "
                             f"index.json says {record['count']}: an incomplete or edited index")
        return cls(record, index, entries, uri, shards, load_refine(uri, record))

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None,
                          rerank: int | None = None) -> None:
        """Trade recall for speed at search time: IVF-PQ lists visited, HNSW candidates kept, IVF-PQ shortlist
        re-ranked exactly (0: none; only for an index built with rerank). The record's spec follows, so
        `record["spec"]` says what is in force."""
        if rerank and self.refine is None:
            raise ValueError(f"{self.uri}: built without re-ranking vectors (spec.rerank 0): rebuild with rerank")
        changes = {k: v for k, v in (("nprobe", nprobe), ("ef_search", ef_search), ("rerank", rerank))
                   if v is not None}
        spec = IndexSpec(**{**self.record["spec"], **changes})
        configure_search(self.index, spec)
        self.record["spec"] = spec.model_dump(mode="json")

    @property
    def model_hash(self) -> str:
        return self.record["model_hash"]

    @property
    def dim(self) -> int:
        return int(self.record["dim"])

    def path_of(self, image_id: str) -> str | None:
        root = self.record.get("images_root")
        return join(root, image_id) if root else (image_id if exists(image_id) else None)

    def search(self, descriptors: np.ndarray, k: int = 10) -> list[list[Match]]:
        """The k best matches of each (M, D) query descriptor, best first."""
        rerank = self.record["spec"].get("rerank") or 0
        if rerank and self.refine is not None:
            distances, rows = exact_rerank(self.refine, descriptors, *search(self.index, descriptors, max(k, rerank)),
                                           k)
        else:
            distances, rows = search(self.index, descriptors, k)
        out = []
        for d_row, i_row in zip(distances, rows):
            matches = []
            for d, i in zip(d_row, i_row):
                if i < 0:
                    break
                utm = (float(self.utm[i, 0]), float(self.utm[i, 1])) if self.geographic else None
                label = None if self.geographic else int(self.labels[i])
                matches.append(Match(self.ids[i], self.path_of(self.ids[i]), utm, label, float(d)))
            out.append(matches)
        return out


def load_refine(uri: str, record: dict) -> np.ndarray | None:
    """The index's re-ranking vectors, memory-mapped (None when it has none)."""
    name = record.get("refine_file")
    if not name:
        return None
    if is_remote(uri):
        raise ValueError(f"{uri}: its re-ranking vectors ({name}) are memory-mapped from a local folder; copy the "
                         f"index to local disk")
    path = os.path.join(uri, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: the index's re-ranking vectors are missing")
    vectors = np.load(path, mmap_mode="r")
    if vectors.shape != (record["count"], record["dim"]):
        raise ValueError(f"{path}: shape {vectors.shape}, the index has {record['count']} x {record['dim']}")
    return vectors


def exact_rerank(vectors: np.ndarray, queries: np.ndarray, distances: np.ndarray, rows: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank each query's shortlist `rows` (M, S; -1 padding) by exact squared L2 to `vectors[rows]`; the k
    best as (M, k) distances (inf past the shortlist) and rows (-1 there), ties by row."""
    out_d = np.full((len(rows), k), np.inf, np.float32)
    out_i = np.full((len(rows), k), -1, np.int64)
    q = np.asarray(queries, np.float32)
    for m, (shortlist, query) in enumerate(zip(rows, q)):
        found = np.sort(shortlist[shortlist >= 0])  # sorted rows: sequential reads of the mapped file
        if not len(found):
            continue
        d = ((vectors[found].astype(np.float32) - query) ** 2).sum(1)
        order = np.lexsort((found, d))[:k]
        out_d[m, : len(order)], out_i[m, : len(order)] = d[order], found[order]
    return out_d, out_i


def check_model(record: dict, model_hash: str, uri: str = "index") -> None:
    """ModelMismatchError unless the index was built from descriptors of the model `model_hash`."""
    if record.get("model_hash") != model_hash:
        raise ModelMismatchError(f"{uri}: built from descriptors of model {record.get('model_hash')}, not of "
                                 f"model {model_hash}: their distances mean nothing together; build an index "
                                 f"from a store of this model")
