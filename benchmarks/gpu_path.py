"""The GPU path, measured on one machine without Ray: VGG16-NetVLAD extraction throughput, a DDP training
step on NCCL, and FAISS GPU search. One prepared script for a rented GPU box.

Needs only PyTorch (with CUDA for the real run) and what `sare_core.models` imports (torchvision, numpy,
pydantic, fsspec, pillow); it imports `sare_core` and never `pipelines` or Ray. FAISS is optional: without
it (or without its GPU build) the search part says why it was skipped. No downloads: the model has random
weights (speed does not depend on them).

Parts (each entry in the JSON names its settings):
  extraction   VGG16 cut at conv5_3 + NetVLAD(64) (32,768-D descriptors), images of 480x640, batches of
               --batch, inference mode; float32, then bfloat16 autocast with channels-last memory format,
               then float16 autocast with channels-last (what `sare extract` uses on GPUs); images/s from
               the median batch time, each mode's ratio to float32, and how close its descriptors come to
               the float32 ones (cosine similarity) on the same batch. Each mode's TFLOP/s (images/s x
               one image's forward FLOPs, counted by torch's FlopCounterMode) as a fraction of the card's
               data-sheet dense bfloat16 peak and of an 8192^3 bfloat16 matrix product timed in the run.
  train_step   one SARE-joint (gaussian) step: tuples of 1 query + 1 positive + 10 negatives, 4 tuples
               per GPU (48 images of 480x640 in one forward pass), SGD on the trainable part (conv5 +
               NetVLAD), DistributedDataParallel over NCCL with one process per GPU
               (torch.multiprocessing.spawn, world size = number of GPUs, also 1); median step time, in
               channels-last (as `sare train`) and again channels-first.
  faiss        exact L2 search (IndexFlatL2) of --faiss-queries queries against --faiss-db random
               normalised vectors of --faiss-dim dims, k=20, over all GPUs (index_cpu_to_all_gpus),
               against FAISS on the CPU on a subset of the queries; agreement of the two top-20 lists.

    python benchmarks/gpu_path.py                    # on the GPU machine -> results/gpu_path.json
    python benchmarks/gpu_path.py --quick            # tiny sizes, runs on a CPU (smoke test of the script)

A part that did not run is recorded as a string "skipped: <why>" (without CUDA: "skipped: no CUDA"), one that
failed as "failed: <error>"; the JSON is rewritten after every part. With --quick the same training step also
runs on gloo/CPU (world size 1, both layouts) so the code path is exercised before any GPU time is spent; the
whole device call is benchmarks/gpu_device_check.sh (docs/BENCHMARKS.md, "GPU path").
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sare_core.losses import sare_loss  # noqa: E402
from sare_core.models import ModelConfig, build_model  # noqa: E402
from sare_core.training.checkpoint import TrainingState  # noqa: E402
from sare_core.training.config import TrainConfig  # noqa: E402

FULL = {"height": 480, "width": 640, "batch": 32, "warmup": 5, "iters": 20, "train_warmup": 3, "train_steps": 10,
        "faiss_db": 250_000, "faiss_queries": 10_000, "faiss_dim": 4096, "faiss_cpu_queries": 500}
QUICK = {"height": 64, "width": 80, "batch": 2, "warmup": 1, "iters": 2, "train_warmup": 1, "train_steps": 2,
         "faiss_db": 2_000, "faiss_queries": 100, "faiss_dim": 64, "faiss_cpu_queries": 50}
TUPLES_PER_GPU = 4
NEGATIVES = 10
FAISS_K = 20
NO_CUDA = "skipped: no CUDA"


def model_config() -> ModelConfig:
    """VGG16 cut at conv5_3 (trained from conv5_1) + NetVLAD(64); no whitening (it is fitted after
    training), so descriptors are 64 x 512 = 32,768-D. Random weights: nothing is downloaded."""
    return ModelConfig(backbone="vgg16", weights="none", cut="conv5_3", train_from="conv5_1", pooling="netvlad",
                       num_clusters=64, whitening_dim=None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_info(device: torch.device) -> dict:
    info = {
        "device": str(device),
        "card": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "python": platform.python_version(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.split("\n")[0].strip()
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
    return info


# -- extraction ------------------------------------------------------------------------------------------

EXTRACTION_MODES = {
    # name: (autocast dtype or None, channels-last)
    "float32": (None, False),
    "bf16_autocast_channels_last": (torch.bfloat16, True),
    "fp16_autocast_channels_last": (torch.float16, True),
}


def _extraction_mode(model: torch.nn.Module, images: torch.Tensor, dtype, channels_last: bool, warmup: int,
                     iters: int) -> tuple[dict, torch.Tensor]:
    device = images.device
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    out = None
    with torch.inference_mode():
        for i in range(warmup + iters):
            synchronize(device)
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                out = model(images)
            synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    median = statistics.median(times)
    entry = {
        "images_per_s": round(images.shape[0] / median, 2),
        "median_batch_s": round(median, 5),
        "batch_times_s": [round(t, 5) for t in times],
        "autocast_dtype": str(dtype).replace("torch.", "") if dtype is not None else None,
        "channels_last": channels_last,
    }
    if device.type == "cuda":
        entry["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return entry, F.normalize(out.float(), dim=1)


# Dense (no sparsity) bfloat16 tensor-core peaks from the makers' data sheets, TFLOP/s, by a part of the
# card's name; first match wins. A card not listed gets only the fraction of the matrix product measured below.
BF16_DENSE_PEAK_TFLOPS = (("H200 NVL", 835.5), ("H100 NVL", 835.5), ("H200", 989.4), ("H100 PCIe", 756.0),
                          ("H100", 989.4), ("A100", 312.0))
MATMUL_SIDE = 8192  # the bfloat16 matrix product that measures what the card reaches in this run
QUICK_MATMUL_SIDE = 256  # --quick: the same code on the CPU, at a size a CPU does in a moment


def forward_flops_per_image(model: torch.nn.Module, height: int, width: int, device: torch.device) -> int:
    """Floating-point operations (a multiply-add counts 2) of one image's forward pass, as torch's
    FlopCounterMode counts them (convolutions and matrix products; element-wise work is left out)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.rand(1, 3, height, width, device=device))
    return int(counter.get_total_flops())


