"""Extraction throughput: the Ray Data pipeline against a plain single-process PyTorch loop, and a
synthetic Pitts250k extracted end to end.

Scale part (first). The synthetic city's pitts250k preset is extracted end to end with the tiny backbone
(NetVLAD, 64 clusters: 4096-D float32) into a new store, --big-fraction of its images (the first rows of
each split and role). Reported: wall time, images/s, and peak memory sampled every 0.5 s: the private
resident memory (RssAnon) of this process and every process it started (Ray's raylet, GCS, workers)
plus the object store's resident bytes (its shared-memory file); the plain sum of RSS (which counts
shared pages once per process) is given too.

Ratio part. The same images and the same model go through
  * a plain loop: one process; decode + resize (the model's Preprocessor), batches of 32 through the
    model, descriptors written as one store (`write_store`); run twice, with torch's default threads
    (one per core) and with one thread, and the faster of the two is the baseline;
  * the Ray pipeline (`pipelines.extract.run`, automatic plan) into a new store;
in alternating order, --rounds times, on one local Ray instance started beforehand (its start-up time is
reported apart). Ray's workers run at niceness 0 like the plain loop (Ray's default is 15), so that on a
machine shared with other work the comparison is not decided by scheduling priority. Two figures per
run: end to end (wall time from model file and dataset path to the committed store; for Ray this
includes starting the actor processes, which import torch and load the model), and after start-up (the
plain loop's decode + model loop alone; Ray's images between its first and last part). The pipeline runs
with its automatic plan ("ray") and, for the comparison of layouts, with each layout forced
(--layouts: "ray_actors", "ray_driver") and with each decode block size forced (--decode-batch-sizes N:
"ray_blocksN"). Workloads (WORKLOADS, --workloads): the tiny backbone on 60,000
images of the pitts250k city (64x48 px; decoding is a large share of the work), ImageNet EfficientNet-Lite0
on 3,000 images of the small city (160x120 px) and on 30,000 of the pitts30k city (96x72 px), and VGG16
(conv5_3) at 480x640 on 200 small-city images upscaled, all with NetVLAD. Also reported: the CPU time per image of each (this process and all it
started, Ray's daemons and workers included: a figure the machine's other load hardly moves; their
quotient is the "CPU efficiency", 1.0 when Ray spends no extra CPU per image), and the largest difference
between the two sets of descriptors.

Cities are generated under <tmp>/sare_extract_bench/ when missing (generation time reported apart).

    .venv/bin/python benchmarks/extract_throughput.py                     # both parts
    .venv/bin/python benchmarks/extract_throughput.py --skip-big --workloads efficientnet_lite0_3k \
        efficientnet_lite0_30k --rounds 3

Results: results/extract_throughput.json (and a summary on stdout); a part skipped with --skip-big or
--skip-ratio keeps its earlier entry there (each part records the command and machine it ran with).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from pipelines.extract.config import ExtractConfig  # noqa: E402
from pipelines.extract.pipeline import run  # noqa: E402
from pipelines.model.specs import load_model_spec  # noqa: E402
from sare_core.allocator import keep_freed_memory  # noqa: E402
from sare_core.data import PlaceDataset, write_manifest  # noqa: E402
from sare_core.data.image_rows import dataset_root, image_rows, open_dataset  # noqa: E402
from sare_core.data.synth.city import GENERATOR_VERSION, city_is_current, generate_city  # noqa: E402
from sare_core.models import load_rgb, model_hash  # noqa: E402
from sare_core.store import StoreMetadata, open_store, write_store  # noqa: E402

log = logging.getLogger("extract_throughput")

MODELS = {
    "tiny": {"backbone": "tiny", "num_clusters": 64},
    "efficientnet_lite0": {"backbone": "efficientnet_lite0", "weights": "imagenet", "num_clusters": 16,
                           "reduction_dim": 64},
    # VGG16 cut at conv5_3 + NetVLAD 64 at the paper's input size (random weights: the same compute, no download)
    "vgg16_480x640": {"backbone": "vgg16", "weights": "none", "num_clusters": 64, "whitening_dim": None,
                      "image_size": [480, 640]},
}
# Ratio part workloads: name -> (model, city preset, images: the first rows of the city's manifest).
WORKLOADS = {
    "tiny_60k": ("tiny", "pitts250k", 60_000),
    "efficientnet_lite0_3k": ("efficientnet_lite0", "small", 3_000),
    "efficientnet_lite0_30k": ("efficientnet_lite0", "pitts30k", 30_000),
    "vgg16_480x640_200": ("vgg16_480x640", "small", 200),
}
BIG_MODEL = {"backbone": "tiny", "num_clusters": 64}


def city_dir(folder: str | None, preset: str, seed: int) -> str:
    """The benchmark's own city folder (not /tmp/sare_synth_*, which other scripts regenerate)."""
    return folder or os.path.join(tempfile.gettempdir(), "sare_extract_bench", f"{preset}_seed{seed}")


