"""Ray stages (Data extraction, Train, Tune, evaluation) and the `sare` command line.

Each stage is one module with a typed config and a `run(config)` function; `pipelines.cli` only parses
arguments into configs.
"""
