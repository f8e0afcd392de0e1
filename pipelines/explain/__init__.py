"""`sare explain`: per-location evidence maps of NetVLAD / GeM descriptors (`maps`: run(ExplainConfig); `cli`)."""
