"""Every shipped config parses into its typed config (no typo survives to a cluster run)."""

from pathlib import Path

import pytest

from pipelines.demo.job import DemoConfig
from pipelines.tune.config import SweepConfig
from sare_core.config_io import load_config
from sare_core.training.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# the paper-setting configs (Nordland configs have their own checks in test_nordland_configs.py)
@pytest.mark.parametrize("path", sorted(p.name for p in CONFIGS.glob("*.yaml") if not p.name.startswith(("demo", "sweep", "nordland"))))
def test_training_configs_parse(path):
    config = load_config(TrainConfig, CONFIGS / path)
    assert config.model.num_clusters == 64 and config.model.whitening_dim == 4096


def test_demo_config_parses_with_a_valid_training_section():
    demo = load_config(DemoConfig, CONFIGS / "demo.yaml")
    assert isinstance(demo.train, TrainConfig) and demo.train.dataset.endswith("city/manifest.parquet")


@pytest.mark.parametrize("path", sorted(p.name for p in CONFIGS.glob("sweep_*.yaml")))
def test_sweep_configs_parse_and_every_trial_config_is_valid(path, monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)  # base_config paths are relative to the repository
    load_config(SweepConfig, CONFIGS / path).check()
