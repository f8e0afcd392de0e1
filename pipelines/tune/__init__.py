"""The sweep stage on Ray Tune: `sweep` (run(SweepConfig)), `config`, `search`, `trial`, `cleanup`, `finalize`, `results`, `plot`, `cli`."""
