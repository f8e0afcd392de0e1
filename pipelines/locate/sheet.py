"""The sheets of `sare locate`: per photo a PNG (the photo, its best matches, a map of them with the position
estimate, its spread and the true position when known), and one self-contained HTML page of them all."""

from __future__ import annotations

import base64
import html
import os

import numpy as np

SHOWN_MATCHES = 5


def _image(path: str | None):
    from PIL import Image

    from sare_core.models.images import load_rgb

    if not path:
        return None
    try:
        img = load_rgb(path)
    except (OSError, ValueError):
        return None
    img.thumbnail((320, 240), Image.BILINEAR)
    return np.asarray(img)


def write_png_sheet(result: dict, path: str) -> str:
    """The photo, its first SHOWN_MATCHES matches and (for geographic indexes) the map; returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matches = result["matches"][:SHOWN_MATCHES]
    geographic = result["position"] is not None
    columns = 1 + SHOWN_MATCHES + (2 if geographic else 0)
    fig = plt.figure(figsize=(2.2 * columns, 2.8), dpi=100)
    grid = fig.add_gridspec(1, columns)
    panels = [("photo", result["photo"], "")] + [
        (f"#{r + 1}  d={m['distance']:.3f}", m["path"],
         f"{m['utm_east']:.0f}, {m['utm_north']:.0f}" if m["utm_east"] is not None else f"label {m['label']}")
        for r, m in enumerate(matches)]
    for col, (title, image_path, caption) in enumerate(panels):
        ax = fig.add_subplot(grid[0, col])
        pixels = _image(image_path)
        if pixels is not None:
            ax.imshow(pixels)
        else:
            ax.text(0.5, 0.5, "no image", ha="center", va="center")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(caption, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    if geographic:
        ax = fig.add_subplot(grid[0, 1 + SHOWN_MATCHES:])
        everything = result["matches"]
        east = [m["utm_east"] for m in everything]
        north = [m["utm_north"] for m in everything]
        ax.scatter(east, north, c=np.arange(len(everything)), cmap="viridis_r", s=18, label="matches (best: yellow)")
        p = result["position"]
        ax.add_patch(plt.Circle((p["utm_east"], p["utm_north"]), max(p["spread"], 1e-3), fill=False, color="red"))
        ax.plot(p["utm_east"], p["utm_north"], "r+", markersize=12, label="estimate")
        if result.get("truth"):
            t = result["truth"]
            ax.plot(t["utm_east"], t["utm_north"], "k*", markersize=10, label="true position")
        ax.set_aspect("equal", adjustable="datalim")
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6, loc="best")
        error = f", error {result['error']:.0f}" if result.get("error") is not None else ""
        ax.set_title(f"spread {p['spread']:.0f}, support {p['support']:.2f}{error}", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_html_sheet(results: list[dict], path: str) -> str:
    """One page: per photo its PNG sheet and a line of where it was placed; returns `path`."""
    rows = []
    for r in results:
        with open(r["sheet"], "rb") as f:
            uri = "data:image/png;base64," + base64.b64encode(f.read()).decode()
        p = r["position"]
        where = (f"placed at ({p['utm_east']:.1f}, {p['utm_north']:.1f}), spread {p['spread']:.1f}, support "
                 f"{p['support']:.2f}" if p else "no position (a label index, or no match)")
        if r.get("error") is not None:
            where += f"; {r['error']:.1f} from the true position"
        rows.append(f"<h2>{html.escape(os.path.basename(r['photo']))}</h2><p>{html.escape(where)}</p>"
                    f'<img src="{uri}" alt="{html.escape(r["photo"])}">')
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>sare locate</title>"
            "<style>body{font-family:sans-serif;margin:1.5em} img{max-width:100%}</style></head><body>"
            "<h1>Where were these photos taken?</h1>" + "".join(rows) + "</body></html>")
    with open(path, "w") as f:
        f.write(page)
    return path
