"""The Nordland configs (docs/RESULTS.md): each shipped configs/nordland_<loss>.yaml is the base config with
its sweep's winning values (results/nordland_study/sweep_<loss>.json), and nothing else changed; each variant
configs/nordland_<loss>_<label>.yaml is that winner with the overrides its screen trained
(results/nordland_study/screen_<loss>_<label>_seed0.json), and nothing else changed."""

import json
from pathlib import Path

import pytest
import yaml

from sare_core.config_io import load_config, read_yaml_mapping
from sare_core.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
RESULTS = ROOT / "results" / "nordland_study"
VARIANTS = sorted(p for p in CONFIGS.glob("nordland_*.yaml")
                  if (RESULTS / f"screen_{p.stem.removeprefix('nordland_')}_seed0.json").is_file())
WINNERS = sorted(p for p in CONFIGS.glob("nordland_*.yaml") if p.stem != "nordland_base" and p not in VARIANTS)


def test_every_shipped_nordland_config_has_its_sweep_result():
    assert WINNERS, "no configs/nordland_<loss>.yaml"
    for path in WINNERS:
        loss = path.stem.removeprefix("nordland_")
        assert (CONFIGS / f"sweep_nordland_{loss}.yaml").is_file(), path.name
        assert (RESULTS / f"sweep_{loss}.json").is_file(), f"{path.name}: its sweep result is not committed"


@pytest.mark.parametrize("path", WINNERS, ids=lambda p: p.stem)
def test_a_winner_is_the_base_with_its_sweeps_best_values(path):
    loss = path.stem.removeprefix("nordland_")
    sweep = read_yaml_mapping(CONFIGS / f"sweep_nordland_{loss}.yaml")
    best = json.loads((RESULTS / f"sweep_{loss}.json").read_text())["best"]
    winner = load_config(TrainConfig, path).model_dump()
    base = load_config(TrainConfig, CONFIGS / "nordland_base.yaml").model_dump()
    expected = yaml.safe_load(yaml.safe_dump(base))
    expected["name"] = path.stem
    for key, value in sweep["train"].items():  # the sweep's fixed training overrides (the loss)
        expected[key] = {**expected[key], **value} if isinstance(value, dict) else value
    for key in sweep["search_space"]:
        section, _, leaf = key.rpartition(".")
        target = expected[section] if section else expected
        target[leaf] = best[f"param:{key}"]
    assert winner == TrainConfig(**expected).model_dump()


def test_the_variant_configs_are_found():
    assert [p.name for p in VARIANTS] == ["nordland_sare_joint_gaussian_clip7_lr4e-3.yaml",
                                          "nordland_sare_joint_gaussian_clip7_lr4e-3_ep10.yaml",
                                          "nordland_triplet_ep10.yaml"]


@pytest.mark.parametrize("path", VARIANTS, ids=lambda p: p.stem)
def test_a_variant_is_its_losss_winner_with_the_overrides_its_screen_trained(path):
    screen = json.loads((RESULTS / f"screen_{path.stem.removeprefix('nordland_')}_seed0.json").read_text())
    expected = load_config(TrainConfig, CONFIGS / f"nordland_{screen['loss']}.yaml",
                           overrides=screen["overrides"]).model_dump()
    expected["name"] = path.stem
    assert load_config(TrainConfig, path).model_dump() == expected
    finals = sorted(RESULTS.glob(f"final_{path.stem.removeprefix('nordland_')}_seed*.json"))
    assert len(finals) == 3, f"{path.name}: its three finals (docs/RESULTS.md) are not all committed"
    for final in finals:  # its test figures came from runs of exactly these overrides
        record = json.loads(final.read_text())
        assert (record["loss"], record["overrides"]) == (screen["loss"], screen["overrides"]), final.name


def test_the_base_protocol():
    base = load_config(TrainConfig, CONFIGS / "nordland_base.yaml")
    assert base.dataset == "data/nordland/manifest.parquet" and base.test_split is None
    assert base.model.backbone == "efficientnet_lite0" and base.model.weights == "imagenet"
    assert base.model.pooling == "netvlad" and base.model.num_clusters == 64 and base.model.whitening_dim is None
    assert base.select_n == 1 and base.seed == 0
