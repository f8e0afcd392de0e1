"""Names every dataset reader and command shares (plain values; importing this module costs nothing)."""

ROLES = ("database", "query")
SPLITS = ("train", "val", "test")
DATASET_FORMATS = ("dbstruct", "gsv", "aligned", "gldv2", "manifest")
