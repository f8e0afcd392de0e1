"""Write the Nordland manifest the `configs/nordland_*.yaml` runs use: winter queries, summer database, frames
split by index into disjoint train, validation and test ranges.

    .venv/bin/python benchmarks/nordland_manifest.py            # -> data/nordland/manifest.parquet

The frames of ../shared/data/nordland_dev (2,382 per season, 64x32 px, every 10th video frame) get their
position along the route as `utm_east` (utm_north = 0), so every radius is in files ("frames"):

    split  frames        database   queries   pos_dist_thr   training positives within
    train  [0, 1300)     summer     winter    10             1    (negatives only beyond 10 frames)
    val    [1350, 1850)  summer     winter    2              2    (evaluation: +-2 frames; every choice)
    test   [1900, 2382)  summer     winter    2              2    (reported only, once per final model)

The 50-frame gaps keep every frame of a range more than 10 frames (the negatives' radius) away from every
frame of another. The thresholds travel in the Parquet file's metadata, per split, so `sare train` mines
with them and `sare eval --manifest` uses the validation radius without a --radius.
Image paths are absolute (the images lie outside the manifest's folder).
"""

from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sare_core.data import load_aligned_traverses, write_manifest  # noqa: E402
from sare_core.data.sequence_splits import IndexRange, split_by_index  # noqa: E402

DEFAULT_ROOT = os.path.join(os.path.dirname(REPO), "shared", "data", "nordland_dev")
DEFAULT_OUT = os.path.join(REPO, "data", "nordland", "manifest.parquet")


def _range(text: str) -> tuple[int, int]:
    start, sep, stop = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: give START:STOP (frame indices, STOP excluded)")
    return int(start), int(stop)


def build(root: str, train: tuple[int, int] = (0, 1300), val: tuple[int, int] = (1350, 1850),
          test: tuple[int, int] | None = (1900, 2382), eval_radius: float = 2, train_pos_radius: float = 1,
          negative_radius: float = 10, database: str = "summer", queries: str = "winter"):
    """The split PlaceDatasets (train, val[, test]) of the aligned traverses under `root`."""
    full = load_aligned_traverses(os.path.join(root, database), os.path.join(root, queries),
                                  tolerance_frames=eval_radius, name=f"nordland_{database}_vs_{queries}")
    ranges = [IndexRange("train", *train, pos_dist_thr=negative_radius, train_pos_radius=train_pos_radius),
              IndexRange("val", *val, pos_dist_thr=eval_radius)]
    if test is not None:
        ranges.append(IndexRange("test", *test, pos_dist_thr=eval_radius))
    return split_by_index(full, ranges)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=DEFAULT_ROOT, help="nordland_dev folder (summer/, winter/)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="manifest to write (.parquet keeps the thresholds)")
    parser.add_argument("--train", type=_range, default=(0, 1300), metavar="START:STOP")
    parser.add_argument("--val", type=_range, default=(1350, 1850), metavar="START:STOP")
    parser.add_argument("--test", type=_range, default=(1900, 2382), metavar="START:STOP")
    parser.add_argument("--eval-radius", type=float, default=2, help="evaluation positives within (frames)")
    parser.add_argument("--train-pos-radius", type=float, default=1, help="training positives within (frames)")
    parser.add_argument("--negative-radius", type=float, default=10, help="training negatives beyond (frames)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.root):
        parser.error(f"--root: no such folder: {args.root}")
    splits = build(args.root, args.train, args.val, args.test, args.eval_radius, args.train_pos_radius,
                   args.negative_radius)
    write_manifest(args.out, splits)
    for d in splits:
        print(f"{d.split:5s} frames [{int(d.db_utm[:, 0].min())}, {int(d.db_utm[:, 0].max()) + 1}): "
              f"{d.num_db} database, {d.num_q} queries, pos_dist_thr {d.pos_dist_thr:g}, "
              f"training positives within {d.nontriv_pos_dist_sq_thr ** 0.5:g}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