def ensure_city(folder: str, preset: str, seed: int) -> float | None:
    """Generate the city unless `folder` holds it as this code makes it (`city_is_current`); returns the
    generation seconds, None when it was there."""
    if city_is_current(folder, preset, seed):
        return None
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    log.info("generating the %s city (seed %d) in %s", preset, seed, folder)
    start = time.perf_counter()
    generate_city(folder, preset=preset, seed=seed)
    return time.perf_counter() - start


def subset_manifest(dataset: str, count: int | None, fraction: float | None, folder: str) -> str:
    """A manifest of the first `count` images (or `fraction` of each split and role) of `dataset`."""
    splits = open_dataset(dataset)
    picked = []
    remaining = count
    for split, d in splits.items():
        def take(paths, utm, share):
            n = len(paths) if share is None else int(round(len(paths) * share))
            return paths[:n], utm[:n]

        if count is not None:
            n_db = min(d.num_db, remaining)
            n_q = min(d.num_q, remaining - n_db)
            db, db_utm = d.db_paths[:n_db], d.db_utm[:n_db]
            q, q_utm = d.q_paths[:n_q], d.q_utm[:n_q]
            remaining -= n_db + n_q
        else:
            db, db_utm = take(d.db_paths, d.db_utm, fraction)
            q, q_utm = take(d.q_paths, d.q_utm, fraction)
        if len(db) + len(q):
            picked.append(PlaceDataset(name=d.name, db_paths=db, q_paths=q, db_utm=db_utm, q_utm=q_utm,
                                       split=split, pos_dist_thr=d.pos_dist_thr))
        if remaining is not None and remaining <= 0:
            break
    return write_manifest(os.path.join(folder, "manifest.parquet"), picked)


def write_model_yaml(folder: str, name: str, config: dict) -> str:
    import yaml

    path = os.path.join(folder, f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


def plain_loop(dataset: str, model_spec: str, out: str, batch_size: int = 32,
               threads: int | None = None) -> tuple[float, float, int]:
    """The baseline: one process, no Ray, `threads` torch threads (None: torch's default, one per core).
    Returns (seconds in all, seconds of the decode + model loop alone, images)."""
    default_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _plain_loop(dataset, model_spec, out, batch_size)
    finally:
        torch.set_num_threads(default_threads)


def _plain_loop(dataset: str, model_spec: str, out: str, batch_size: int) -> tuple[float, float, int]:
    start = time.perf_counter()
    model = load_model_spec(model_spec)
    prep = model.preprocessor
    rows = image_rows(open_dataset(dataset), dataset_root(dataset))
    paths = rows.column("path").to_pylist()
    chunks = []
    loop_start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(paths), batch_size):
            pixels = np.stack([prep.to_uint8(load_rgb(p)) for p in paths[i:i + batch_size]])
            chunks.append(model(prep.normalize_uint8(pixels)).numpy())
    loop_seconds = time.perf_counter() - loop_start
    descriptors = np.concatenate(chunks)
    metadata = StoreMetadata(dim=model.descriptor_dim, dataset="plain", model_hash=model_hash(model))
    utm = np.column_stack([rows.column("utm_east").to_numpy(), rows.column("utm_north").to_numpy()])
    write_store(out, metadata, ids=rows.column("id").to_pylist(), roles=rows.column("role").to_pylist(),
                descriptors=descriptors, splits=rows.column("split").to_pylist(), utm=utm)
    return time.perf_counter() - start, loop_seconds, len(paths)


def ray_pipeline(dataset: str, model_spec: str, out: str, **overrides) -> tuple[float, object]:
    start = time.perf_counter()
    result = run(ExtractConfig(dataset=dataset, model=model_spec, out=out, progress_bars=False, **overrides))
    return time.perf_counter() - start, result


