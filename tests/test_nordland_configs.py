"""The Nordland configs (docs/RESULTS.md) parse, and differ only in name and loss: same model, budget, seed."""

from pathlib import Path

from sare_core.config_io import load_config
from sare_core.training.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_nordland_configs_share_everything_but_name_and_loss():
    paths = sorted(p for p in CONFIGS.glob("nordland_*.yaml") if p.stem != "nordland_base")
    assert len(paths) == 5
    configs = {p.stem: load_config(TrainConfig, p) for p in paths}
    dumps = [c.model_dump(exclude={"name", "loss"}) for c in configs.values()]
    assert all(d == dumps[0] for d in dumps)
    assert {c.name for c in configs.values()} == set(configs)
    assert {(c.loss.name, c.loss.kernel) for c in configs.values() if c.loss.name != "triplet"} == {
        ("sare_ind", "gaussian"), ("sare_joint", "gaussian"), ("sare_ind", "cauchy"), ("sare_ind", "exponential")}
    first = next(iter(configs.values()))
    assert first.dataset == "data/nordland/manifest.parquet" and first.test_split is None
    assert first.model.backbone == "efficientnet_lite0" and first.model.weights == "imagenet"
    assert first.model.pooling == "netvlad" and first.model.num_clusters == 64
