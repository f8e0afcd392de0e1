"""Evaluation reports: the recall table (one row per model, a ratio row when two are compared), JSON,
a Recall@N curve PNG, and an HTML page of sampled queries with their top retrieved images."""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Mapping, Sequence

import fsspec
import numpy as np

from ..paths import is_remote


def format_recall_table(rows: Mapping[str, Mapping[int, float]], ns: Sequence[int] | None = None) -> str:
    """Recall@N in percent, one row per model in the given order; with exactly two models a last row
    gives their ratio (second / first, e.g. trained / off-the-shelf)."""
    if not rows:
        return "(no results)"
    ns = sorted(ns or next(iter(rows.values())).keys())
    names = list(rows)
    width = max(14, *(len(n) for n in names), len(f"ratio {names[-1]}/{names[0]}") if len(names) == 2 else 0)
    header = f"{'model':<{width}}" + "".join(f"{'R@' + str(n):>9}" for n in ns)
    lines = [header, "-" * len(header)]
    for name in names:
        lines.append(f"{name:<{width}}" + "".join(f"{100 * rows[name][n]:>9.2f}" for n in ns))
    if len(names) == 2:
        base, other = rows[names[0]], rows[names[1]]
        cells = "".join(f"{(other[n] / base[n] if base[n] > 0 else float('nan')):>9.3f}" for n in ns)
        lines.append(f"{'ratio ' + names[1] + '/' + names[0]:<{width}}" + cells)
    return "\n".join(lines)


def write_json(path: str, payload: dict) -> None:
    with fsspec.open(path, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=False, default=_json_default)
        f.write("\n")


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def plot_recall_curves(rows: Mapping[str, Mapping[int, float]], path: str, title: str = "Recall@N") -> None:
    """Recall@N curves (percent against N, log-scaled N axis) to a PNG file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for name, recalls in rows.items():
        ns = sorted(recalls)
        ax.plot(ns, [100 * recalls[n] for n in ns], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("N (number of retrieved database images)")
    ax.set_ylabel("Recall@N (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    with fsspec.open(path, "wb") as f:
        f.write(buffer.getvalue())


def thumbnail_data_uri(path: str, max_side: int = 160) -> str | None:
    """A base64 JPEG data URI of the image, or None when it cannot be read."""
    from PIL import Image

    try:
        with fsspec.open(path, "rb") as f, Image.open(f) as img:
            img = img.convert("RGB")
            img.thumbnail((max_side, max_side))
            out = io.BytesIO()
            img.save(out, format="JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()
    except (OSError, ValueError):
        return None


def _cell(label: str, path: str | None, css: str) -> str:
    uri = thumbnail_data_uri(path) if path else None
    img = f'<img src="{uri}" alt="{html.escape(label)}">' if uri else '<div class="missing">no image</div>'
    return f'<td class="{css}">{img}<div class="cap">{html.escape(label)}</div></td>'


def write_html_report(
    path: str,
    title: str,
    summary_lines: Sequence[str],
    queries: Sequence[dict],
) -> None:
    """An HTML page: a summary, then one row per sampled query: the query image and its top retrieved
    database images, correct ones framed green, wrong ones red. Images are embedded as thumbnails so the
    page is self-contained.

    queries: dicts with `query_id`, `query_path` (or None), and `retrieved`: a list of dicts with `id`,
    `path` (or None), `correct` (bool) and `distance` (float).
    """
    rows = []
    for q in queries:
        cells = [_cell(f"query {q['query_id']}", q.get("query_path"), "query")]
        for rank, r in enumerate(q["retrieved"], start=1):
            css = "hit" if r["correct"] else "miss"
            cells.append(_cell(f"#{rank} {r['id']} (d={r['distance']:.3f})", r.get("path"), css))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    summary = html.escape("\n".join(summary_lines))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }}
td {{ padding: 4px; vertical-align: top; text-align: center; }}
td img {{ display: block; margin: auto; border: 4px solid transparent; max-width: 160px; }}
td.hit img {{ border-color: #2a2; }} td.miss img {{ border-color: #c22; }} td.query img {{ border-color: #555; }}
.cap {{ font-size: 11px; max-width: 168px; word-break: break-all; }}
.missing {{ width: 160px; height: 90px; background: #eee; line-height: 90px; font-size: 12px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<pre>{summary}</pre>
<p>Green frame: a correct database image (a positive of the query); red: wrong.</p>
<table>{''.join(rows)}</table>
</body></html>
"""
    parent = os.path.dirname(path)
    if parent and not is_remote(path):
        os.makedirs(parent, exist_ok=True)
    with fsspec.open(path, "w") as f:
        f.write(page)