class CpuMeter:
    """CPU seconds (user + system) that this process and every process it started spend during a window.

    A thread samples the process tree every 0.2 s and keeps, per process (pid and start time), its CPU
    time when first seen (0 for one started inside the window) and when last seen; the window's CPU is
    the sum of the differences. Children's cutime is not used: a process that exits is counted up to its
    last sample (at most 0.2 s of it can be missed), and nothing is counted twice.
    """

    def __init__(self, interval_s: float = 0.2):
        self.interval_s = interval_s
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.first: dict[tuple[int, int], int] = {}
        self.last: dict[tuple[int, int], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._window_start = 0

    def _sample(self) -> None:
        for pid in MemorySampler._tree():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cpu, started = int(fields[11]) + int(fields[12]), int(fields[19])
            key = (pid, started)
            if key not in self.first:
                self.first[key] = 0 if started > self._window_start else cpu
            self.last[key] = cpu

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self):
        with open("/proc/uptime") as f:  # start times are in ticks since boot
            self._window_start = int(float(f.read().split()[0]) * self.ticks)
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(self.last[k] - self.first[k] for k in self.last) / self.ticks


def max_difference(store_a: str, store_b: str) -> float:
    a, b = open_store(store_a).read(), open_store(store_b).read()
    order = {i: k for k, i in enumerate(b.ids)}
    index = np.array([order[i] for i in a.ids])
    return float(np.abs(a.descriptors - b.descriptors[index]).max())


