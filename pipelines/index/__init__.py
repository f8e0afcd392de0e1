"""The index stage: `build` (run(IndexBuildConfig): a FAISS index over a descriptor store, its shards built on
Ray workers), `cli` (`sare index build`). The index itself is `sare_core.index`."""
