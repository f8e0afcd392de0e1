"""Extraction stage: every image of a dataset through a model, into a Parquet descriptor store, on Ray Data.

    result = run(ExtractConfig(dataset="city/manifest.parquet", model="model.pt", out="s3://bucket/desc"))

The pipeline (one Ray Data dataset, streamed):

    rows (id, path, role, split, utm, label) built from the PlaceDataset, never a file listing
      -> decode_images            CPU tasks (no torch in them): read, decode, resize; uint8 pixels out
      -> ImageEmbedder            actor pool: one GPU per actor (autocast float16, channels-last) when the
                                  cluster has GPUs, CPU actors otherwise
      -> write_parts              tasks: each writes its rows as one immutable store part (plus a failures
                                  part for images that could not be read); only part names reach the driver
    driver: collects the part names, logs images/s, commits the store once at the end.

Ids (see `extract_rows`) travel with every row through every step; nothing depends on row order.
Resume (see `extract_resume`): rerunning the same command skips committed ids and adopts the complete
parts a killed run left behind, so only what is missing is extracted and every id is stored once.
Bad images (missing, truncated, corrupt, or failing in the model) become rows of the store's failures
table (id, path, error); `ExtractResult.failures_exceeded` says whether they pass `max_failure_fraction`.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sare_core.models import EmbeddingModel, ModelConfig, build_model, load_model, model_hash
from sare_core.models.io import model_payload
from sare_core.store import PartInfo, StoreMetadata, commit, commit_update

from . import ray_session
from .config_io import _describe, apply_overrides
from .extract_io import decode_images, read_image, resized_uint8, write_parts
from .extract_resume import count_missing, delete_parts_of_run, inspect_store
from .extract_rows import (
    ROLES,
    dataset_root,
    default_dataset_name,
    image_rows,
    open_dataset,
    select_rows,
    without_ids,
)
from .extract_workers import ImageEmbedder

log = logging.getLogger(__name__)

MODEL_CONFIG_SUFFIXES = (".yaml", ".yml")
PART_TARGET_BYTES = 64 << 20  # descriptor bytes per store part
DECODE_TARGET_BYTES = 32 << 20  # decoded pixel bytes per decode task (fewer, larger tasks: less overhead)
DECODE_BASE_MEMORY = 384 << 20  # heap of a decode worker besides its pixels (Python, Ray, Arrow, PIL, an image)
EXIT_FAILURES_EXCEEDED = 3


class ExtractConfig(BaseModel):
    """`sare extract`: which images, which model, where to, and how to spread the work.

    Every resource field left at None is chosen from the cluster's resources when the run starts (see
    `plan_resources`); the chosen values are logged and returned in `ExtractResult.plan`.
    """

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="manifest (.csv/.parquet), dbStruct .mat, or a dataset folder")
    model: str = Field(description="a saved model (sare_core.models.save_model) or a model-config YAML "
                       "(a ModelConfig mapping, or a run config with a model: section) for an off-the-shelf model")
    out: str = Field(description="descriptor store to write: local folder or s3://bucket/prefix")
    splits: list[str] | None = Field(None, description="splits to extract (default: all in the dataset)")
    roles: list[Literal["database", "query"]] = Field(list(ROLES), min_length=1)
    images_root: str | None = Field(None, description="folder that relative image paths and ids are relative "
                                    "to (default: the dataset file's folder, or the dataset folder)")
    query_root: str | None = Field(None, description="dbStruct only: folder of the query images "
                                   "(default: images_root)")
    dataset_name: str | None = Field(None, description="recorded in the store (default: '<folder>/<file>')")
    dtype: Literal["float32", "float16"] = "float32"
    seed: int = Field(0, description="seeds the random initialisation of an off-the-shelf model config")

    ray_address: str | None = Field(None, description="Ray cluster to join (default: RAY_ADDRESS, or a local one)")
    use_gpu: bool | None = Field(None, description="default: when the cluster has GPUs")
    num_actors: int | None = Field(None, ge=1, description="model actors (default: one per GPU; on CPUs "
                                   "one per CPU / threads_per_actor)")
    threads_per_actor: int | None = Field(None, ge=1, description="torch threads in each actor (default 1)")
    actor_cpus: float | None = Field(None, gt=0, description="logical CPUs each model actor reserves (default: "
                                     "1 with a GPU; on CPUs the share the decode tasks leave)")
    batch_size: int | None = Field(None, ge=1, description="images per model forward pass (default 32 on "
                                   "CPU, 128 on GPU)")
    decode_batch_size: int | None = Field(None, ge=1, description="images per decode task and model actor call "
                                          "(default: about 32 MB of decoded pixels, 16..1024)")
    decode_tasks: int | None = Field(None, ge=1, description="concurrent decode tasks (default: the CPUs "
                                     "the GPU actors leave; on CPU clusters one per 4 CPUs)")
    decode_cpus: float | None = Field(None, gt=0, description="logical CPUs per decode task (default 1)")
    rows_per_part: int | None = Field(None, ge=1, description="rows per store part (default: about 64 MB "
                                      "of descriptors, at most 1/8 of the images)")
    write_tasks: int | None = Field(None, ge=1, description="concurrent part writers (default 2, fewer for "
                                    "fewer parts)")
    object_store_memory: int | None = Field(None, ge=1 << 20, description="bytes of object store the "
                                            "pipeline may fill (default: half the cluster's object store)")
    mixed_precision: bool = Field(True, description="GPU only: autocast float16 (descriptors stay float32)")
    channels_last: bool = Field(True, description="GPU only: channels-last memory format")

    resume: bool = Field(True, description="continue an interrupted or earlier run into the same store; "
                         "False: fail when the store exists")
    max_failure_fraction: float = Field(0.01, ge=0, le=1, description="fraction of images that may fail "
                                        "before the run reports failure (exit status 3)")
    progress_bars: bool = Field(True, description="Ray Data progress bars")
    log_every_s: float = Field(10.0, gt=0, description="seconds between throughput log lines")

    @field_validator("splits")
    @classmethod
    def _splits(cls, value):
        if value is not None and not value:
            raise ValueError("give at least one split, or leave splits unset for all")
        return value

    def check_inputs(self) -> None:
        """FileNotFoundError / ValueError naming the field when an input is missing (before any work)."""
        if "://" not in self.dataset and not os.path.exists(self.dataset):
            raise FileNotFoundError(f"dataset: no such file or folder: {self.dataset}")
        if "://" not in self.model and not os.path.isfile(self.model):
            raise FileNotFoundError(f"model: no such file: {self.model}")
        for name in ("images_root", "query_root"):
            value = getattr(self, name)
            if value is not None and "://" not in value and not os.path.isdir(value):
                raise FileNotFoundError(f"{name}: no such folder: {value}")


def load_extract_config(path: str | Path | None = None, overrides: list[str] | None = None,
                        values: dict | None = None) -> ExtractConfig:
    """ExtractConfig from a YAML file (its `extract:` section when it has one, else the whole mapping),
    then `values` (e.g. --dataset/--model/--out), then `key=value` overrides; errors name file and field."""
    data: dict = {}
    source = "command line"
    if path is not None:
        source = str(path)
        if not Path(path).is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML ({exc})") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: the top level must be a mapping of config fields")
        loaded = loaded or {}
        data = dict(loaded["extract"]) if isinstance(loaded.get("extract"), dict) else loaded
    data.update({k: v for k, v in (values or {}).items() if v is not None})
    data = apply_overrides(data, overrides or [])
    try:
        return ExtractConfig(**data)
    except ValidationError as exc:
        raise ValueError(f"{source}: invalid config: {_describe(exc)}") from None


def read_model_section(path: str) -> dict:
    """The ModelConfig mapping of a YAML file (the file itself, or a run config's `model:` section); a
    ValueError names the file for invalid YAML, a non-mapping, or fields ModelConfig does not have."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model config: no such file: {path}")
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a model config must be a mapping")
    section = data["model"] if isinstance(data.get("model"), dict) else data
    unknown = set(section) - set(ModelConfig.model_fields)
    if unknown:
        raise ValueError(f"{path}: fields {sorted(unknown)} are not ModelConfig fields (give a ModelConfig "
                         f"mapping or a run config with a model: section)")
    return dict(section)


