"""Extraction stage: every image of a dataset through a model, into a Parquet descriptor store, on Ray Data.

    result = run(ExtractConfig(dataset="city/manifest.parquet", model="model.pt", out="s3://bucket/desc"))
    results = run_many([config_a, config_b])   # several models over the same images, one pass

The pipeline (one Ray Data dataset, streamed):

    rows (id, path, role, split, utm, label) built from the PlaceDataset, never a file listing
      -> decode_images            CPU tasks (no torch in them): read, decode, resize; uint8 pixels out
      -> ImageEmbedder            actor pool: one GPU per actor (float16 autocast, channels-last, compiled)
                                  when the cluster has GPUs, CPU actors otherwise; or (layout "driver": small jobs
                                  on one CPU node) the driver itself, which already holds the model
      -> write_parts              tasks: each writes its rows as one immutable store part (plus a failures
                                  part for images that could not be read); only part names reach the driver
    driver: collects the part names, logs images/s, commits the store once at the end.

Several models (`run_many`: e.g. an off-the-shelf model and the model fine-tuned from it) go through one
pipeline: each image is decoded once, models with equal frozen prefixes run that prefix once
(`ImageEmbedder`), and each model's descriptors go to its own store, with its own resume state.

Ids (see `sare_core.data.image_rows`) travel with every row through every step; nothing depends on row order.
Resume (see `resume`): rerunning the same command skips committed ids and adopts the complete
parts a killed run left behind, so only what is missing is extracted and every id is stored once.
Bad images (missing, truncated, corrupt, or failing in the model) become rows of the store's failures
table (id, path, error); `ExtractResult.failures_exceeded` says whether they pass `max_failure_fraction`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sare_core.data.image_rows import (
    dataset_root,
    default_dataset_name,
    image_rows,
    open_dataset,
    select_rows,
    without_ids,
)
from sare_core.models.config import ModelConfig
from sare_core.paths import is_remote
from sare_core.store import PartInfo, StoreMetadata, commit, commit_update

from .. import ray_session
from ..model.specs import load_model_spec
from .config import ExtractConfig
from .decode import IMAGES_ROW, STORE_MASK, decode_images, write_parts_to_stores
from .plan import ExtractionPlan, estimate_pixel_bytes, plan_resources
from .resume import count_missing, delete_parts_of_run, inspect_store

log = logging.getLogger(__name__)

EXIT_FAILURES_EXCEEDED = 3


@dataclass
class ExtractResult:
    """What a run did and what the store holds for the selected images.

    total: selected images. already_done: committed before this run (descriptors or failures).
    adopted: rows taken over from uncommitted parts of an earlier run. extracted / failed: descriptors /
    failures computed by this run. rows / failures: descriptors / failures the store now holds for the
    selection. images_per_s: this run's computed images (extracted + failed) per second of pipeline time;
    steady_images_per_s: the images through the pipeline per second between the first and the last write
    (None with one), i.e. without the pipeline's start-up. seconds: from the start of `run` (of `run_many`,
    for all its stores, when several models ran).
    """

    uri: str
    dataset_name: str
    model_hash: str
    dim: int
    total: int
    already_done: int
    adopted: int
    extracted: int
    failed: int
    rows: int
    failures: int
    max_failure_fraction: float
    version: int
    seconds: float
    pipeline_seconds: float
    images_per_s: float
    parts_written: int
    steady_images_per_s: float | None = None
    deleted_parts: list[str] = field(default_factory=list)
    plan: dict = field(default_factory=dict)

    @property
    def failure_fraction(self) -> float:
        return self.failures / self.total if self.total else 0.0

    @property
    def failures_exceeded(self) -> bool:
        return self.failure_fraction > self.max_failure_fraction

    @property
    def exit_status(self) -> int:
        return EXIT_FAILURES_EXCEEDED if self.failures_exceeded else 0

    def summary(self) -> str:
        lines = [
            f"store      {self.uri} (version {self.version}, model {self.model_hash}, {self.dim} dims)",
            f"images     {self.total} selected: {self.rows} descriptors, {self.failures} failures "
            f"({100 * self.failure_fraction:.2f}%, allowed {100 * self.max_failure_fraction:.2f}%)",
            f"this run   {self.extracted} extracted, {self.failed} failed, {self.adopted} adopted from an "
            f"interrupted run, {self.already_done} already committed",
            f"time       {self.seconds:.1f} s in all, {self.pipeline_seconds:.1f} s pipeline, "
            f"{self.images_per_s:.1f} images/s"
            + (f" ({self.steady_images_per_s:.1f} after start-up)" if self.steady_images_per_s else ""),
        ]
        if self.failures_exceeded:
            lines.append(f"FAILED     more than {100 * self.max_failure_fraction:.2f}% of the images failed; "
                         f"see the store's failures table")
        return "\n".join(lines)


def decode_blocks(rows: pa.Table, first: int, step: int) -> list[pa.Table]:
    """`rows` as decode blocks (zero-copy slices): `first` rows, then `step` rows each, then what is left."""
    if first < 1 or step < 1:
        raise ValueError(f"decode blocks of {first} and {step} rows: both must be at least 1")
    return [rows.slice(0, first)] + [rows.slice(start, step) for start in range(first, rows.num_rows, step)]


def build_dataset(rows: pa.Table, plan: ExtractionPlan, model_refs: list, expected_hashes: list[str],
                  model_config: ModelConfig, stores: list[dict], task_id: str, storage_options: dict | None = None,
                  mixed_precision: bool = True, channels_last: bool = True, truncate: int | None = None,
                  compile_model: bool = True):
    """The Ray Data pipeline rows -> decode -> embed -> write; iterating it yields `PART_SCHEMA` rows with a
    store column (the index into `stores`, see `decode.write_parts_to_stores`).
    Layout "driver": rows -> decode only; iterating it yields decoded rows for the driver's models."""
    import ray

    step, first = plan.decode_batch_size, plan.first_block_size
    ds = ray.data.from_arrow(decode_blocks(rows, first, step))
    # Decode tasks declare the heap memory they need; besides informing the scheduler, remote arguments
    # that differ from the actors' keep Ray Data from fusing decoding into the model actors (where it would
    # run serially with the model instead of in parallel CPU tasks).
    ds = ds.map_batches(
        decode_images, fn_kwargs={"image_size": model_config.image_size, "max_side": model_config.max_side},
        batch_format="pyarrow", batch_size=step if first == step else None,  # None: each block as it is
        compute=ray.data.TaskPoolStrategy(size=plan.decode_tasks), num_cpus=plan.decode_cpus,
        memory=plan.decode_memory, udf_modifying_row_count=False)
    if plan.layout == "driver":
        return ds  # the driver embeds and writes (`_embed_in_driver`)
    from .embedder import ImageEmbedder

    ds = ds.map_batches(
        ImageEmbedder, fn_constructor_args=(model_refs, expected_hashes),
        fn_constructor_kwargs={"batch_size": plan.batch_size, "use_gpu": plan.use_gpu,
                               "mixed_precision": mixed_precision, "channels_last": channels_last,
                               "compile_model": compile_model, "threads": plan.threads_per_actor,
                               "truncate": truncate},
        batch_format="pyarrow", batch_size=step, compute=ray.data.ActorPoolStrategy(size=plan.num_actors),
        num_cpus=plan.actor_cpus, num_gpus=1 if plan.use_gpu else None, udf_modifying_row_count=False)
    return ds.map_batches(
        write_parts_to_stores, fn_kwargs={"stores": stores, "task_id": task_id, "storage_options": storage_options},
        batch_format="pyarrow", batch_size=plan.rows_per_part,
        compute=ray.data.TaskPoolStrategy(size=plan.write_tasks), num_cpus=plan.write_cpus)


