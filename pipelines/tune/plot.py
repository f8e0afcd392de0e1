"""The sweep's plot (sweep.png): the metric per epoch of every trial, the best value per trial, and the best
value against each hyperparameter (log axis for log-scaled ranges, categories for listed values)."""

from __future__ import annotations

import io
import math

from sare_core.paths import write_bytes

from .config import TRIAL_PREFIX, SweepConfig
from .results import label

STATUS_COLOURS = {"completed": "tab:blue", "stopped early": "tab:orange", "error": "tab:red"}


def plot_sweep(config: SweepConfig, trials: list[dict], epochs: list[dict], path: str) -> None:
    """Write the sweep's figure as a PNG to `path` (local or s3://)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(config.search_space)
    panels = 2 + len(keys)
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), dpi=110, squeeze=False)
    axes = axes.ravel()
    scale = 100 if config.metric != "loss" else 1
    ylabel = config.metric + (" (%)" if scale == 100 else "")
    order = sorted(trials, key=lambda t: t["trial"])
    _per_epoch(axes[0], config.metric, scale, order, epochs)
    _per_trial(axes[1], scale, order)
    for ax, key in zip(axes[2:], keys):
        _against_parameter(ax, config, key, scale, order)
    for ax in axes[:panels]:
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[1].set_ylabel(f"best {ylabel}")
    for ax in axes[panels:]:
        ax.axis("off")
    fig.suptitle(f"sweep {config.name}: {config.metric} ({len(trials)} trials)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_bytes(path, buffer.getvalue())


def _per_epoch(ax, metric: str, scale: float, order: list[dict], epochs: list[dict]) -> None:
    from matplotlib.lines import Line2D

    for t in order:
        points = [(e["epoch"], e.get(metric)) for e in epochs if e["trial"] == t["trial"]]
        points = [(x, y) for x, y in points if y is not None]
        if points:
            ax.plot(
                [x for x, _ in points],
                [scale * y for _, y in points],
                marker="o",
                ms=3,
                color=STATUS_COLOURS[t["status"]],
                alpha=0.8,
            )
    shown = {t["status"] for t in order}
    ax.legend(
        handles=[Line2D([], [], color=c, marker="o", label=s) for s, c in STATUS_COLOURS.items() if s in shown],
        fontsize=7,
    )
    ax.set_xlabel("epoch (0 = off-the-shelf)")
    ax.set_title("each trial, per epoch")


def _per_trial(ax, scale: float, order: list[dict]) -> None:
    for i, t in enumerate(order):
        if t["value"] is not None:
            ax.scatter([i], [scale * t["value"]], color=STATUS_COLOURS[t["status"]])
    names = [t["trial"].removeprefix(TRIAL_PREFIX)[-5:] for t in order]
    ax.set_xticks(range(len(order)), names, rotation=60, fontsize=7)
    ax.set_xlabel("trial")
    ax.set_title("best epoch per trial")


def _against_parameter(ax, config: SweepConfig, key: str, scale: float, order: list[dict]) -> None:
    spec = config.search_space[key]
    done = [t for t in order if t["value"] is not None and key in t["_params"]]
    if spec.values is not None:
        labels = [label(v) for v in spec.values]
        xs = [labels.index(label(t["_params"][key])) if label(t["_params"][key]) in labels else -1 for t in done]
        ax.set_xticks(range(len(labels)), labels, rotation=30 if max(map(len, labels)) > 6 else 0, fontsize=7)
        ax.set_xlim(-0.5, len(labels) - 0.5)
    else:
        xs = [float(t["_params"][key]) for t in done]
        if spec.kind.startswith("log"):
            ax.set_xscale("log")
    ax.scatter(xs, [scale * t["value"] for t in done], c=[STATUS_COLOURS[t["status"]] for t in done])
    ax.set_xlabel(key)