def load_extraction_model(spec: str, seed: int = 0) -> EmbeddingModel:
    """The model a `--model` argument names: a saved model file, or a YAML model config (a ModelConfig
    mapping, or a run config with a `model:` section) built with torch seeded by `seed`, so the same YAML
    gives the same weights (and model hash) in every run."""
    if spec.lower().endswith(MODEL_CONFIG_SUFFIXES):
        import torch

        try:
            config = ModelConfig(**read_model_section(spec))
        except ValidationError as exc:
            raise ValueError(f"{spec}: invalid model config: {_describe(exc)}") from None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(config)
        return model.eval()
    return load_model(spec).eval()


@dataclass
class ExtractionPlan:
    """How the work is spread; every field is a config value or its automatic default."""

    use_gpu: bool
    num_actors: int
    actor_cpus: float
    threads_per_actor: int
    batch_size: int
    decode_batch_size: int
    decode_tasks: int
    decode_cpus: float
    decode_memory: int
    rows_per_part: int
    write_tasks: int
    write_cpus: float
    object_store_memory: int | None
    cluster_cpus: float
    cluster_gpus: float


def estimate_pixel_bytes(model: EmbeddingModel, paths: list[str]) -> int:
    """Bytes of one decoded, resized image: from the model's fixed size, else from a sample image."""
    config = model.config
    if config.image_size is not None:
        return int(config.image_size[0] * config.image_size[1] * 3)
    for path in paths[:3]:
        try:
            return int(resized_uint8(read_image(path), None, config.max_side).nbytes)
        except Exception:  # noqa: BLE001 - a bad sample image is reported by the pipeline, not here
            continue
    side = config.max_side or 640
    return side * side * 3


