"""The dataset stage (no Ray): `jobs` (convert any dataset to a manifest, inspect one, render the synthetic city), `cli`."""
