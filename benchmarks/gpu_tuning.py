"""Where VGG16-NetVLAD extraction's GPU time goes, and what moves it: a companion of gpu_path.py for the same
device call (benchmarks/gpu_device_check.sh), with the same model (VGG16 cut at conv5_3 + NetVLAD(64), random
weights, random images of 480x640), bfloat16 autocast and channels-last unless a part says otherwise.

Parts (the JSON is rewritten after each; a failed part is recorded as "failed: <error>" and the rest still run):
  precision  descriptors under bfloat16 and float16 autocast against float32 without TF32 (the CPU's arithmetic),
             with NetVLAD kept in float32 (the default: `sare_core.precision.computed_in_float32`) and left to
             autocast: the smallest cosine similarity and the largest absolute difference over the batch, and images/s.
  layers     one batch timed layer by layer with CUDA events around every convolution, ReLU, max-pool and the
             NetVLAD layer: milliseconds per layer and per kind, and each convolution's TFLOP/s (2 x
             multiply-adds / its time) as a fraction of the card's bfloat16 data-sheet peak.
  batch      images/s and fraction of the peak at batch sizes 16, 32, 64 and 96.
  compile    torch.compile (default mode) of the model: compile seconds and images/s against eager.
  embedder   what `sare extract` runs on a GPU: the extraction actor (pipelines.extract.embedder.ImageEmbedder,
             float16 autocast, channels-last, batches queued ahead) called on a block of iters x batch decoded
             uint8 images as Ray Data hands it one, compiled (the default) and eager: images/s of the second
             call (the first compiles) and the descriptors' smallest cosine to float32 without TF32. Imports
             the pipelines package, not Ray.

    python benchmarks/gpu_tuning.py                  # on the GPU machine -> results/gpu_tuning.json
    python benchmarks/gpu_tuning.py --quick          # tiny sizes on a CPU: a smoke test of the script
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_path import (  # noqa: E402
    REPO,
    _significant,
    bf16_spec_peak_tflops,
    forward_flops_per_image,
    machine_info,
    model_config,
    run_part,
    synchronize,
    write_report,
)

from sare_core.models import build_model  # noqa: E402
from sare_core.models.netvlad import NetVLAD  # noqa: E402

FULL = {"height": 480, "width": 640, "batch": 32, "warmup": 3, "iters": 10, "batches": [16, 32, 64, 96]}
QUICK = {"height": 64, "width": 80, "batch": 2, "warmup": 1, "iters": 2, "batches": [1, 2]}


def time_forward(model, images: torch.Tensor, dtype, warmup: int, iters: int) -> float:
    """Median seconds of one forward pass of `images` (inference mode, autocast to `dtype` unless None)."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            synchronize(images.device)
            start = time.perf_counter()
            with torch.autocast(images.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                model(images)
            synchronize(images.device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def descriptors(model, images: torch.Tensor, dtype) -> torch.Tensor:
    with torch.inference_mode(), torch.autocast(images.device.type, dtype=dtype or torch.float32,
                                                enabled=dtype is not None):
        return F.normalize(model(images).float(), dim=1)


def set_netvlad_float32(model: torch.nn.Module, value: bool) -> None:
    for module in model.modules():
        if isinstance(module, NetVLAD):
            module.float32_under_autocast = value


def bench_precision(model, images: torch.Tensor, sizes: dict) -> dict:
    """Half-precision descriptors against float32 without TF32, NetVLAD in float32 or left to autocast."""
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        exact = descriptors(model, images.contiguous(), None)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    fast = model.to(memory_format=torch.channels_last)
    x = images.contiguous(memory_format=torch.channels_last)
    result = {}
    for dtype in (torch.bfloat16, torch.float16):
        for netvlad_float32 in (True, False):
            set_netvlad_float32(fast, netvlad_float32)
            name = f"{str(dtype).replace('torch.', '')}_netvlad_{'float32' if netvlad_float32 else 'autocast'}"
            try:
                got = descriptors(fast, x, dtype)
                seconds = time_forward(fast, x, dtype, sizes["warmup"], sizes["iters"])
            except RuntimeError as exc:  # float16 autocast on a CPU build without the kernels
                result[name] = f"failed: {str(exc)[:200]}"
                continue
            result[name] = {"cosine_min": round(float((got * exact).sum(1).min()), 6),
                            "max_abs_diff": float(f"{float((got - exact).abs().max()):.3g}"),
                            "images_per_s": round(images.shape[0] / seconds, 1)}
            print(f"precision {name:32s} {result[name]}", flush=True)
    set_netvlad_float32(fast, True)
    return result


def bench_layers(model, images: torch.Tensor, spec: float | None) -> dict:
    """One batch (after two untimed ones), CUDA events around each leaf layer and the NetVLAD layer."""
    x = images.contiguous(memory_format=torch.channels_last)
    model = model.to(memory_format=torch.channels_last)
    marks: list[tuple[str, torch.nn.Module, torch.cuda.Event, torch.cuda.Event]] = []
    shapes: dict[str, tuple] = {}
    timed = [(n, m) for n, m in model.named_modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ReLU, torch.nn.MaxPool2d, NetVLAD))
             and not n.startswith("pool.")]
    recording = {"on": False}

    def pre(name, module):
        def hook(_mod, _inp):
            if recording["on"]:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                marks.append((name, module, start, end))
        return hook

    def post(name):
        def hook(_mod, _inp, out):
            if recording["on"]:
                marks[-1][3].record()
                shapes[name] = tuple(out.shape)
        return hook

    handles = []
    for name, module in timed:
        handles.append(module.register_forward_pre_hook(pre(name, module)))
        handles.append(module.register_forward_hook(post(name)))
    try:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            for _ in range(2):
                model(x)
            synchronize(x.device)
            recording["on"] = True
            start_all, end_all = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start_all.record()
            model(x)
            end_all.record()
            recording["on"] = False
        synchronize(x.device)
    finally:
        for handle in handles:
            handle.remove()
    total_ms = start_all.elapsed_time(end_all)
    layers, kinds = [], {}
    for name, module, start, end in marks:
        ms = start.elapsed_time(end)
        kind = type(module).__name__
        kinds[kind] = kinds.get(kind, 0.0) + ms
        entry = {"layer": name, "kind": kind, "ms": round(ms, 3), "out_shape": list(shapes[name])}
        if isinstance(module, torch.nn.Conv2d):
            b, cout, h, w = shapes[name]
            flops = 2 * b * h * w * cout * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
            entry["tflops"] = _significant(flops / ms / 1e9)
            entry["fraction_of_bf16_spec_peak"] = _significant(flops / ms / 1e9 / spec) if spec else None
        layers.append(entry)
    return {"batch": images.shape[0], "total_ms": round(total_ms, 3),
            "ms_by_kind": {k: round(v, 3) for k, v in kinds.items()},
            "share_by_kind": {k: round(v / total_ms, 4) for k, v in kinds.items()},
            "untimed_ms": round(total_ms - sum(kinds.values()), 3), "layers": layers}