class _Throughput:
    """Logs images/s as write calls report the images they got; also measures the steady rate, from the
    first call to the last (which leaves out start-up: worker processes importing torch, loading the model)."""

    def __init__(self, total: int, every_s: float):
        self.total, self.every_s = total, every_s
        self.start = self.last = time.perf_counter()
        self.end: float | None = None
        self.images = 0
        self.first: tuple[float, int] | None = None  # (time, images done) when the first call reported
        self.latest: tuple[float, int] | None = None

    def stop(self) -> None:
        self.end = time.perf_counter()

    @property
    def steady_images_per_s(self) -> float | None:
        if self.first is None or self.latest is None or self.latest[0] <= self.first[0]:
            return None
        return (self.latest[1] - self.first[1]) / (self.latest[0] - self.first[0])

    def add(self, images: int) -> None:
        self.images += images
        now = time.perf_counter()
        if self.latest is not None and now - self.latest[0] < 1e-3:  # calls of one batch: one arrival
            self.latest = (self.latest[0], self.images)
        else:
            self.latest = (now, self.images)
        if self.first is None or self.first[0] == self.latest[0]:
            self.first = self.latest
        if now - self.last >= self.every_s:
            self.last = now
            log.info("extract: %d/%d images, %.1f images/s", self.images, self.total,
                     self.images / max(now - self.start, 1e-9))

    @property
    def seconds(self) -> float:
        return (self.end or time.perf_counter()) - self.start