def bf16_spec_peak_tflops(card: str | None) -> float | None:
    for part, tflops in BF16_DENSE_PEAK_TFLOPS:
        if card and part in card:
            return tflops
    return None


def measured_bf16_matmul_tflops(device: torch.device, side: int = MATMUL_SIDE, repeats: int = 20) -> float:
    """TFLOP/s of `repeats` back-to-back side-cubed bfloat16 matrix products on random data, after 3
    warm-ups, timed as one span between two synchronisations: the most this card gives a dense bfloat16
    workload in this run."""
    a = torch.randn(side, side, device=device, dtype=torch.bfloat16)
    b = torch.randn(side, side, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    seconds = time.perf_counter() - start
    del a, b
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return 2 * side**3 * repeats / seconds / 1e12


def add_peak_fractions(result: dict, card: str | None, matmul_tflops: float | None) -> None:
    """Each timed mode's achieved TFLOP/s (images/s x the forward FLOPs per image) and its fraction of the
    card's data-sheet bfloat16 peak and of the bfloat16 matrix product measured in the same run."""
    spec = bf16_spec_peak_tflops(card)
    result["bf16_dense_peak_tflops_spec"] = spec
    result["bf16_matmul_tflops_measured"] = _significant(matmul_tflops) if matmul_tflops else None
    for entry in result["modes"].values():
        if not (isinstance(entry, dict) and "images_per_s" in entry):
            continue
        achieved = entry["images_per_s"] * result["forward_flops_per_image"] / 1e12
        entry["achieved_tflops"] = _significant(achieved)
        entry["fraction_of_bf16_spec_peak"] = _significant(achieved / spec) if spec else None
        entry["fraction_of_bf16_matmul_measured"] = _significant(achieved / matmul_tflops) if matmul_tflops else None


def _significant(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def bench_extraction(device: torch.device, sizes: dict, skip: set[str]) -> dict:
    torch.manual_seed(0)
    model = build_model(model_config()).eval().to(device)
    images = torch.rand(sizes["batch"], 3, sizes["height"], sizes["width"], device=device)
    result = {"model": "vgg16 conv5_3 + NetVLAD(64), random weights", "descriptor_dim": model.descriptor_dim,
              "image_hw": [sizes["height"], sizes["width"]], "batch": sizes["batch"], "warmup": sizes["warmup"],
              "iters": sizes["iters"], "modes": {},
              "forward_flops_per_image": forward_flops_per_image(model, sizes["height"], sizes["width"], device)}
    reference = None
    for name, (dtype, channels_last) in EXTRACTION_MODES.items():
        if name in skip:
            result["modes"][name] = "skipped: --skip"
            continue
        if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            result["modes"][name] = "skipped: bfloat16 not supported by this GPU"
            continue
        try:
            entry, desc = _extraction_mode(copy.deepcopy(model), images, dtype, channels_last, sizes["warmup"],
                                           sizes["iters"])
        except RuntimeError as exc:  # e.g. float16 autocast on a CPU build without the kernels
            result["modes"][name] = f"skipped: failed: {type(exc).__name__}: {str(exc)[:300]}"
            continue
        if reference is None:
            reference = desc
        else:
            cos = (desc * reference).sum(dim=1)
            entry["cosine_to_float32_min"] = round(float(cos.min()), 6)
            entry["max_abs_diff_to_float32"] = float((desc - reference).abs().max())
        result["modes"][name] = entry
        print(f"extraction {name:<30} {entry['images_per_s']:>9.1f} images/s", flush=True)
    float32 = result["modes"].get("float32")
    base = float32.get("images_per_s") if isinstance(float32, dict) else None
    if base:
        for entry in result["modes"].values():
            if isinstance(entry, dict) and "images_per_s" in entry:
                entry["ratio_to_float32"] = round(entry["images_per_s"] / base, 3)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    side = MATMUL_SIDE if device.type == "cuda" else QUICK_MATMUL_SIDE
    add_peak_fractions(result, card, measured_bf16_matmul_tflops(device, side))
    result["matmul_side"] = side
    # PyTorch lets cuDNN run float32 convolutions in TF32 by default (machine.cudnn_allow_tf32): the float32
    # mode is then TF32 arithmetic, whose tensor-core peak is half the bfloat16 one.
    result["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    result["float32_convolutions_in_tf32"] = device.type == "cuda" and torch.backends.cudnn.allow_tf32
    for name, entry in result["modes"].items():
        if isinstance(entry, dict) and "achieved_tflops" in entry:
            spec = entry["fraction_of_bf16_spec_peak"]
            print(f"extraction {name:<30} {entry['achieved_tflops']:>8.2f} TFLOP/s = "
                  f"{'-' if spec is None else f'{100 * spec:.1f}%'} of the bf16 data-sheet peak, "
                  f"{100 * entry['fraction_of_bf16_matmul_measured']:.1f}% of the measured bf16 matmul", flush=True)
    return result


# -- DDP training step -------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_worker(rank: int, world: int, backend: str, port: int, sizes: dict, out_path: str,
                  channels_last: bool = True) -> None:
    """One DDP rank: the same random batch of tuples every step; rank 0 writes the step times."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    use_cuda = backend == "nccl"
    if use_cuda:
        torch.cuda.set_device(rank)
    device = torch.device("cuda", rank) if use_cuda else torch.device("cpu")
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same initial weights on every rank (DDP also broadcasts rank 0's)
        # SGD lr 1e-3, momentum 0.9, wd 1e-3; channels-last by default, as `sare train`
        config = TrainConfig(dataset="-", channels_last=channels_last)
        state = TrainingState.start(build_model(model_config()), config)
        model, optimizer = state.model.to(device).train(), state.optimizer
        ddp = DDP(model, device_ids=[rank] if use_cuda else None)
        params = model.trainable_parameters()
        per_tuple = 2 + NEGATIVES
        torch.manual_seed(1 + rank)
        images = torch.rand(TUPLES_PER_GPU * per_tuple, 3, sizes["height"], sizes["width"], device=device)
        if use_cuda:
            torch.cuda.reset_peak_memory_stats(device)
        times, losses = [], []
        for step in range(sizes["train_warmup"] + sizes["train_steps"]):
            synchronize(device)
            start = time.perf_counter()
            desc = ddp(images).view(TUPLES_PER_GPU, per_tuple, -1)
            loss = sare_loss(desc[:, 0], desc[:, 1], desc[:, 2:], kernel="gaussian", mode="joint")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            synchronize(device)
            if step >= sizes["train_warmup"]:
                times.append(time.perf_counter() - start)
                losses.append(float(loss.detach()))
        gathered: list = [None] * world
        dist.all_gather_object(gathered, statistics.median(times))
        if rank == 0:
            median = statistics.median(times)
            result = {
                "backend": backend, "world_size": world, "tuples_per_gpu": TUPLES_PER_GPU, "negatives": NEGATIVES,
                "images_per_step_per_gpu": TUPLES_PER_GPU * per_tuple, "image_hw": [sizes["height"], sizes["width"]],
                "loss": "sare_joint gaussian", "optimizer": "SGD momentum 0.9",
                "precision": "float32 (convolutions in TF32 where cuDNN allows it, PyTorch's default)"
                if use_cuda and torch.backends.cudnn.allow_tf32 else "float32",
                "cudnn_benchmark": torch.backends.cudnn.benchmark,
                "memory_format": "channels_last" if config.channels_last else "channels_first",
                "trainable_parameters": sum(p.numel() for p in params),
                "warmup_steps": sizes["train_warmup"], "steps": sizes["train_steps"],
                "median_step_s": round(median, 5), "step_times_s": [round(t, 5) for t in times],
                "median_step_s_per_rank": [round(t, 5) for t in gathered],
                "tuples_per_s": round(world * TUPLES_PER_GPU / median, 2),
                "images_per_s": round(world * TUPLES_PER_GPU * per_tuple / median, 2),
                "losses": [round(v, 5) for v in losses],
            }
            if use_cuda:
                result["peak_memory_gib_rank0"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            with open(out_path, "w") as f:
                json.dump(result, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def bench_train_step(backend: str, world: int, sizes: dict, channels_last: bool = True) -> dict:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "train_step.json")
        started = time.perf_counter()
        mp.spawn(_train_worker, args=(world, backend, _free_port(), sizes, out_path, channels_last), nprocs=world,
                 join=True)
        with open(out_path) as f:
            result = json.load(f)
    result["wall_s_including_startup"] = round(time.perf_counter() - started, 2)
    print(f"train step ({backend}, {world} process(es)): {result['median_step_s']:.4f} s median, "
          f"{result['tuples_per_s']:.1f} tuples/s", flush=True)
    return result


# -- FAISS -----------------------------------------------------------------------------------------------

def bench_faiss(sizes: dict, cpu_only: bool = False) -> dict:
    """Exact search on every GPU FAISS sees against the CPU. Without GPU FAISS only a `cpu_only` run (the
    --quick smoke test) does the CPU half; a full-size one stops at once rather than spend minutes on it."""
    try:
        import faiss
    except ImportError as exc:
        return {"available": False, "gpu": f"skipped: faiss not importable ({exc})"}
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpus == 0 and not cpu_only:
        return {"available": True, "version": getattr(faiss, "__version__", None), "gpus": 0,
                "gpu": "skipped: faiss has no GPU support here" if torch.cuda.is_available() else NO_CUDA}
    result = {"available": True, "version": getattr(faiss, "__version__", None), "gpus": gpus,
              "index": "IndexFlatL2 (exact)", "db": sizes["faiss_db"], "queries": sizes["faiss_queries"],
              "dim": sizes["faiss_dim"], "k": FAISS_K}
    rng = np.random.default_rng(0)
    db = rng.standard_normal((sizes["faiss_db"], sizes["faiss_dim"]), dtype=np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    queries = rng.standard_normal((sizes["faiss_queries"], sizes["faiss_dim"]), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    cpu_q = queries[: sizes["faiss_cpu_queries"]]
    cpu_index = faiss.IndexFlatL2(sizes["faiss_dim"])
    cpu_index.add(db)
    start = time.perf_counter()
    _, cpu_ids = cpu_index.search(cpu_q, FAISS_K)
    cpu_s = time.perf_counter() - start
    result["cpu"] = {"queries": len(cpu_q), "seconds": round(cpu_s, 4), "queries_per_s": round(len(cpu_q) / cpu_s, 1),
                     "threads": faiss.omp_get_max_threads()}
    if gpus == 0:
        result["gpu"] = "skipped: faiss has no GPU support here" if torch.cuda.is_available() else NO_CUDA
        return result
    started = time.perf_counter()
    gpu_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(sizes["faiss_dim"]))
    gpu_index.add(db)
    upload_s = time.perf_counter() - started
    gpu_index.search(queries[:100], FAISS_K)  # warm-up
    start = time.perf_counter()
    _, gpu_ids = gpu_index.search(queries, FAISS_K)
    gpu_s = time.perf_counter() - start
    same = np.mean([len(set(a) & set(b)) / FAISS_K for a, b in zip(cpu_ids, gpu_ids[: len(cpu_q)])])
    result["gpu"] = {"gpus_used": gpus, "add_seconds": round(upload_s, 3), "seconds": round(gpu_s, 4),
                     "queries_per_s": round(len(queries) / gpu_s, 1),
                     "speedup_vs_cpu": round((len(queries) / gpu_s) / (len(cpu_q) / cpu_s), 2),
                     "top_k_agreement_with_cpu": round(float(same), 5)}
    print(f"faiss: CPU {result['cpu']['queries_per_s']:.0f} queries/s, GPU x{gpus} "
          f"{result['gpu']['queries_per_s']:.0f} queries/s", flush=True)
    return result


# -- main ------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a CPU smoke test of the script")
    p.add_argument("--out", help="JSON to write (default results/gpu_path.json; results/gpu_path_quick.json "
                   "with --quick)")
    p.add_argument("--batch", type=int, help="extraction batch size (default 32; 2 with --quick)")
    p.add_argument("--height", type=int, help="image height (default 480)")
    p.add_argument("--width", type=int, help="image width (default 640)")
    p.add_argument("--iters", type=int, help="timed extraction batches per mode (default 20)")
    p.add_argument("--train-steps", type=int, help="timed training steps (default 10)")
    p.add_argument("--world-size", type=int, help="DDP processes (default: every visible GPU)")
    p.add_argument("--faiss-db", type=int, help="database vectors for the FAISS part (default 250,000)")
    p.add_argument("--faiss-queries", type=int, help="queries for the FAISS GPU part (default 10,000)")
    p.add_argument("--faiss-dim", type=int, help="vector dimension for the FAISS part (default 4096)")
    p.add_argument("--skip", action="append", default=[], metavar="PART",
                   help="skip a part: extraction, train_step, faiss, or one extraction mode "
                   f"({', '.join(EXTRACTION_MODES)}); repeatable")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    for key in ("batch", "height", "width", "iters", "train_steps", "faiss_db", "faiss_queries", "faiss_dim"):
        value = getattr(args, key)
        if value is not None:
            sizes[key] = value
    sizes["faiss_cpu_queries"] = min(sizes["faiss_cpu_queries"], sizes["faiss_queries"])
    out = args.out or os.path.join(REPO, "results", "gpu_path_quick.json" if args.quick else "gpu_path.json")
    skip = set(args.skip)

    cuda = torch.cuda.is_available()
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True
    elif not args.quick:
        print("no CUDA device: running the full sizes on the CPU (use --quick for a smoke test)", flush=True)
    report: dict = {
        "script": "benchmarks/gpu_path.py",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "sizes": sizes,
        "machine": machine_info(device),
    }
    print(f"device: {report['machine']['card'] or 'CPU'} ({report['machine']['gpus']} GPU(s)), "
          f"torch {torch.__version__}", flush=True)
    started = time.perf_counter()
    failed = []

    def part(key: str, measure) -> None:
        run_part(report, key, measure, failed, lambda: write_report(report, out, started))

    def train_step_both_layouts(backend: str, world: int) -> dict:
        # `train.channels_last` is on by default everywhere; on the CPU it made a step 0.76 as long
        # (results/train_step_layout.json). The same step channels-first says whether it pays here too. The
        # step runs the whole VGG16 (conv1-conv4 frozen, ~90% of the FLOPs); `sare train` with the frozen
        # cache starts from cached maps, so its ratio may differ.
        last = bench_train_step(backend, world, sizes)
        first = bench_train_step(backend, world, sizes, channels_last=False)
        last["channels_first_median_step_s"] = first["median_step_s"]
        last["channels_last_step_ratio"] = round(last["median_step_s"] / first["median_step_s"], 3)
        return last

    part("extraction", lambda: "skipped: --skip" if "extraction" in skip else bench_extraction(device, sizes, skip))
    if "train_step" in skip:
        report["train_step_ddp_nccl"] = "skipped: --skip"
    elif cuda:
        part("train_step_ddp_nccl", lambda: train_step_both_layouts("nccl", args.world_size or torch.cuda.device_count()))
    else:
        report["train_step_ddp_nccl"] = NO_CUDA
        if args.quick:
            part("train_step_ddp_gloo_cpu_smoke", lambda: train_step_both_layouts("gloo", 1))
    part("faiss", lambda: "skipped: --skip" if "faiss" in skip else bench_faiss(sizes, cpu_only=args.quick))
    write_report(report, out, started)
    print(f"wrote {out} ({report['seconds']} s)" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


def run_part(report: dict, key: str, measure, failed: list[str], save) -> None:
    """report[key] = measure(); a failure is recorded there as "failed: <error>" (and its key appended to
    `failed`) so the other parts still run. `save()` writes the JSON after every part, so a time limit that
    ends the script keeps what was measured. Shared with benchmarks/gpu_tuning.py."""
    try:
        report[key] = measure()
    except Exception as exc:  # noqa: BLE001 - one broken part must not cost the others' figures
        report[key] = f"failed: {type(exc).__name__}: {str(exc)[:500]}"
        failed.append(key)
        print(f"{key}: {report[key]}", flush=True)
    save()


def write_report(report: dict, out: str, started: float) -> None:
    report["seconds"] = round(time.perf_counter() - started, 1)
    # The script must run where Ray is not installed: record that it never imported Ray or the pipelines.
    report["imported"] = {name: sys.modules.get(name) is not None for name in ("ray", "pipelines", "faiss")}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
