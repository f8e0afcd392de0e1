"""The evaluation stage: `stores` (run(EvalConfig): score descriptor stores, table, JSON, PNG, HTML),
`manifest` (run(ManifestEvalConfig): `sare eval --manifest`, extract then score), `ray_search` (the
database sharded over Ray actors), `cli`. Scoring itself is `sare_core.evaluation.store_search.score_stores`."""