class MemorySampler:
    """Peak memory of this process and its descendants, plus Ray's object store, sampled in a thread."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.peak_private = self.peak_rss = self.peak_object_store = self.peak_total = 0
        self.samples = 0
        self.at_peak: dict[str, float] = {}  # private RSS by process name at the peak sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _tree() -> list[int]:
        parents: dict[int, list[int]] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(name))
        tree, todo = [], [os.getpid()]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(parents.get(pid, []))
        return tree

    @staticmethod
    def _status(pid: int) -> tuple[int, int, str]:
        rss = anon = 0
        name = "?"
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) * 1024
                    elif line.startswith("RssAnon:"):
                        anon = int(line.split()[1]) * 1024
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            name = "driver" if pid == os.getpid() else os.path.basename(argv[0].decode(errors="replace"))
            if name.startswith("python") and len(argv) > 1:
                name = os.path.basename(argv[1].decode(errors="replace")) or name
        except (OSError, IndexError):
            pass
        return rss, anon, name

    def _object_store_bytes(self, tree: list[int]) -> int:
        """Bytes of shared memory the object store holds: the allocated size of the plasma file that our
        raylet maps (a tmpfs file, usually already unlinked, reached through /proc/<raylet>/map_files)."""
        for pid in tree:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"raylet" not in f.read().split(b"\0")[0]:
                        continue
                with open(f"/proc/{pid}/maps") as f:
                    ranges = {line.split()[0] for line in f if "/plasma" in line}
                inodes: dict[int, int] = {}
                for mapped in ranges:
                    st = os.stat(f"/proc/{pid}/map_files/{mapped}")
                    inodes[st.st_ino] = st.st_blocks * 512
                return sum(inodes.values())
            except OSError:
                continue
        return 0

    def sample(self) -> None:
        rss = private = 0
        tree = self._tree()
        by_name: dict[str, float] = {}
        for pid in tree:
            r, a, name = self._status(pid)
            rss += r
            private += a
            by_name[name] = by_name.get(name, 0) + a / (1 << 30)
        store = self._object_store_bytes(tree)
        self.samples += 1
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_private = max(self.peak_private, private)
        self.peak_object_store = max(self.peak_object_store, store)
        if private + store > self.peak_total:
            self.peak_total = private + store
            self.at_peak = {k: round(v, 3) for k, v in sorted(by_name.items(), key=lambda kv: -kv[1]) if v > 0.01}

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()

    def report(self) -> dict:
        gib = 1 << 30
        return {"peak_private_rss_gib": self.peak_private / gib, "peak_object_store_gib": self.peak_object_store / gib,
                "peak_private_rss_plus_object_store_gib": self.peak_total / gib,
                "peak_sum_of_rss_gib": self.peak_rss / gib, "samples": self.samples,
                "private_rss_gib_by_process_at_peak": self.at_peak}


def ratio_part(args, work: str, generation: dict) -> dict:
    folder = os.path.join(work, "ratio")
    os.makedirs(folder)
    datasets, specs, described = {}, {}, {}
    for name in args.workloads:
        model, preset, images = WORKLOADS[name]
        city = city_dir(args.big_dir if preset == args.big_preset else None, preset, args.seed)
        datasets[name] = subset_manifest(os.path.join(city, "manifest.parquet"), images, None,
                                         tempfile.mkdtemp(dir=folder))
        specs[name] = write_model_yaml(folder, model, MODELS[model])
        described[name] = (f"{model} on the first {images} images of the {preset} city's manifest.parquet "
                           f"(seed {args.seed}, generator {GENERATOR_VERSION})")
    out: dict = {"datasets": described, "generation_seconds": generation, "models": {}}
    # The pipeline's runs: the automatic plan ("ray"), each forced layout, each forced decode block size.
    variants = {"ray": {"layout": "auto"}} | {f"ray_{layout}": {"layout": layout} for layout in args.layouts} | \
        {f"ray_blocks{n}": {"decode_batch_size": n} for n in args.decode_batch_sizes}
    # Warm-up: the first Ray Data run starts worker processes; the first plain loop loads libraries.
    for name, spec in specs.items():
        warm = subset_manifest(datasets[name], 64, None, tempfile.mkdtemp(dir=folder))
        plain_loop(warm, spec, tempfile.mkdtemp(dir=folder) + "/s")
        ray_pipeline(warm, spec, tempfile.mkdtemp(dir=folder) + "/s")
    for name, spec in specs.items():
        dataset = datasets[name]
        rounds = []
        for r in range(args.rounds):
            timings = {}
            kinds = ["plain"] + (["plain_1_thread"] if not args.no_single_thread else []) + list(variants)
            order = kinds if r % 2 == 0 else kinds[::-1]
            stores = {}
            for kind in order:
                stores[kind] = os.path.join(folder, f"{name}-{r}-{kind}")
                load = os.getloadavg()[0]
                with CpuMeter() as cpu:
                    if kind.startswith("plain"):
                        threads = 1 if kind == "plain_1_thread" else None
                        seconds, loop_seconds, n = plain_loop(dataset, spec, stores[kind], threads=threads)
                        timings[kind] = {"seconds": seconds, "images_per_s": n / seconds,
                                         "steady_images_per_s": n / loop_seconds, "load_avg_1m": load,
                                         "torch_threads": threads or torch.get_num_threads()}
                        images_done = n
                    else:
                        seconds, result = ray_pipeline(dataset, spec, stores[kind], **variants[kind])
                        timings[kind] = {"seconds": seconds, "images_per_s": result.total / seconds,
                                         "pipeline_images_per_s": result.images_per_s,
                                         "steady_images_per_s": result.steady_images_per_s,
                                         "load_avg_1m": load, "plan": result.plan}
                        images_done = result.total
                timings[kind]["cpu_ms_per_image"] = 1000 * cpu.seconds / images_done
            # The baseline is the faster of the two plain loops (torch's default threads, or one thread).
            plains = [k for k in ("plain", "plain_1_thread") if k in timings]
            best = max(timings[k]["images_per_s"] for k in plains)
            timings["baseline_images_per_s"] = best
            timings["ratio"] = timings["ray"]["images_per_s"] / best
            best_steady = max(timings[k]["steady_images_per_s"] for k in plains)
            for kind in variants:
                if kind != "ray":
                    timings["ratio_" + kind[len("ray_"):]] = timings[kind]["images_per_s"] / best
            timings["steady_ratio"] = (timings["ray"]["steady_images_per_s"] or 0.0) / best_steady
            # Load-independent: CPU time per image of the baseline loop over that of the whole Ray run
            # (driver, raylet, GCS, every worker); 1.0 means Ray spends no extra CPU per image.
            baseline = max(plains, key=lambda k: timings[k]["images_per_s"])
            timings["cpu_efficiency"] = timings[baseline]["cpu_ms_per_image"] / timings["ray"]["cpu_ms_per_image"]
            timings["max_abs_difference"] = max(max_difference(stores[k], stores["plain"]) for k in kinds[1:])
            for path in stores.values():
                shutil.rmtree(path, ignore_errors=True)
            log.info("%s round %d: plain %.1f images/s (1 thread: %.1f), ray %.1f images/s (%s), ratio %.3f; "
                     "after start-up ratio %.3f; %s; CPU per image %.3f ms plain, %.3f ms ray (load %.1f)", name, r,
                     timings["plain"]["images_per_s"], timings.get("plain_1_thread", {}).get("images_per_s", 0),
                     timings["ray"]["images_per_s"], timings["ray"]["plan"]["layout"], timings["ratio"],
                     timings["steady_ratio"],
                     ", ".join(f"{k} {timings[k]:.3f}" for k in timings if k.startswith("ratio_")),
                     timings[baseline]["cpu_ms_per_image"], timings["ray"]["cpu_ms_per_image"],
                     timings["plain"]["load_avg_1m"])
            rounds.append(timings)
        out["models"][name] = {
            "config": MODELS[WORKLOADS[name][0]], "rounds": rounds,
            "median_plain_images_per_s": statistics.median(t["plain"]["images_per_s"] for t in rounds),
            "median_plain_1_thread_images_per_s": statistics.median(t["plain_1_thread"]["images_per_s"]
                                                                    for t in rounds) if not args.no_single_thread else None,
            **{f"median_ratio_{kind[len('ray_'):]}": statistics.median(t["ratio_" + kind[len("ray_"):]] for t in rounds)
               for kind in variants if kind != "ray"},
            "layout_chosen": rounds[0]["ray"]["plan"]["layout"],
            "median_baseline_images_per_s": statistics.median(t["baseline_images_per_s"] for t in rounds),
            "median_ray_images_per_s": statistics.median(t["ray"]["images_per_s"] for t in rounds),
            "median_ratio": statistics.median(t["ratio"] for t in rounds),
            "median_steady_ratio": statistics.median(t["steady_ratio"] for t in rounds),
            "median_cpu_efficiency": statistics.median(t["cpu_efficiency"] for t in rounds),
            "max_abs_difference": max(t["max_abs_difference"] for t in rounds),
        }
    return out


def big_part(args, work: str, generation: float | None) -> dict:
    city = city_dir(args.big_dir, args.big_preset, args.seed)
    folder = os.path.join(work, "big")
    os.makedirs(folder)
    dataset = os.path.join(city, "manifest.parquet")
    if args.big_fraction < 1:
        dataset = subset_manifest(dataset, None, args.big_fraction, folder)
    spec = write_model_yaml(folder, "tiny64", BIG_MODEL)
    store = args.big_store or os.path.join(folder, "store")
    with MemorySampler() as memory:
        seconds, result = ray_pipeline(dataset, spec, store)
    report = {"dataset": f"{args.big_preset} city (seed {args.seed}, generator {GENERATOR_VERSION})",
              "fraction": args.big_fraction,
              "generation_seconds": generation, "images": result.total, "descriptors": result.rows,
              "failures": result.failures, "dim": result.dim, "model": BIG_MODEL, "wall_seconds": seconds,
              "pipeline_seconds": result.pipeline_seconds, "images_per_s": result.total / seconds,
              "pipeline_images_per_s": result.images_per_s, "parts": result.parts_written, "plan": result.plan,
              "store_bytes": sum(p.size_bytes for p in open_store(store).parts), **memory.report()}
    log.info("%s: %d images in %.1f s (%.1f images/s), peak memory %.2f GiB (private RSS %.2f + object store "
             "%.2f)", report["dataset"], result.total, seconds, report["images_per_s"],
             report["peak_private_rss_plus_object_store_gib"], report["peak_private_rss_gib"],
             report["peak_object_store_gib"])
    if not args.big_store:
        shutil.rmtree(store, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS),
                        help="ratio part: model x images (WORKLOADS); cities are generated under "
                        "<tmp>/sare_extract_bench/<preset>_seed<seed> when missing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layouts", nargs="*", default=["actors", "driver"], choices=["actors", "driver"],
                        help="also run the pipeline with each of these layouts forced (besides the automatic plan)")
    parser.add_argument("--decode-batch-sizes", nargs="*", type=int, default=[],
                        help="also run the automatic plan with each of these decode block sizes (images) forced")
    parser.add_argument("--no-single-thread", action="store_true", help="skip the 1-thread plain loop")
    parser.add_argument("--skip-ratio", action="store_true")
    parser.add_argument("--big-preset", default="pitts250k")
    parser.add_argument("--big-dir", help="scale part: city folder (default "
                        "<tmp>/sare_extract_bench/<preset>_seed<seed>, generated when missing)")
    parser.add_argument("--big-fraction", type=float, default=1.0, help="share of each split's images")
    parser.add_argument("--big-store", help="keep the scale part's store here (default: a deleted temp folder)")
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--work-dir", help="scratch folder (default: a new temp folder)")
    parser.add_argument("--out", default=os.path.join(REPO, "results", "extract_throughput.json"))
    args = parser.parse_args(argv)
    # The plain loop runs with the allocator settings the pipeline's processes use (sare_core.allocator), so
    # that the ratio compares the layouts, not the allocators.
    keep_freed_memory()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import ray

    work = tempfile.mkdtemp(prefix="extract_bench_", dir=args.work_dir)
    results: dict = {
        "command": "python benchmarks/extract_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "ray": ray.__version__, "torch_threads": torch.get_num_threads(),
                    "load_avg_at_start": os.getloadavg()},
    }
    # Cities first, so that generating them (minutes) never overlaps a timed run.
    presets = set() if args.skip_ratio else {WORKLOADS[w][1] for w in args.workloads}
    presets |= set() if args.skip_big else {args.big_preset}
    generation = {preset: ensure_city(city_dir(args.big_dir if preset == args.big_preset else None, preset,
                                               args.seed), preset, args.seed) for preset in sorted(presets)}
    big_generation = generation.get(args.big_preset)
    # Ray starts its workers at niceness 15; the plain loop runs at 0. On a machine that also runs other
    # work that difference alone would decide the comparison, so this Ray instance's workers run at 0 too.
    os.environ["RAY_worker_niceness"] = "0"
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    results["ray_start_seconds"] = time.perf_counter() - start
    results["machine"]["load_avg_before_timing"] = os.getloadavg()
    try:
        # The scale part first: its memory figures then include no leftovers of the ratio part's runs.
        if not args.skip_big:
            results["pitts250k"] = big_part(args, work, big_generation)
        if not args.skip_ratio:
            results["ratio"] = ratio_part(args, work, generation)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    for part in ("pitts250k", "ratio"):  # each part records the command and machine it ran with
        if part in results:
            results[part]["command"] = results["command"]
            results[part]["machine"] = results["machine"]
    for record in results.get("ratio", {}).get("models", {}).values():  # kept with each workload when merged
        record["command"], record["machine"] = results["command"], results["machine"]
    if os.path.isfile(args.out):  # a part or workload skipped in this run keeps its figures from an earlier run
        with open(args.out) as f:
            previous = json.load(f)
        for part in ("pitts250k", "ratio"):
            if part not in results and part in previous:
                results[part] = previous[part]
        if "ratio" in previous and "ratio" in results and results["ratio"] is not previous["ratio"]:
            for name, model in previous["ratio"].get("models", {}).items():
                if name not in results["ratio"]["models"]:
                    results["ratio"]["models"][name] = model
                    results["ratio"]["datasets"][name] = previous["ratio"]["datasets"].get(name)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    for name, model in results.get("ratio", {}).get("models", {}).items():
        print(f"{name:<20} plain {model['median_baseline_images_per_s']:8.1f} images/s  ray "
              f"{model['median_ray_images_per_s']:8.1f} images/s  median ratio {model['median_ratio']:.3f} "
              f"(after start-up {model['median_steady_ratio']:.3f}, CPU efficiency "
              f"{model['median_cpu_efficiency']:.3f})  "
              f"max |diff| {model['max_abs_difference']:.1e}")
    if "pitts250k" in results:
        big = results["pitts250k"]
        print(f"{big['dataset']}: {big['images']} images ({100 * big['fraction']:.0f}%) in {big['wall_seconds']:.0f} s "
              f"({big['images_per_s']:.0f} images/s), peak {big['peak_private_rss_plus_object_store_gib']:.2f} GiB "
              f"(private RSS {big['peak_private_rss_gib']:.2f} + object store {big['peak_object_store_gib']:.2f})")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
