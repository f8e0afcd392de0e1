"""Where a photo was taken, from its retrieved matches: the densest group of matches on the map.

Each match votes with a weight that falls with its descriptor distance (softmax over -d^2 / temperature,
0.02 by default: a match 0.05 closer in d^2 counts e^2.5 = 12 times more, so a near-duplicate of a database
image outweighs several loose matches elsewhere); the match whose `radius` neighbourhood gathers the most weight anchors the
group, and the estimate is the weighted mean position of that group. The spread is the weighted RMS
distance of the group's matches from the estimate (metres, or the coordinates' units), and the support
the share of all the weight the group holds (1.0: every match agrees).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PositionEstimate:
    east: float
    north: float
    spread: float  # weighted RMS distance of the group's matches from the estimate
    support: float  # share of the matches' weight inside the group, 0..1
    members: list[int]  # indices (into the matches) of the group

    def to_json(self) -> dict:
        return {"utm_east": self.east, "utm_north": self.north, "spread": self.spread, "support": self.support,
                "matches_in_group": self.members}


def match_weights(distances: np.ndarray, temperature: float = 0.02) -> np.ndarray:
    """Weights summing to 1 from squared L2 distances (L2-normalised descriptors: d^2 in [0, 4])."""
    d = np.asarray(distances, dtype=np.float64)
    logits = -(d - d.min()) / temperature
    w = np.exp(logits)
    return w / w.sum()


def estimate_position(utm: np.ndarray, distances: np.ndarray, radius: float = 25.0,
                      temperature: float = 0.02) -> PositionEstimate | None:
    """The position of a photo from its matches' coordinates (K, 2) and squared distances (K,), best first;
    None without matches."""
    utm = np.asarray(utm, dtype=np.float64).reshape(-1, 2)
    if len(utm) == 0:
        return None
    weights = match_weights(distances, temperature)
    near = np.linalg.norm(utm[:, None, :] - utm[None, :, :], axis=2) <= radius
    anchor = int(np.argmax(near @ weights))
    members = np.flatnonzero(near[anchor])
    w = weights[members] / weights[members].sum()
    centre = (w[:, None] * utm[members]).sum(axis=0)
    spread = float(np.sqrt((w * ((utm[members] - centre) ** 2).sum(axis=1)).sum()))
    return PositionEstimate(float(centre[0]), float(centre[1]), spread, float(weights[members].sum()),
                            members.tolist())
