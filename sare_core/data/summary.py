"""Dataset summaries for `sare data inspect`: counts, positives per query, and a map of positions."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from .ground_truth import count_positives
from .place_dataset import PlaceDataset
from .training_queries import training_positives

# Histogram bins of positives per query: (label, low, high) inclusive.
_BINS = (("0", 0, 0), ("1", 1, 1), ("2-5", 2, 5), ("6-10", 6, 10), ("11-20", 11, 20), ("21-50", 21, 50),
         ("51-100", 51, 100), (">100", 101, np.iinfo(np.int64).max))


@dataclass
class SplitSummary:
    """Ground-truth statistics of one split. Radii in `unit`: metres, or frames for aligned traverses."""

    name: str
    split: str
    kind: str  # "utm" | "label"
    unit: str  # "m", or "frames" for aligned traverses
    num_db: int
    num_q: int
    pos_dist_thr: float
    queries_without_positives: int
    positives_min: int
    positives_median: float
    positives_mean: float
    positives_max: int
    histogram: list[tuple[str, int]] = field(default_factory=list)
    train_radius: float | None = None  # sqrt(nontriv_pos_dist_sq_thr), geographic only
    queries_without_train_positives: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def is_sequence(dataset: PlaceDataset) -> bool:
    """True for sequence data (aligned traverses): a place index as utm_east and utm_north = 0 everywhere."""
    if not dataset.is_geographic or dataset.num_db + dataset.num_q == 0:
        return False
    return bool((dataset.db_utm[:, 1] == 0).all() and (dataset.q_utm[:, 1] == 0).all())


def positives_histogram(counts: np.ndarray) -> list[tuple[str, int]]:
    """[(bin label, number of queries)] over fixed bins 0, 1, 2-5, 6-10, 11-20, 21-50, 51-100, >100."""
    counts = np.asarray(counts, dtype=np.int64)
    return [(label, int(((counts >= lo) & (counts <= hi)).sum())) for label, lo, hi in _BINS]


def summarize(dataset: PlaceDataset) -> SplitSummary:
    """Counts and the positives-per-query distribution (evaluation radius pos_dist_thr, or labels)."""
    counts = count_positives(dataset.positives())
    stats = (int(counts.min()), float(np.median(counts)), float(counts.mean()), int(counts.max())) \
        if len(counts) else (0, 0.0, 0.0, 0)
    summary = SplitSummary(
        name=dataset.name,
        split=dataset.split,
        kind="utm" if dataset.is_geographic else "label",
        unit="frames" if is_sequence(dataset) else "m",
        num_db=dataset.num_db,
        num_q=dataset.num_q,
        pos_dist_thr=dataset.pos_dist_thr,
        queries_without_positives=int((counts == 0).sum()),
        positives_min=stats[0],
        positives_median=stats[1],
        positives_mean=stats[2],
        positives_max=stats[3],
        histogram=positives_histogram(counts),
    )
    if dataset.is_geographic:
        summary.train_radius = float(np.sqrt(dataset.nontriv_pos_dist_sq_thr))
        train_counts = count_positives(training_positives(dataset))
        summary.queries_without_train_positives = int((train_counts == 0).sum())
    return summary


def format_summary(summaries: list[SplitSummary], bar_width: int = 40) -> str:
    """Human-readable report: a count table, then per split the positives distribution and histogram."""
    lines = [f"{'split':<8} {'database':>10} {'queries':>10} {'no positive':>12}  name"]
    for s in summaries:
        lines.append(f"{s.split or '-':<8} {s.num_db:>10} {s.num_q:>10} {s.queries_without_positives:>12}  {s.name}")
    for s in summaries:
        what = f"within {s.pos_dist_thr:g} {s.unit}" if s.kind == "utm" else "same label"
        lines.append("")
        lines.append(f"[{s.split or '-'}] positives per query ({what}): min {s.positives_min}, "
                     f"median {s.positives_median:g}, mean {s.positives_mean:.2f}, max {s.positives_max}")
        lines.append(f"  queries without positives: {s.queries_without_positives} of {s.num_q}")
        if s.queries_without_train_positives is not None:
            lines.append(f"  queries without training positives (within {s.train_radius:g} {s.unit}): "
                         f"{s.queries_without_train_positives} of {s.num_q}")
        peak = max((c for _, c in s.histogram), default=0) or 1
        for label, count in s.histogram:
            bar = "#" * int(round(bar_width * count / peak))
            lines.append(f"  {label:>7} | {bar:<{bar_width}} {count}")
    return "\n".join(lines)


def plot_map(datasets: Mapping[str, PlaceDataset], out_png: str, max_points: int = 200_000) -> str:
    """Write a PNG with one panel per split: database positions (grey), queries with positives (blue),
    queries without positives (red crosses). Label datasets get a positives-per-query histogram instead.

    Axes are UTM easting/northing in metres. At most `max_points` database points are drawn (evenly
    subsampled) so huge databases stay quick. Returns the path written.
    """
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, leaves global backend state alone

    items = list(datasets.items())
    fig = Figure(figsize=(6 * len(items), 5.5))
    axes = fig.subplots(1, len(items), squeeze=False)
    for ax, (split, d) in zip(axes[0], items, strict=True):
        counts = count_positives(d.positives())
        title = f"{d.name} [{split or '-'}]: {d.num_db} db, {d.num_q} queries, {(counts == 0).sum()} without positives"
        if d.is_geographic:
            step = max(1, d.num_db // max_points)
            db, q, has = d.db_utm[::step].copy(), d.q_utm.copy(), counts > 0
            sequence = is_sequence(d)
            if sequence:  # place index along a route: database on one line, queries on another
                db[:, 1], q[:, 1] = 1.0, 0.0
            ax.scatter(db[:, 0], db[:, 1], s=2, c="0.6", label=f"database ({d.num_db})", rasterized=True)
            ax.scatter(q[has, 0], q[has, 1], s=6, c="tab:blue",
                       label=f"queries with positives ({has.sum()})", rasterized=True)
            ax.scatter(q[~has, 0], q[~has, 1], s=18, c="tab:red", marker="x",
                       label=f"queries without positives ({(~has).sum()})")
            if sequence:
                ax.set_xlabel("place index along the route (frames)")
                ax.set_yticks([0, 1], ["queries", "database"])
                ax.set_ylim(-0.5, 1.8)
            else:
                ax.set_xlabel("UTM easting (m)")
                ax.set_ylabel("UTM northing (m)")
                ax.set_aspect("equal", adjustable="datalim")
                ax.ticklabel_format(useOffset=False, style="plain")
            ax.legend(loc="upper right", fontsize=8)
        else:
            hist = positives_histogram(counts)
            ax.bar([h[0] for h in hist], [h[1] for h in hist], color="tab:blue")
            ax.set_xlabel("positives per query (same label)")
            ax.set_ylabel("queries")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png