def plan_resources(config: ExtractConfig, cluster_cpus: float, cluster_gpus: float, num_rows: int, dim: int,
                   pixel_bytes: int, object_store_capacity: float | None = None) -> ExtractionPlan:
    """Fill the resource fields the config leaves unset from the cluster's resources.

    GPUs: one actor per GPU (1 logical CPU, 1 torch thread each), batches of 128, decode tasks (1 CPU
    each) on the remaining CPUs.
    CPUs: data parallelism across processes rather than threads: one single-threaded actor per CPU, plus
    one decode task per 4 CPUs (at least one). Decode tasks reserve 1 logical CPU each and the actors
    share the rest (0.5 each on 2 CPUs, 0.75 on 16), so the node's cores are deliberately oversubscribed a
    little: a decode task sleeps while the actors have enough images, and the model never waits for one.
    (One process per core beats one process with a thread per core for these models on CPUs, and
    OpenMP's spinning threads degrade badly on a machine that also runs other work.)
    """
    cpus = max(1.0, float(cluster_cpus))
    use_gpu = config.use_gpu if config.use_gpu is not None else cluster_gpus >= 1
    if use_gpu and cluster_gpus < 1:
        raise ValueError("use_gpu: the Ray cluster has no GPU")
    threads = config.threads_per_actor or 1
    if use_gpu:
        num_actors = config.num_actors or max(1, int(cluster_gpus))
        actor_cpus = config.actor_cpus or 1.0
        decode_cpus = config.decode_cpus or 1.0
        decode_tasks = config.decode_tasks or max(1, int((cpus - num_actors * actor_cpus) // decode_cpus))
        batch_size = config.batch_size or 128
    else:
        num_actors = config.num_actors or max(1, int(cpus // threads))
        decode_tasks = config.decode_tasks or max(1, int(cpus // 4))
        decode_cpus = config.decode_cpus or min(1.0, cpus / 2 / decode_tasks)
        actor_cpus = config.actor_cpus or (cpus - decode_tasks * decode_cpus) / num_actors
        batch_size = config.batch_size or 32
    if decode_cpus > cpus:
        raise ValueError(f"decode_cpus={decode_cpus:g} exceeds the cluster's {cpus:g} CPUs")
    if actor_cpus <= 0 or num_actors * actor_cpus + decode_cpus > cpus + 1e-9:
        raise ValueError(f"{num_actors} actors of {actor_cpus:g} CPUs leave no CPU for decoding on a cluster of "
                         f"{cpus:g} CPUs: lower num_actors or actor_cpus")
    # Blocks of about DECODE_TARGET_BYTES of pixels (16..1024 images), but at least 4 per actor when the
    # dataset is small, so that every actor gets work; no more actors or writers than there are blocks.
    decode_batch = config.decode_batch_size or int(min(1024, max(16, DECODE_TARGET_BYTES // max(1, pixel_bytes)),
                                                        max(16, math.ceil(num_rows / (4 * num_actors)))))
    blocks = max(1, math.ceil(num_rows / decode_batch))
    if config.num_actors is None:
        num_actors = min(num_actors, blocks)
    itemsize = 4 if config.dtype == "float32" else 2
    rows_per_part = config.rows_per_part or int(min(max(256, PART_TARGET_BYTES // (dim * itemsize)),
                                                    max(16, math.ceil(num_rows / 8))))
    write_tasks = config.write_tasks or max(1, min(2, math.ceil(num_rows / rows_per_part)))
    object_store = config.object_store_memory
    if object_store is None and object_store_capacity:
        object_store = int(object_store_capacity * 0.5)
    return ExtractionPlan(use_gpu=use_gpu, num_actors=num_actors, actor_cpus=actor_cpus, threads_per_actor=threads,
                          batch_size=batch_size, decode_batch_size=decode_batch, decode_tasks=decode_tasks,
                          decode_cpus=decode_cpus, rows_per_part=rows_per_part,
                          decode_memory=int(4 * decode_batch * pixel_bytes + DECODE_BASE_MEMORY),
                          write_tasks=write_tasks, write_cpus=0.0, object_store_memory=object_store,
                          cluster_cpus=cpus, cluster_gpus=float(cluster_gpus))


@dataclass
class ExtractResult:
    """What a run did and what the store holds for the selected images.

    total: selected images. already_done: committed before this run (descriptors or failures).
    adopted: rows taken over from uncommitted parts of an earlier run. extracted / failed: descriptors /
    failures computed by this run. rows / failures: descriptors / failures the store now holds for the
    selection. images_per_s: this run's computed images (extracted + failed) per second of pipeline time;
    steady_images_per_s: the same between the first and the last part written (None with one part), i.e.
    without the pipeline's start-up.
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


def _ensure_ray(address: str | None) -> bool:
    """Connect to (or start) Ray unless connected; True when this call did."""
    return ray_session.connect(address)


def build_dataset(rows: pa.Table, plan: ExtractionPlan, model_ref, expected_hash: str, model_config: ModelConfig,
                  uri: str, metadata: StoreMetadata, task_id: str, storage_options: dict | None = None,
                  mixed_precision: bool = True, channels_last: bool = True):
    """The Ray Data pipeline rows -> decode -> embed -> write; iterating it yields `PART_SCHEMA` rows."""
    import ray

    step = plan.decode_batch_size
    blocks = [rows.slice(start, step) for start in range(0, rows.num_rows, step)]
    ds = ray.data.from_arrow(blocks)
    # Decode tasks declare the heap memory they need; besides informing the scheduler, remote arguments
    # that differ from the actors' keep Ray Data from fusing decoding into the model actors (where it would
    # run serially with the model instead of in parallel CPU tasks).
    ds = ds.map_batches(
        decode_images, fn_kwargs={"image_size": model_config.image_size, "max_side": model_config.max_side},
        batch_format="pyarrow", batch_size=step,
        compute=ray.data.TaskPoolStrategy(size=plan.decode_tasks), num_cpus=plan.decode_cpus,
        memory=plan.decode_memory, udf_modifying_row_count=False)
    ds = ds.map_batches(
        ImageEmbedder, fn_constructor_args=(model_ref, expected_hash),
        fn_constructor_kwargs={"batch_size": plan.batch_size, "use_gpu": plan.use_gpu,
                               "mixed_precision": mixed_precision, "channels_last": channels_last,
                               "threads": plan.threads_per_actor},
        batch_format="pyarrow", batch_size=step, compute=ray.data.ActorPoolStrategy(size=plan.num_actors),
        num_cpus=plan.actor_cpus, num_gpus=1 if plan.use_gpu else None, udf_modifying_row_count=False)
    return ds.map_batches(
        write_parts, fn_kwargs={"uri": uri, "metadata": metadata, "task_id": task_id,
                                "storage_options": storage_options},
        batch_format="pyarrow", batch_size=plan.rows_per_part,
        compute=ray.data.TaskPoolStrategy(size=plan.write_tasks), num_cpus=plan.write_cpus)


class _Throughput:
    """Logs images/s as parts come back from the workers; also measures the steady rate, from the first
    part to the last (which leaves out start-up: worker processes importing torch, loading the model)."""

    def __init__(self, total: int, every_s: float):
        self.total, self.every_s = total, every_s
        self.start = self.last = time.perf_counter()
        self.end: float | None = None
        self.rows = self.failed = 0
        self.first: tuple[float, int] | None = None  # (time, images done) when the first part arrived
        self.latest: tuple[float, int] | None = None

    def stop(self) -> None:
        self.end = time.perf_counter()

    @property
    def steady_images_per_s(self) -> float | None:
        if self.first is None or self.latest is None or self.latest[0] <= self.first[0]:
            return None
        return (self.latest[1] - self.first[1]) / (self.latest[0] - self.first[0])

    def add(self, kind: str, rows: int) -> None:
        if kind == "descriptors":
            self.rows += rows
        else:
            self.failed += rows
        now = time.perf_counter()
        if self.latest is not None and now - self.latest[0] < 1e-3:  # parts of one batch: one arrival
            self.latest = (self.latest[0], self.rows + self.failed)
        else:
            self.latest = (now, self.rows + self.failed)
        if self.first is None or self.first[0] == self.latest[0]:
            self.first = self.latest
        if now - self.last >= self.every_s:
            self.last = now
            done = self.rows + self.failed
            log.info("extract: %d/%d images (%d failed), %.1f images/s", done, self.total, self.failed,
                     done / max(now - self.start, 1e-9))

    @property
    def seconds(self) -> float:
        return (self.end or time.perf_counter()) - self.start


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


def _execute(config: ExtractConfig, todo: pa.Table, model: EmbeddingModel, digest: str, metadata: StoreMetadata,
             run_tag: str, storage_options: dict | None) -> tuple[ExtractionPlan, list[PartInfo], _Throughput]:
    """Run the Ray Data pipeline over `todo`; returns the plan, the parts the workers wrote, the meter."""
    import ray

    started_ray = _ensure_ray(config.ray_address)
    model_ref = None
    restore = None
    new_parts: list[PartInfo] = []
    try:
        resources = ray.cluster_resources()
        plan = plan_resources(config, resources.get("CPU", 1), resources.get("GPU", 0), todo.num_rows,
                              metadata.dim, estimate_pixel_bytes(model, todo.column("path").to_pylist()),
                              resources.get("object_store_memory"))
        log.info("extract plan: %s", asdict(plan))
        model_ref = ray.put(model_payload(model))
        restore = _set_data_context(plan, config.progress_bars)
        ds = build_dataset(todo, plan, model_ref, digest, model.config, config.out, metadata, run_tag,
                           storage_options, config.mixed_precision, config.channels_last)
        meter = _Throughput(todo.num_rows, config.log_every_s)
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0):
            for record in batch.to_pylist():
                record["rows_by_role_split"] = json.loads(record["rows_by_role_split"])
                part = PartInfo.from_dict(record)
                new_parts.append(part)
                meter.add(part.kind, part.num_rows)
        meter.stop()
        return plan, new_parts, meter
    finally:
        if restore is not None:
            restore()
        del model_ref
        if started_ray:
            ray.shutdown()


def run(config: ExtractConfig, storage_options: dict | None = None) -> ExtractResult:
    """Extract the selected images of `config.dataset` with `config.model` into the store `config.out`.

    Fails before any work (ValueError / FileNotFoundError naming the field) on a bad input, or when the
    store at `out` was made by another model or for another dataset. storage_options: for an s3:// store
    outside the usual AWS environment (never logged or recorded).
    """
    started = time.perf_counter()
    config.check_inputs()
    model = load_extraction_model(config.model, config.seed)
    digest = model_hash(model)
    dim = model.descriptor_dim
    splits = open_dataset(config.dataset, config.images_root, config.query_root)
    all_rows = image_rows(splits, config.images_root or dataset_root(config.dataset))
    rows = select_rows(all_rows, config.splits, config.roles)
    dataset_name = config.dataset_name or default_dataset_name(config.dataset)
    provenance = {"stage": "extract", "config": config.model_dump(mode="json"), "model_source": config.model,
                  "seed": config.seed}
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

    run_tag = f"x{uuid.uuid4().hex[:10]}"
    new_parts: list[PartInfo] = []
    meter = _Throughput(todo.num_rows, config.log_every_s)
    plan = None
    pipeline_seconds = 0.0
    if todo.num_rows:
        plan, new_parts, meter = _execute(config, todo, model, digest, metadata, run_tag, storage_options)
        pipeline_seconds = meter.seconds
        log.info("extract: %d/%d images (%d failed) in %.1f s, %.1f images/s", meter.rows + meter.failed,
                 meter.total, meter.failed, pipeline_seconds,
                 (meter.rows + meter.failed) / max(pipeline_seconds, 1e-9))
        computed = meter.rows + meter.failed
        if computed != todo.num_rows:
            raise RuntimeError(f"the pipeline returned {computed} rows for {todo.num_rows} images; nothing "
                               f"committed (rerun to resume)")

    committing = time.perf_counter()
    version = state.version
    to_commit = state.adopted + new_parts
    run_provenance = {"run": run_tag, "extracted": meter.rows, "failed": meter.failed, "adopted": adopted,
                      "plan": asdict(plan) if plan else None}
    if to_commit:
        if state.committed:
            manifest = commit_update(config.out, to_commit, expected_version=state.version,
                                     storage_options=storage_options, provenance=run_provenance)
        else:
            manifest = commit(config.out, to_commit, metadata, storage_options=storage_options,
                              provenance=run_provenance)
        version = manifest.version
        delete_parts_of_run(config.out, run_tag, storage_options)
    elif not state.committed:
        # Nothing selected at all: still leave an (empty) committed store behind.
        version = commit(config.out, [], metadata, storage_options=storage_options,
                         provenance=run_provenance).version
    check = count_missing(rows.column("id"), config.out, storage_options)
    if check["missing"] or check["in_both"]:
        raise RuntimeError(f"{config.out}: after the commit {check['missing']} selected images are neither "
                           f"extracted nor failed (e.g. {check['examples']}) and {check['in_both']} are both")
    failures_in_selection = _failures_in(rows, config.out, storage_options)
    log.info("extract: committed and checked in %.1f s", time.perf_counter() - committing)
    result = ExtractResult(
        uri=config.out, dataset_name=dataset_name, model_hash=digest, dim=dim, total=rows.num_rows,
        already_done=already, adopted=adopted, extracted=meter.rows, failed=meter.failed,
        rows=rows.num_rows - failures_in_selection, failures=failures_in_selection,
        max_failure_fraction=config.max_failure_fraction, version=version, seconds=time.perf_counter() - started,
        pipeline_seconds=pipeline_seconds,
        images_per_s=(meter.rows + meter.failed) / pipeline_seconds if pipeline_seconds else 0.0,
        parts_written=len(new_parts), deleted_parts=state.deleted, plan=asdict(plan) if plan else {},
        steady_images_per_s=meter.steady_images_per_s)
    log.info("extract done: %s version %d, %d descriptors and %d failures for %d images (%.1f s)", result.uri,
             result.version, result.rows, result.failures, result.total, result.seconds)
    return result


def _failures_in(rows: pa.Table, uri: str, storage_options: dict | None) -> int:
    """How many of `rows` the store's failures table lists."""
    import pyarrow.compute as pc

    from sare_core.store import open_store

    failed = open_store(uri, storage_options=storage_options).failures().column("id")
    if not len(failed):
        return 0
    return int(pc.sum(pc.is_in(rows.column("id"), failed)).as_py() or 0)
