"""Recall against descriptor size: top-K truncation (the first K elements, re-L2-normalised: the seed's
recipe for smaller descriptors after PCA whitening, whose leading components carry the most variance).

    .venv/bin/python benchmarks/truncation.py --name city --model runs/demo/runs/demo/model.pt \\
        --manifest runs/demo/city/manifest.parquet --split test --whitening-dim 1024
    .venv/bin/python benchmarks/truncation.py --name nordland --model runs/nordland_study/<winner>/model.pt \\
        --manifest data/nordland/manifest.parquet --split test --whitening-dim 1024
    # each writes results/truncation_<name>.json

The model gets PCA whitening to --whitening-dim fitted on --fit-split's database images
(`sare_core.training.fitting.fit_whitening`; with --whitening-dim 0 the model is used as it is), the split
is extracted once (`sare extract`, a store of the whitened descriptors), and the store is scored with
`sare eval --truncate K` for each K (Recall@1/5/10). The raw model (no whitening, no truncation) is scored
too, as the reference row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

NS = (1, 5, 10)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--fit-split", default="train")
    parser.add_argument("--whitening-dim", type=int, default=1024)
    parser.add_argument("--whitening-images", type=int, default=None)
    parser.add_argument("--ks", default="1024,512,256,128,64,32")
    parser.add_argument("--work", default=None, help="scratch folder (default runs/truncation_<name>)")
    args = parser.parse_args(argv)

    from pipelines.extract.config import ExtractConfig
    from pipelines.extract.pipeline import run as extract
    from sare_core.data.sources import open_splits
    from sare_core.evaluation.store_search import score_stores
    from sare_core.models.io import load_model, save_model
    from sare_core.training.fitting import fit_whitening

    work = args.work or os.path.join(REPO, "runs", f"truncation_{args.name}")
    os.makedirs(work, exist_ok=True)
    splits = open_splits(args.manifest)
    rows, stores = [], {}
    variants = [("raw", args.model)]
    if args.whitening_dim:
        model = load_model(args.model)
        fit = fit_whitening(model, splits[args.fit_split].db_paths, args.whitening_dim, args.whitening_images)
        whitened = os.path.join(work, "whitened_model.pt")
        save_model(whitened, model, metadata={"derived": f"{args.model} + PCA whitening", **fit})
        variants.append((f"whitened_{fit['whitening']['dims']}", whitened))
    for name, model_path in variants:
        store = os.path.join(work, f"store_{name}")
        started = time.perf_counter()
        result = extract(ExtractConfig(dataset=args.manifest, model=model_path, out=store, splits=[args.split],
                                       progress_bars=False))
        stores[name] = {"store": store, "dim": result.dim, "extract_seconds": time.perf_counter() - started}
    ks = [int(k) for k in args.ks.split(",")]
    for name, info in stores.items():
        for k in [None] + ([k for k in ks if k < info["dim"]] if name != "raw" else []):
            score = score_stores(name, info["store"], ns=NS, split=args.split, truncate=k).evaluation
            rows.append({"descriptors": name, "dims": k or info["dim"], "truncated": k is not None,
                         **{f"R@{n}": 100 * score.recalls[n] for n in NS}})
            print(json.dumps(rows[-1]), flush=True)
    out = os.path.join(REPO, "results", f"truncation_{args.name}.json")
    with open(out, "w") as f:
        json.dump({"name": args.name, "model": args.model, "manifest": args.manifest, "split": args.split,
                   "fit_split": args.fit_split, "whitening_dim": args.whitening_dim, "stores": stores,
                   "rows": rows, "command": "python benchmarks/truncation.py " + " ".join(argv or sys.argv[1:]),
                   "date": time.strftime("%Y-%m-%d %H:%M")}, f, indent=1)
    print(f"wrote {os.path.relpath(out, REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
