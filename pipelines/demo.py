"""`sare demo`: the main job on the embedded synthetic default, end to end on local resources."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="end-to-end run on the embedded synthetic city")
    parser.set_defaults(func=lambda args: 0)