def _part_infos(written: pa.Table, meter: _Throughput) -> list[tuple[int, PartInfo]]:
    """The parts a `write_parts_to_stores` call reports (PART_SCHEMA rows with a store column), as (store
    index, part); the call's IMAGES_ROW goes to the meter."""
    parts = []
    for record in written.to_pylist():
        store = record.pop("store")
        if record["kind"] == IMAGES_ROW:
            meter.add(record["num_rows"])
            continue
        record["rows_by_role_split"] = json.loads(record["rows_by_role_split"])
        parts.append((store, PartInfo.from_dict(record)))
    return parts


def _embed_in_driver(ds, models: list, digests: list[str], plan: ExtractionPlan, config: ExtractConfig,
                     stores: list[dict], run_tag: str, storage_options: dict | None,
                     meter: _Throughput) -> list[tuple[int, PartInfo]]:
    """Layout "driver": the models (already loaded here) embed the decoded blocks as the decode tasks
    deliver them, and the driver writes every `rows_per_part` rows as a part of each store."""
    import torch

    from .embedder import ImageEmbedder

    threads = torch.get_num_threads()
    parts: list[tuple[int, PartInfo]] = []
    pending: list[pa.Table] = []

    def flush(tables: list[pa.Table]) -> None:
        written = write_parts_to_stores(pa.concat_tables(tables), stores, f"{run_tag}-driver", storage_options)
        parts.extend(_part_infos(written, meter))

    try:
        embedder = ImageEmbedder(models, digests, batch_size=plan.batch_size, use_gpu=plan.use_gpu,
                                 mixed_precision=config.mixed_precision, channels_last=config.channels_last,
                                 compile_model=config.compile, threads=plan.threads_per_actor,
                                 truncate=config.truncate)
        buffered = 0
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=2):
            pending.append(embedder(batch))
            buffered += batch.num_rows
            if buffered >= plan.rows_per_part:
                rows = pa.concat_tables(pending)
                whole = (buffered // plan.rows_per_part) * plan.rows_per_part
                for start in range(0, whole, plan.rows_per_part):
                    flush([rows.slice(start, plan.rows_per_part)])
                pending, buffered = [rows.slice(whole)], buffered - whole
        if buffered:
            flush(pending)
    finally:
        torch.set_num_threads(threads)
    return parts


def _set_data_context(plan: ExtractionPlan, progress_bars: bool):
    """Apply progress-bar and object-store settings to Ray Data's context; returns a restore function."""
    import ray

    context = ray.data.DataContext.get_current()
    saved = (context.enable_progress_bars, context.execution_options)
    context.enable_progress_bars = progress_bars
    options = copy.deepcopy(context.execution_options)
    if plan.object_store_memory is not None:
        options.resource_limits = options.resource_limits.copy(object_store_memory=plan.object_store_memory)
    context.execution_options = options

    def restore():
        context.enable_progress_bars, context.execution_options = saved

    return restore


def store_exists(uri: str, storage_options: dict | None = None) -> bool:
    """Whether a committed store (a manifest) is at `uri`."""
    from sare_core.store import StoreNotCommittedError, open_store

    try:
        open_store(uri, storage_options=storage_options, verify=False)
    except StoreNotCommittedError:
        return False
    return True


@dataclass
class _StoreJob:
    """One store of a run: its config and model, and what the store holds and lacks at the start."""

    config: ExtractConfig
    model: object  # EmbeddingModel
    digest: str
    dim: int
    rows: pa.Table  # the selected images (ROW_SCHEMA)
    dataset_name: str
    metadata: StoreMetadata
    state: object  # resume.StoreState
    todo: pa.Table  # the selected images the store neither holds nor adopts
    already: int
    adopted: int


def _selection(config: ExtractConfig):
    """The dataset's splits and the selected images (ROW_SCHEMA rows), read once for all the stores of a run
    (their configs share dataset, roots, splits and roles: `check_together`)."""
    config.check_inputs()
    splits = open_dataset(config.dataset, config.images_root, config.query_root)
    all_rows = image_rows(splits, config.images_root or dataset_root(config.dataset))
    return splits, select_rows(all_rows, config.splits, config.roles)


def _prepare(config: ExtractConfig, splits, rows: pa.Table, storage_options: dict | None) -> _StoreJob:
    """Load the model and inspect the store (adopting an interrupted run's parts) for the selected `rows`;
    ValueError / FileNotFoundError naming the field on a bad input or a store of another model/dataset."""
    started = time.perf_counter()
    config.check_inputs()
    from sare_core.models.io import model_hash

    model = load_model_spec(config.model, config.seed)
    digest = model_hash(model)
    dim = config.truncate or model.descriptor_dim
    if config.truncate is not None and config.truncate > model.descriptor_dim:
        raise ValueError(f"truncate: {config.truncate} exceeds the model's {model.descriptor_dim} dims")
    dataset_name = config.dataset_name or default_dataset_name(config.dataset)
    provenance = {"stage": "extract", "config": config.model_dump(mode="json"), "model_source": config.model,
                  "seed": config.seed}
    radii = {float(d.pos_dist_thr) for name, d in splits.items() if config.splits is None or name in config.splits}
    if len(radii) == 1:  # the dataset's evaluation radius, so that `sare eval --store` scores as it defines
        provenance["pos_dist_thr"] = radii.pop()
    metadata = StoreMetadata(dim=dim, dtype=config.dtype, dataset=dataset_name, model_hash=digest,
                             model_config=model.config.model_dump(mode="json"), provenance=provenance)
    if not config.resume and store_exists(config.out, storage_options):
        raise ValueError(f"out: {config.out} already holds a committed store (set resume: true to continue it)")
    state = inspect_store(config.out, metadata, storage_options, adopt=config.resume)
    todo = without_ids(rows, state.skip_ids)
    already = rows.num_rows - without_ids(rows, state.done_ids).num_rows
    adopted = rows.num_rows - already - todo.num_rows
    log.info("extract %s: %d images selected, %d already committed, %d adopted, %d to extract; model %s "
             "(%d dims) -> %s (prepared in %.1f s)", dataset_name, rows.num_rows, already, adopted, todo.num_rows,
             digest, dim, config.out, time.perf_counter() - started)
    return _StoreJob(config, model, digest, dim, rows, dataset_name, metadata, state, todo, already, adopted)


SHARED_BY_STORES = tuple(name for name in ExtractConfig.model_fields if name not in ("model", "out", "seed"))


def check_together(configs: list[ExtractConfig]) -> None:
    """ValueError unless the configs can run as one several-model extraction: every setting equal but
    model, out and seed, and every out distinct."""
    if not configs:
        raise ValueError("no extraction to run")
    first = configs[0]
    for i, config in enumerate(configs[1:], start=1):
        for name in SHARED_BY_STORES:
            if getattr(config, name) != getattr(first, name):
                raise ValueError(f"{name}: extraction {i} has {getattr(config, name)!r}, extraction 0 has "
                                 f"{getattr(first, name)!r}; models extracted together share every setting "
                                 f"but model, out and seed")
    outs = [config.out.rstrip("/") if is_remote(config.out) else os.path.abspath(config.out) for config in configs]
    for i, out in enumerate(outs):
        if out in outs[:i]:
            raise ValueError(f"out: {configs[i].out} is given to two models")


def _execute(jobs: list[_StoreJob], todo: pa.Table, stores: list[dict], run_tag: str,
             storage_options: dict | None) -> tuple[ExtractionPlan, list[tuple[int, PartInfo]], _Throughput]:
    """Run the Ray Data pipeline over `todo` for every job's model; returns the plan, the parts the workers
    wrote (store index, part) and the meter (images through the pipeline)."""
    import ray

    config = jobs[0].config  # every setting but model/out/seed is the same for all (check_together)
    started_ray = ray_session.connect(config.ray_address)
    model_refs: list = []
    restore = None
    try:
        resources = ray.cluster_resources()
        nodes = ray_session.alive_nodes()
        plan = plan_resources(config, resources.get("CPU", 1), resources.get("GPU", 0), todo.num_rows,
                              max(job.dim for job in jobs),
                              estimate_pixel_bytes(jobs[0].model, todo.column("path").to_pylist()),
                              resources.get("object_store_memory"), nodes=nodes, models=len(jobs))
        log.info("extract plan: %s", asdict(plan))
        from sare_core.models.io import model_payload

        if plan.layout == "actors":
            model_refs = [ray.put(model_payload(job.model)) for job in jobs]
        restore = _set_data_context(plan, config.progress_bars)
        digests = [job.digest for job in jobs]
        ds = build_dataset(todo, plan, model_refs, digests, jobs[0].model.config, stores, run_tag,
                           storage_options, config.mixed_precision, config.channels_last, config.truncate,
                           config.compile)
        meter = _Throughput(todo.num_rows, config.log_every_s)
        if plan.layout == "driver":
            new_parts = _embed_in_driver(ds, [job.model for job in jobs], digests, plan, config, stores, run_tag,
                                         storage_options, meter)
        else:
            new_parts = []
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0):
                new_parts += _part_infos(batch, meter)
        meter.stop()
        return plan, new_parts, meter
    finally:
        if restore is not None:
            restore()
        del model_refs
        if started_ray:
            ray.shutdown()


