import subprocess
import sys

import pytest

from pipelines.cli import main
from sare_core.config_io import apply_overrides, dump_config, load_config
from sare_core.models import ModelConfig


def test_sare_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "--help"], capture_output=True, text=True, check=True)
    assert "usage: sare" in out.stdout
    for command in ("data", "model", "demo"):
        assert command in out.stdout


def test_model_describe(capsys):
    assert main(["model", "describe", "--set", "model.backbone=tiny", "--set", "model.num_clusters=4"]) == 0
    assert "256 dims" in capsys.readouterr().out


def test_bad_config_names_file_and_field(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model:\n  backbone: tiny\n  num_clusterz: 4\n")
    assert main(["model", "describe", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "num_clusterz" in err
    assert main(["model", "describe", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_overrides_and_round_trip(tmp_path):
    data = apply_overrides({"a": {"b": 1}}, ["a.b=2", "a.c=[1, 2]", "d=none"])
    assert data == {"a": {"b": 2, "c": [1, 2]}, "d": "none"}
    with pytest.raises(ValueError, match="key.path=value"):
        apply_overrides({}, ["novalue"])
    config = ModelConfig(backbone="resnet18", cut="layer3", image_size=(240, 320))
    path = tmp_path / "m.yaml"
    path.write_text(dump_config(config))
    assert load_config(ModelConfig, path) == config
