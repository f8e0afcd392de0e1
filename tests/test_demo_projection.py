"""The demo's slow-host projection (benchmarks/demo_seeds.py), which README and docs quote from
results/demo_seeds.json: recomputed from each stored run's stages and epochs, it must give the stored
figures. It fails when the projection's inputs move under the quoted figures, as when the training-image cost
was read from a benchmark JSON that a rerun changed (2026-12-03); after a deliberate change, rerun
`benchmarks/demo_seeds.py --reproject` and the docs' figures with it."""

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import demo_seeds  # noqa: E402


@pytest.mark.parametrize("name", ["demo_seeds.json", "demo_seeds_slow_hour_repeat.json"])
def test_the_stored_projections_are_what_the_projection_gives(name):
    record = json.loads((REPO / "results" / name).read_text())
    for run in record["runs"]:
        again = demo_seeds.projection(run)
        assert again["projected_minutes_on_slowest_host"] == pytest.approx(run["projected_minutes_on_slowest_host"],
                                                                           rel=1e-9), run["seed"]
        assert again["slowdown_by_work"] == pytest.approx(run["slowdown_by_work"], rel=1e-9)


def test_a_slower_epoch_projects_a_longer_demo():
    run = json.loads((REPO / "results" / "demo_seeds.json").read_text())["runs"][0]
    slower = {**run, "epochs": [{**e, "seconds": e["seconds"] * 2} if "seconds" in e else e for e in run["epochs"]]}
    # Half the work per second: this host reads as no faster than the slow one, so less is scaled up.
    assert demo_seeds.projection(slower)["slowdown_by_work"] == pytest.approx(
        demo_seeds.projection(run)["slowdown_by_work"] / 2)