def run(config: ExtractConfig, storage_options: dict | None = None) -> ExtractResult:
    """Extract the selected images of `config.dataset` with `config.model` into the store `config.out`.

    Fails before any work (ValueError / FileNotFoundError naming the field) on a bad input, or when the
    store at `out` was made by another model or for another dataset. storage_options: for an s3:// store
    outside the usual AWS environment (never logged or recorded).
    """
    return run_many([config], storage_options)[0]


def run_many(configs: list[ExtractConfig], storage_options: dict | None = None) -> list[ExtractResult]:
    """`run` for several models over the same images: configs equal but for model, out and seed
    (`check_together`); results in the order of `configs`.

    Models that resize and normalise images alike go through one pipeline: each image is decoded once and
    models with equal frozen prefixes run that prefix once (`ImageEmbedder`); other models get a pipeline
    of their own. Every store gets its own descriptors, resume state, commit and result, and is given
    exactly the images it lacks, whatever the others hold; the model of a store that lacks nothing does not
    run.
    """
    started = time.perf_counter()
    check_together(configs)
    splits, rows = _selection(configs[0])
    jobs = [_prepare(config, splits, rows, storage_options) for config in configs]
    alike: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        alike.setdefault(repr(job.model.preprocessor), []).append(i)
    results: list[ExtractResult | None] = [None] * len(jobs)
    for members in alike.values():
        for start in range(0, len(members), MAX_MODELS_PER_PIPELINE):
            chunk = members[start:start + MAX_MODELS_PER_PIPELINE]
            for i, result in zip(chunk, _run_together([jobs[i] for i in chunk], storage_options, started)):
                results[i] = result
    return results