def bench_batches(model, sizes: dict, device, flops: int, spec: float | None) -> dict:
    model = model.to(memory_format=torch.channels_last)
    result = {}
    for batch in sizes["batches"]:
        x = torch.randn(batch, 3, sizes["height"], sizes["width"], device=device).contiguous(
            memory_format=torch.channels_last)
        seconds = time_forward(model, x, torch.bfloat16, sizes["warmup"], sizes["iters"])
        rate = batch / seconds
        result[str(batch)] = {"images_per_s": round(rate, 1),
                              "fraction_of_bf16_spec_peak": _significant(rate * flops / 1e12 / spec) if spec else None}
        print(f"batch {batch:3d}: {result[str(batch)]}", flush=True)
        del x
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return result


def bench_compile(model, images: torch.Tensor, sizes: dict, flops: int, spec: float | None) -> dict:
    model = model.to(memory_format=torch.channels_last)
    x = images.contiguous(memory_format=torch.channels_last)
    eager = time_forward(model, x, torch.bfloat16, sizes["warmup"], sizes["iters"])
    compiled = torch.compile(model)
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16):
        compiled(x)
    synchronize(x.device)
    compile_s = time.perf_counter() - start
    seconds = time_forward(compiled, x, torch.bfloat16, sizes["warmup"], sizes["iters"])
    rate = images.shape[0] / seconds
    return {"mode": "default", "compile_s": round(compile_s, 1),
            "eager_images_per_s": round(images.shape[0] / eager, 1), "compiled_images_per_s": round(rate, 1),
            "speedup": round(eager / seconds, 3),
            "fraction_of_bf16_spec_peak": _significant(rate * flops / 1e12 / spec) if spec else None}


