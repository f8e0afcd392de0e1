"""Heat maps for a few Nordland test pairs (winter query, summer frame of the same place): where the
off-the-shelf and the trained models draw their evidence. Writes docs/images/nordland_explain/*.png.

    .venv/bin/python benchmarks/nordland_explain.py --off-the-shelf INITIAL.pt --trained NAME=model.pt ...

Runs after benchmarks/nordland_study.py (it needs the final models). The pairs are chosen by rule, not by
eye: over the --split queries (default: the test range) in frame order, the first where the first trained model retrieves a
correct frame (+-2) at rank 1 and the off-the-shelf model does not, the first where both do, and the first
where neither does. The `sare explain` command line is printed and saved in the output's command.txt.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sare_core.data import read_manifest  # noqa: E402
from sare_core.models import embed_paths, load_model  # noqa: E402


def top1_correct(model_path: str, data) -> np.ndarray:
    model = load_model(model_path)
    db = embed_paths(model, data.db_paths)
    q = embed_paths(model, data.q_paths)
    best = np.argmax(q @ db.T, axis=1)
    positives = data.positives()
    return np.array([b in p for b, p in zip(best, positives)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default="data/nordland/manifest.parquet")
    parser.add_argument("--off-the-shelf", dest="off", default="runs/nordland_triplet/initial_model.pt")
    parser.add_argument("--trained", action="append", default=None,
                        help="NAME=model.pt (repeat); default: triplet and SARE-joint")
    parser.add_argument("--split", default="test", help="the manifest split whose queries are drawn")
    parser.add_argument("--out", default="docs/images/nordland_explain")
    args = parser.parse_args(argv)
    trained = args.trained or ["triplet=runs/nordland_triplet/model.pt",
                               "sare_joint=runs/nordland_sare_joint_gaussian/model.pt"]
    os.chdir(REPO)
    data = read_manifest(args.manifest, split=args.split)
    off = top1_correct(args.off, data)
    first = top1_correct(trained[0].split("=", 1)[1], data)
    picks = []
    for rule in (first & ~off, first & off, ~first & ~off):
        rows = np.flatnonzero(rule)
        if len(rows):
            picks.append(int(rows[0]))
    q_frame = data.q_utm[:, 0]
    matches = [data.db_paths[int(np.argmin(np.abs(data.db_utm[:, 0] - q_frame[i])))] for i in picks]
    command = [".venv/bin/sare", "explain", *[data.q_paths[i] for i in picks], "--model", f"off-the-shelf={args.off}"]
    for spec in trained:
        command += ["--compare", spec]
    for m in matches:
        command += ["--match", m]
    command += ["--out", args.out]
    print(f"top-1 correct: off-the-shelf {off.mean():.3f}, {trained[0]} {first.mean():.3f}")
    print("$ " + " ".join(command), flush=True)
    subprocess.check_call(command)
    with open(os.path.join(args.out, "command.txt"), "w") as f:
        f.write(" ".join(command) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
