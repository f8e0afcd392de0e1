"""`sare extract --dataset D --model M --out URI [--config YAML] [--set key=value ...]`.

Parses arguments into an `ExtractConfig` (YAML file, then the flags, then --set overrides) and runs
`pipelines.extract.pipeline.run`. Exit status: 0 when done and failures are within `max_failure_fraction`, 3 when
more images failed than that (the store is still committed; see its failures table), 2 for a bad config
or input (nothing done); an interrupted run exits non-zero and resumes when run again.
"""

from __future__ import annotations

import argparse


def _extract_cmd(args: argparse.Namespace) -> int:
    from sare_core.config_io import load_config

    from .config import ExtractConfig
    from .pipeline import run

    values = {"dataset": args.dataset, "model": args.model, "out": args.out, "splits": args.splits or None,
              "progress_bars": False if args.no_progress else None, "truncate": args.truncate}
    config = load_config(ExtractConfig, args.config, args.set, base=values, section="extract")
    result = run(config)
    print(result.summary())
    return result.exit_status


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "extract", help="extract descriptors of a dataset's images into a descriptor store (Ray Data)",
        description="Run every image of a dataset through a model on Ray (decode in CPU tasks, the model in "
        "an actor pool, parts written by the workers) into a Parquet descriptor store. Rerunning the "
        "same command after an interruption extracts only what is missing. Exit status 3 when more than "
        "max_failure_fraction of the images could not be read.")
    p.add_argument("--dataset", help="manifest (.csv/.parquet), dbStruct .mat, or dataset folder")
    p.add_argument("--model", help="saved model file, or a model-config YAML for an off-the-shelf model")
    p.add_argument("--out", help="descriptor store: local folder or s3://bucket/prefix")
    p.add_argument("--config", help="YAML with ExtractConfig fields (or an extract: section)")
    p.add_argument("--splits", nargs="+", help="only these splits (default: all)")
    p.add_argument("--no-progress", action="store_true", help="no Ray Data progress bars")
    p.add_argument("--truncate", type=int, metavar="K", help="store each descriptor's first K elements, "
                   "re-L2-normalised")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. batch_size=64, num_actors=2, max_failure_fraction=0.05")
    p.set_defaults(func=_extract_cmd)