def compiled_graphs() -> int | None:
    """Graphs torch.compile has compiled in this process so far (dynamo's own counter), None if unreadable."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except Exception:  # noqa: BLE001 - a private counter: report nothing rather than fail the part
        return None


def bench_embedder(model, sizes: dict, device) -> dict:
    """The extraction actor's call on a block of --iters x --batch decoded images (as Ray Data hands it one),
    compiled and eager: images/s of the second call (the first compiles), and the descriptors' smallest cosine
    to float32 without TF32 on the same images."""
    import pyarrow as pa

    from pipelines.extract.embedder import ImageEmbedder

    count, h, w = sizes["batch"] * sizes["iters"], sizes["height"], sizes["width"]
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (count, h, w, 3), dtype=torch.uint8, generator=generator).numpy()
    rows = pa.table({"id": [str(i) for i in range(count)], "pixels": [p.tobytes() for p in pixels],
                     "height": [h] * count, "width": [w] * count, "error": [""] * count})
    use_gpu = device.type == "cuda"
    result = {"images_per_call": count, "batch": sizes["batch"]}
    got = {}
    for name, compiled in (("compiled", True), ("eager", False)):
        graphs_before = compiled_graphs()
        embedder = ImageEmbedder(copy.deepcopy(model), batch_size=sizes["batch"], use_gpu=use_gpu,
                                 compile_model=compiled)
        start = time.perf_counter()
        embedder(rows)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        out = embedder(rows)  # the descriptors come back as an Arrow table: every copy has finished
        seconds = time.perf_counter() - start
        got[name] = np.asarray(out.column("descriptor").to_pylist()[: sizes["batch"]], np.float32)
        graphs = compiled_graphs()
        result[name] = {"images_per_s": round(count / seconds, 1), "first_call_s": round(first_s, 2),
                        "compiled": embedder.compile_model,
                        "runs_compiled": embedder.runners[0] is not embedder.models[0],
                        # graphs dynamo compiled during the two calls (a graph break or a fallback shows here)
                        "graphs_compiled": None if graphs is None else graphs - graphs_before}
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        exact = ImageEmbedder(copy.deepcopy(model), use_gpu=use_gpu, mixed_precision=False, channels_last=False,
                              compile_model=False).embed(pixels[: sizes["batch"]])
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    for name, values in got.items():
        result[name]["cosine_min_to_float32"] = round(float((values * exact).sum(1).min()), 6)
    result["speedup"] = round(result["compiled"]["images_per_s"] / result["eager"]["images_per_s"], 3)
    print(f"embedder {result}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a CPU smoke test of the script")
    p.add_argument("--out", help="JSON to write (default results/gpu_tuning.json, results/gpu_tuning_quick.json "
                   "with --quick)")
    p.add_argument("--skip", action="append", default=[], metavar="PART",
                   help="skip a part: precision, layers, batch, compile, embedder; repeatable")
    args = p.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    out = args.out or os.path.join(REPO, "results", "gpu_tuning_quick.json" if args.quick else "gpu_tuning.json")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = build_model(model_config()).eval().to(device)
    flops = forward_flops_per_image(model, sizes["height"], sizes["width"], device)
    info = machine_info(device)
    spec = bf16_spec_peak_tflops(info.get("card"))
    images = torch.randn(sizes["batch"], 3, sizes["height"], sizes["width"], device=device)
    report: dict = {"script": "benchmarks/gpu_tuning.py", "command": " ".join(["python", *sys.argv]),
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "quick": args.quick, "sizes": sizes, "machine": info, "forward_flops_per_image": flops,
                    "bf16_dense_peak_tflops_spec": spec}
    started = time.perf_counter()
    failed = []
    parts = {"precision": lambda: bench_precision(copy.deepcopy(model), images, sizes),
             "layers": (lambda: bench_layers(copy.deepcopy(model), images, spec)) if cuda else None,
             "batch": lambda: bench_batches(copy.deepcopy(model), sizes, device, flops, spec),
             "compile": lambda: bench_compile(copy.deepcopy(model), images, sizes, flops, spec),
             "embedder": lambda: bench_embedder(copy.deepcopy(model).cpu(), sizes, device)}
    for key, measure in parts.items():
        if key in args.skip or measure is None:
            report[key] = "skipped: --skip" if key in args.skip else "skipped: no CUDA"
            write_report(report, out, started)
            continue
        run_part(report, key, measure, failed, lambda: write_report(report, out, started))
        print(f"{key} done at {time.perf_counter() - started:.0f} s", flush=True)
    print(f"wrote {out} ({report['seconds']} s)" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