MAX_MODELS_PER_PIPELINE = 63  # STORE_MASK is an int64 bitmask


def _run_together(jobs: list[_StoreJob], storage_options: dict | None, started: float) -> list[ExtractResult]:
    """One pipeline for jobs whose models share their preprocessing: over the images any store lacks, with
    the models of the stores that lack any, each store keeping only the rows it lacks (a STORE_MASK column
    when they lack different images); then, once every store's row count is checked, each store's commit
    and result."""
    active = [i for i, job in enumerate(jobs) if job.todo.num_rows]
    if len(active) <= 1:
        todo = jobs[active[0]].todo if active else jobs[0].todo
    else:
        rows = jobs[0].rows  # the same selection for every job (check_together)
        mask = np.zeros(rows.num_rows, np.int64)
        for k, i in enumerate(active):
            mask |= pc.is_in(rows.column("id"), jobs[i].todo.column("id")).to_numpy(zero_copy_only=False).astype(
                np.int64) << k
        todo = rows.filter(pa.array(mask != 0))
        if any(jobs[i].todo.num_rows != todo.num_rows for i in active):  # the stores lack different images
            todo = todo.append_column(STORE_MASK, pa.array(mask[mask != 0], pa.int64()))
    stores = [{"uri": jobs[i].config.out, "metadata": jobs[i].metadata} for i in active]
    run_tag = f"x{uuid.uuid4().hex[:10]}"
    new_parts: dict[int, list[PartInfo]] = {i: [] for i in range(len(jobs))}
    plan = meter = None
    pipeline_seconds = 0.0
    if todo.num_rows:
        plan, written, meter = _execute([jobs[i] for i in active], todo, stores, run_tag, storage_options)
        for k, part in written:
            new_parts[active[k]].append(part)
        pipeline_seconds = meter.seconds
        log.info("extract: %d images through %d model(s) in %.1f s, %.1f images/s", todo.num_rows, len(active),
                 pipeline_seconds, todo.num_rows / max(pipeline_seconds, 1e-9))
    counts = []
    for i, job in enumerate(jobs):  # every store's rows checked before any store is committed
        extracted = sum(part.num_rows for part in new_parts[i] if part.kind == "descriptors")
        failed = sum(part.num_rows for part in new_parts[i] if part.kind != "descriptors")
        if extracted + failed != job.todo.num_rows:
            raise RuntimeError(f"{job.config.out}: the pipeline returned {extracted + failed} rows for "
                               f"{job.todo.num_rows} images; nothing committed (rerun to resume)")
        counts.append((extracted, failed))
    results = []
    for i, (job, (extracted, failed)) in enumerate(zip(jobs, counts)):
        ran = bool(new_parts[i])
        steady = meter.steady_images_per_s if meter is not None and ran else None
        results.append(_commit(job, new_parts[i], extracted, failed, plan if ran else None,
                               pipeline_seconds if ran else 0.0, steady, run_tag, storage_options, started))
    return results


