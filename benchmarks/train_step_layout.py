"""A training step's time in the two memory layouts of `train.channels_last`: channels-first (PyTorch's
default) against channels-last, on the CPU, for a model config (default: the demo's EfficientNet-Lite0 at
120x160, trained from blocks4, NetVLAD 16, SARE joint loss), through the frozen-feature cache's maps as the
demo's steps run.

    .venv/bin/python benchmarks/train_step_layout.py                 # -> results/train_step_layout.json

One process, --threads torch threads, one step = --tuples tuples of (query, positive, --negatives
negatives): forward through the trainable layers, loss, backward, SGD step. Each round times --repeats steps
in each layout (a fresh SGD with momentum each time, the inputs channels-first as the frozen-feature cache
stacks them), the two alternating; the figure is each round's ratio of the medians (channels-last over
channels-first) and their median. Also the largest difference between the two layouts' descriptors of one
batch (the same weights), the float rounding a run's numbers move by, and, from torch's profiler, the share
of a step's CPU time each layout spends in the depthwise convolutions' backward pass.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from frozen_cache import add_model_arguments, model_from_arguments  # noqa: E402  (benchmarks/, beside this)

from sare_core.losses import LossSpec, build_loss  # noqa: E402


def depthwise_backward_share(step, inputs: torch.Tensor) -> float:
    """The share of `step(inputs)`'s CPU time (torch's profiler, self time of 3 steps after one) in the
    backward pass of the depthwise convolutions (weights of shape (C, 1, k, k))."""
    step(inputs)
    with torch.autograd.profiler.profile(record_shapes=True) as prof:
        for _ in range(3):
            step(inputs)
    total = depthwise = 0.0
    for event in prof.key_averages(group_by_input_shape=True):
        total += event.self_cpu_time_total
        shapes = event.input_shapes or []
        if event.key == "aten::convolution_backward" and len(shapes) > 2 and len(shapes[2]) == 4 and shapes[2][1] == 1:
            depthwise += event.self_cpu_time_total
    return depthwise / total if total else 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("--tuples", type=int, default=4, help="tuples per step (the demo's batch_size)")
    p.add_argument("--negatives", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=os.path.join(REPO, "results", "train_step_layout.json"))
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = model_from_arguments(args)
    model.backbone.freeze_batchnorm = True
    model.train()
    loss_fn = build_loss(LossSpec(name="sare_joint", kernel="gaussian", temperature=0.4))
    n, per_tuple = args.tuples, 2 + args.negatives
    with torch.no_grad():
        maps = model.backbone.frozen.eval()(torch.randn(n * per_tuple, 3, *args.image_size))
    layouts = {"channels_first": torch.contiguous_format, "channels_last": torch.channels_last}

    optimizer = None

    def fresh_optimizer() -> None:  # its momentum buffers take the layout the weights have now
        nonlocal optimizer
        optimizer = torch.optim.SGD(model.trainable_parameters(), lr=1e-4, momentum=0.9)

    def step(inputs: torch.Tensor) -> None:
        desc = model(inputs, from_frozen=True)
        loss = loss_fn(desc[:n], desc[n : 2 * n], desc[2 * n :].reshape(n, args.negatives, -1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def timed(layout) -> float:
        model.to(memory_format=layout)
        fresh_optimizer()
        inputs = maps  # channels-first in both: training stacks the cache's contiguous maps
        step(inputs)  # warm-up in this layout
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            step(inputs)
            seconds.append(time.perf_counter() - started)
        return statistics.median(seconds)

    with torch.no_grad():  # the same weights in both layouts
        model.eval()
        first = model.to(memory_format=torch.contiguous_format)(maps, from_frozen=True)
        last = model.to(memory_format=torch.channels_last)(maps.contiguous(memory_format=torch.channels_last),
                                                          from_frozen=True)
        model.train()
    rounds = []
    for r in range(args.rounds):
        order = list(layouts.items()) if r % 2 == 0 else list(layouts.items())[::-1]
        times = {name: timed(layout) for name, layout in order}
        rounds.append({**times, "ratio": times["channels_last"] / times["channels_first"]})
        print(f"round {r}: channels-first {times['channels_first'] * 1000:.0f} ms, channels-last "
              f"{times['channels_last'] * 1000:.0f} ms per step ({rounds[-1]['ratio']:.3f})", flush=True)
    ratio = statistics.median(r["ratio"] for r in rounds)
    backward_shares = {}
    for name, layout in layouts.items():
        model.to(memory_format=layout)
        fresh_optimizer()
        backward_shares[name] = depthwise_backward_share(step, maps)
    record = {
        "command": " ".join(["benchmarks/train_step_layout.py"] + (argv if argv is not None else sys.argv[1:])),
        "settings": vars(args) | {"out": None},
        "images_per_step": n * per_tuple, "frozen_map_shape": list(maps.shape[1:]),
        "rounds": rounds,
        "step_seconds_median": {name: statistics.median(r[name] for r in rounds) for name in layouts},
        "channels_last_over_channels_first_median": ratio,
        "descriptor_max_abs_difference": float((first - last).abs().max()),
        "depthwise_backward_share_of_step": backward_shares,
        "host": platform.node(), "cpus": os.cpu_count(), "torch": torch.__version__,
        "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2)
    print(f"channels-last takes {ratio:.3f} of a channels-first step (median of {args.rounds} rounds); "
          f"descriptors differ by at most {record['descriptor_max_abs_difference']:.2e} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
