"""How an extraction spreads over the cluster: `plan_resources` fills the resource fields a config leaves
unset from the cluster's CPUs, GPUs and object store, and the dataset's size."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sare_core.models.images import load_rgb, resized_uint8

from .config import ExtractSettings

PART_TARGET_BYTES = 64 << 20  # descriptor bytes per store part
DECODE_TARGET_BYTES = 32 << 20  # decoded pixel bytes per decode task (fewer, larger tasks: less overhead)
# Layout "driver" (auto): a one-node CPU cluster and at most this many model passes (images x models) per
# CPU. An actor costs a fixed start-up (a new process importing torch and building the model: ~3-4 s on the
# project's 2-core machine) that the driver, which already holds the model, does not pay; with more work the
# actors' single-threaded efficiency wins (benchmarks/extract_throughput.py measures one model,
# benchmarks/extract_many.py two; docs/BENCHMARKS.md).
DRIVER_LAYOUT_MAX_IMAGES_PER_CPU = 2500
MIN_BLOCK_IMAGES = 32  # a decode task or model call on fewer images costs more in scheduling than it saves
BLOCKS_PER_ACTOR = 16  # small datasets: at least this many blocks per model actor
# Layout "driver": one consumer, so blocks need no balancing across actors. They are sized by bytes, but no
# larger than 1/DRIVER_MIN_BLOCKS of the job (nor smaller than MIN_BLOCK_IMAGES). Each decode task costs Ray's
# per-task overhead and, on a CPU node, runs beside the driver's model threads and slows them: fewer, larger
# blocks cut both. The first block is smaller (DRIVER_FIRST_BLOCK_BATCHES model batches), so that the model
# starts as soon as a few images are decoded; the last holds what is left, however few.
# Measured by benchmarks/extract_throughput.py --decode-batch-sizes (docs/BENCHMARKS.md).
DRIVER_MIN_BLOCKS = 4
DRIVER_FIRST_BLOCK_BATCHES = 2
DECODE_BASE_MEMORY = 384 << 20  # heap of a decode worker besides its pixels (Python, Ray, Arrow, PIL, an image)


@dataclass
class ExtractionPlan:
    """How the work is spread; every field is a config value or its automatic default. With layout
    "driver" the model runs in the driver process with `threads_per_actor` threads and no actor exists."""

    layout: str
    use_gpu: bool
    num_actors: int
    actor_cpus: float
    threads_per_actor: int
    batch_size: int
    decode_batch_size: int
    first_block_size: int  # images in the first decode block (the others: decode_batch_size)
    decode_tasks: int
    decode_cpus: float
    decode_memory: int
    rows_per_part: int
    write_tasks: int
    write_cpus: float
    object_store_memory: int | None
    cluster_cpus: float
    cluster_gpus: float


def estimate_pixel_bytes(model, paths: list[str]) -> int:
    """Bytes of one decoded, resized image: from the model's fixed size, else from a sample image."""
    config = model.config
    if config.image_size is not None:
        return int(config.image_size[0] * config.image_size[1] * 3)
    for path in paths[:3]:
        try:
            return int(resized_uint8(load_rgb(path), None, config.max_side).nbytes)
        except Exception:  # noqa: BLE001 - a bad sample image is reported by the pipeline, not here
            continue
    side = config.max_side or 640
    return side * side * 3


def choose_layout(config: ExtractSettings, cpus: float, use_gpu: bool, num_rows: int, nodes: int,
                  models: int = 1) -> str:
    """"driver" or "actors": the config's choice, or for "auto" the driver on a one-node CPU cluster with at
    most DRIVER_LAYOUT_MAX_IMAGES_PER_CPU model passes (num_rows x models) per CPU, where the actors'
    start-up would dominate. Models that share a frozen prefix cost less than one pass each, so this errs
    towards the actors; for the demo's two models over its 3,400 test images they were the faster layout
    (results/extract_many.json)."""
    if config.layout != "auto":
        return config.layout
    if nodes == 1 and not use_gpu and config.num_actors is None and \
            num_rows * models <= DRIVER_LAYOUT_MAX_IMAGES_PER_CPU * cpus:
        return "driver"
    return "actors"


def plan_resources(config: ExtractSettings, cluster_cpus: float, cluster_gpus: float, num_rows: int, dim: int,
                   pixel_bytes: int, object_store_capacity: float | None = None, nodes: int = 1,
                   models: int = 1) -> ExtractionPlan:
    """Fill the resource fields the config leaves unset from the cluster's resources, and choose the layout
    (`choose_layout`; `models`: how many models run over each image, `run_many`).

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
    # Blocks of about DECODE_TARGET_BYTES of pixels (16..1024 images); for actors at least BLOCKS_PER_ACTOR
    # per actor when the dataset is small: the first block reaches a model sooner and the last ones spread over every
    # actor (with 4 per actor, 3,000 images went as 8 blocks of 375; the first took 4 s to embed and the
    # last kept one actor busy while the other idled).
    layout = choose_layout(config, cpus, use_gpu, num_rows, nodes, models)
    by_bytes = min(1024, max(16, DECODE_TARGET_BYTES // max(1, pixel_bytes)))
    if layout == "driver":
        decode_batch = config.decode_batch_size or int(min(by_bytes, max(MIN_BLOCK_IMAGES,
                                                                        math.ceil(num_rows / DRIVER_MIN_BLOCKS))))
    else:
        decode_batch = config.decode_batch_size or int(min(
            by_bytes, max(MIN_BLOCK_IMAGES, math.ceil(num_rows / (BLOCKS_PER_ACTOR * num_actors)))))
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
    first_block = decode_batch
    if layout == "driver":  # the driver's model takes every core; the decode tasks run beside it
        num_actors, actor_cpus, threads = 0, 0.0, config.threads_per_actor or max(1, int(cpus))
        first_block = min(decode_batch, DRIVER_FIRST_BLOCK_BATCHES * batch_size)
    return ExtractionPlan(layout=layout, use_gpu=use_gpu, num_actors=num_actors, actor_cpus=actor_cpus,
                          threads_per_actor=threads, batch_size=batch_size, decode_batch_size=decode_batch,
                          first_block_size=first_block, decode_tasks=decode_tasks,
                          decode_cpus=decode_cpus, rows_per_part=rows_per_part,
                          decode_memory=int(4 * decode_batch * pixel_bytes + DECODE_BASE_MEMORY),
                          write_tasks=write_tasks, write_cpus=0.0, object_store_memory=object_store,
                          cluster_cpus=cpus, cluster_gpus=float(cluster_gpus))