def _commit(job: _StoreJob, new_parts: list[PartInfo], extracted: int, failed: int, plan: ExtractionPlan | None,
            pipeline_seconds: float, steady_images_per_s: float | None, run_tag: str, storage_options: dict | None,
            started: float) -> ExtractResult:
    """Commit a job's new and adopted parts, check that every selected id is stored once, and report."""
    config, state, rows = job.config, job.state, job.rows
    committing = time.perf_counter()
    version = state.version
    to_commit = state.adopted + new_parts
    run_provenance = {"run": run_tag, "extracted": extracted, "failed": failed, "adopted": job.adopted,
                      "plan": asdict(plan) if plan else None}
    if to_commit:
        if state.committed:
            manifest = commit_update(config.out, to_commit, expected_version=state.version,
                                     storage_options=storage_options, provenance=run_provenance)
        else:
            manifest = commit(config.out, to_commit, job.metadata, storage_options=storage_options,
                              provenance=run_provenance)
        version = manifest.version
        delete_parts_of_run(config.out, run_tag, storage_options)
    elif not state.committed:
        # Nothing selected at all: still leave an (empty) committed store behind.
        version = commit(config.out, [], job.metadata, storage_options=storage_options,
                         provenance=run_provenance).version
    check = count_missing(rows.column("id"), config.out, storage_options)
    if check["missing"] or check["in_both"]:
        raise RuntimeError(f"{config.out}: after the commit {check['missing']} selected images are neither "
                           f"extracted nor failed (e.g. {check['examples']}) and {check['in_both']} are both")
    failures_in_selection = _failures_in(rows, config.out, storage_options)
    log.info("extract: committed and checked in %.1f s", time.perf_counter() - committing)
    result = ExtractResult(
        uri=config.out, dataset_name=job.dataset_name, model_hash=job.digest, dim=job.dim, total=rows.num_rows,
        already_done=job.already, adopted=job.adopted, extracted=extracted, failed=failed,
        rows=rows.num_rows - failures_in_selection, failures=failures_in_selection,
        max_failure_fraction=config.max_failure_fraction, version=version, seconds=time.perf_counter() - started,
        pipeline_seconds=pipeline_seconds,
        images_per_s=(extracted + failed) / pipeline_seconds if pipeline_seconds else 0.0,
        parts_written=len(new_parts), deleted_parts=state.deleted, plan=asdict(plan) if plan else {},
        steady_images_per_s=steady_images_per_s)
    log.info("extract done: %s version %d, %d descriptors and %d failures for %d images (%.1f s)", result.uri,
             result.version, result.rows, result.failures, result.total, result.seconds)
    return result


def _failures_in(rows: pa.Table, uri: str, storage_options: dict | None) -> int:
    """How many of `rows` the store's failures table lists."""

    from sare_core.store import open_store

    failed = open_store(uri, storage_options=storage_options).failures().column("id")
    if not len(failed):
        return 0
    return int(pc.sum(pc.is_in(rows.column("id"), failed)).as_py() or 0)
