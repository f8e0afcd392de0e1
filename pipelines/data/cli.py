"""`sare data convert | inspect | synth`: parse arguments into the configs of pipelines.data and run them."""

from __future__ import annotations

import argparse

from sare_core.data.names import DATASET_FORMATS, SPLITS
from sare_core.data.synth.presets import PRESETS as SYNTH_PRESETS


def _convert(args: argparse.Namespace) -> int:
    from . import jobs as data

    cfg = data.ConvertConfig(
        format=args.format,
        inputs=args.input,
        out=args.out,
        split=args.split,
        splits=args.splits,
        queries=args.queries or [],
        tolerance_frames=args.tolerance_frames,
        train_tolerance_frames=args.train_tolerance_frames,
        index_by=args.index_by,
        gldv2_set=args.gldv2_set,
        usage=args.usage.split(",") if args.usage else None,
        keep_distractors=not args.drop_distractors,
        images_root=args.images_root,
        pos_dist_thr=args.pos_dist_thr,
        nontriv_pos_dist_sq_thr=args.nontriv_pos_dist_sq_thr,
        check_images=args.check_images,
        decode_images=args.decode_images,
    )
    datasets = data.run(cfg)
    for d in datasets:
        print(f"{d.split or '-':<6} {d.num_db:>8} database {d.num_q:>8} queries  ({d.name})")
    print(f"wrote {cfg.out}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from . import jobs as data

    cfg = data.InspectConfig(
        path=args.path,
        map_png=args.map,
        split=args.split,
        json_out=args.json,
        tolerance_frames=args.tolerance_frames,
        pos_dist_thr=args.pos_dist_thr,
        nontriv_pos_dist_sq_thr=args.nontriv_pos_dist_sq_thr,
        check_images=args.check_images,
    )
    result = data.run(cfg)
    print(result.text)
    print(f"\nmap: {result.map_png}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from . import jobs as data

    cfg = data.SynthConfig(out=args.out, preset=args.preset, seed=args.seed, workers=args.workers)
    result = data.run(cfg)
    print(f"synthetic city '{cfg.preset}' (seed {cfg.seed}) written to {cfg.out}")
    for split, counts in (result.get("counts") or {}).items():
        print(f"  {split:<6} {counts.get('database', '?'):>8} database {counts.get('queries', '?'):>8} queries")
    if result.get("manifest"):
        print(f"manifest: {result['manifest']}")
    return 0


def _thresholds(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pos-dist-thr", type=float, help="evaluation positives radius in metres (frames for "
                   "aligned data); overrides the input's (CSV manifests default to 25)")
    p.add_argument("--nontriv-pos-dist-sq-thr", type=float, help="training positives radius squared (m^2); "
                   "overrides the input's (CSV manifests default to 100)")


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="convert, inspect and synthesise datasets")
    sub = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND")

    p = sub.add_parser("convert", help="write a manifest (.csv/.parquet) from a dataset in another format")
    p.add_argument("--format", required=True, choices=DATASET_FORMATS)
    p.add_argument("--input", required=True, nargs="+",
                   help="dbstruct: .mat file(s), one per split; gsv: dataset folder (holding images/); "
                   "aligned: the database traverse folder; gldv2: folder with the CSVs (or train.csv); "
                   "manifest: a manifest")
    p.add_argument("--out", required=True, help="manifest to write, .parquet or .csv")
    p.add_argument("--split", choices=SPLITS, help="name the split of a single input dataset")
    p.add_argument("--splits", nargs="+", choices=SPLITS, help="gsv: splits to convert (default: all found)")
    p.add_argument("--queries", nargs="+", help="aligned: query traverse folder(s)")
    p.add_argument("--tolerance-frames", type=float, default=2,
                   help="aligned: frames (files in the sorted sequence) around the same name that count as "
                   "the same place (default 2)")
    p.add_argument("--train-tolerance-frames", type=float, help="aligned: training positives tolerance "
                   "(default: --tolerance-frames)")
    p.add_argument("--index-by", choices=("position", "frame_number"), default="position",
                   help="aligned: place index from the position in the sorted sequence, or the number in the "
                   "file name divided by the frame step")
    p.add_argument("--gldv2-set", choices=("retrieval", "train"), default="retrieval",
                   help="gldv2: index/test retrieval benchmark, or train.csv labels")
    p.add_argument("--usage", help="gldv2: keep queries with these Usage values, comma-separated "
                   "(e.g. Public,Private)")
    p.add_argument("--drop-distractors", action="store_true", help="gldv2: drop queries without positives")
    p.add_argument("--images-root", help="dbstruct: image root (queries under queries_real/); gldv2 train: "
                   "image root (default train/ next to the CSV)")
    _thresholds(p)
    p.add_argument("--check-images", action="store_true",
                   help="check that every image exists and opens before writing (header check)")
    p.add_argument("--decode-images", action="store_true", help="with --check-images: fully decode each image")
    p.set_defaults(func=_convert)

    p = sub.add_parser("inspect", help="counts, positives per query and a map of a dataset")
    p.add_argument("path", help="a manifest, a dbStruct .mat, or a dataset folder the readers recognise")
    p.add_argument("--map", help="PNG map to write (default: <name>_map.png next to the input file, or in "
                   "the current directory)")
    p.add_argument("--split", choices=SPLITS, help="only this split")
    p.add_argument("--json", help="also write the summary as JSON here")
    p.add_argument("--tolerance-frames", type=float, default=2, help="aligned traverse folders: tolerance")
    _thresholds(p)
    p.add_argument("--check-images", action="store_true", help="also report missing/unreadable images")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("synth", help="render the synthetic city dataset")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--preset", choices=sorted(SYNTH_PRESETS), default="small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, help="parallel render processes (default: one per CPU)")
    p.set_defaults(func=_synth)

    parser.set_defaults(func=lambda _args: (parser.print_help(), 2)[1])
