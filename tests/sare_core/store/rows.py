"""Synthetic descriptor rows for the store tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sare_core.store import StoreMetadata

DIM = 16


@dataclass
class Rows:
    """n store rows as the writer takes them: ids, roles, splits, utm (n, 2), labels, descriptors (n, D)."""

    ids: list[str]
    roles: list[str]
    splits: list[str]
    utm: np.ndarray
    labels: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def slice(self, start: int, stop: int) -> Rows:
        return Rows(self.ids[start:stop], self.roles[start:stop], self.splits[start:stop], self.utm[start:stop],
                    self.labels[start:stop], self.descriptors[start:stop])

    def write_kwargs(self) -> dict:
        return {"ids": self.ids, "roles": self.roles, "splits": self.splits, "utm": self.utm,
                "labels": self.labels, "descriptors": self.descriptors}


def make_rows(n: int, dim: int = DIM, seed: int = 0, prefix: str = "img") -> Rows:
    """n rows with unit-norm float32 descriptors, both roles, three splits, some NaN UTM and -1 labels."""
    rng = np.random.default_rng(seed)
    descriptors = rng.standard_normal((n, dim)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    utm = rng.uniform(0, 1000, (n, 2)) + np.array([585000.0, 4477000.0])
    utm[::7] = np.nan
    labels = rng.integers(0, 50, n)
    labels[::5] = -1
    return Rows(
        ids=[f"{prefix}/{i:06d}.jpg" for i in range(n)],
        roles=["query" if i % 4 == 0 else "database" for i in range(n)],
        splits=[("train", "val", "test")[i % 3] for i in range(n)],
        utm=utm,
        labels=labels,
        descriptors=descriptors,
    )


def make_metadata(dim: int = DIM, dtype: str = "float32", **overrides) -> StoreMetadata:
    fields = {"dim": dim, "dtype": dtype, "dataset": "toy_city", "model_hash": "0123456789abcdef",
              "model_config": {"backbone": "vgg16", "num_clusters": 64, "layers": [1, 2]},
              "provenance": {"run": "test", "seed": 7}}
    fields.update(overrides)
    return StoreMetadata(**fields)


def by_id(ids, *arrays) -> list:
    """`arrays` reordered by sorting `ids` (for order-independent comparisons)."""
    order = np.argsort(np.asarray(ids, dtype=object).astype(str))
    return [np.asarray(a)[order] for a in arrays]
