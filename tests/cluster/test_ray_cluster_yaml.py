"""ray_cluster.yaml: Ray's own cluster-config validation (offline: no AWS call, no network), plus the
properties the cluster relies on: a head that schedules no work, GPU worker types with explicit resources,
a spot option, the project installed with its gpu extra, S3 through instance profiles and no AWS keys."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIG_PATH = REPO / "ray_cluster.yaml"

# Access key ids (long-term AKIA, temporary ASIA) and the names credentials are stored under.
KEY_PATTERNS = [re.compile(p, re.IGNORECASE) for p in (
    r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", r"aws_access_key_id", r"aws_secret_access_key", r"aws_session_token",
    r"secretAccessKey", r"accessKeyId")]


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CONFIG_PATH.read_text())


def ray_validate(config: dict) -> dict:
    """What `ray up` does to a config before any cloud call: fill in the provider's defaults, merge the
    setup commands, check docker and node-type bounds (prepare_config), then check it against Ray's JSON
    schema (ray/autoscaler/ray-schema.json) and its cross-field rules (validate_config)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_passes_rays_cluster_config_validation(config):
    prepared = ray_validate(config)
    assert prepared["provider"]["type"] == "aws"
    assert set(prepared["available_node_types"]) == set(config["available_node_types"])
    # Our commands replace the AWS defaults (which would install a Ray nightly wheel).
    assert prepared["setup_commands"] == config["setup_commands"]


def test_validation_is_not_a_rubber_stamp(config):
    import jsonschema

    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_train"]["resources"]["GPU"] = 0.5  # the schema wants integers
    with pytest.raises(jsonschema.ValidationError):
        ray_validate(broken)
    broken = copy.deepcopy(config)
    del broken["available_node_types"]["gpu_extract"]["resources"]
    with pytest.raises(jsonschema.ValidationError):
        ray_validate(broken)
    broken = copy.deepcopy(config)
    broken["head_node_type"] = "no_such_type"
    with pytest.raises(ValueError):
        ray_validate(broken)


def test_head_schedules_no_work(config):
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    assert "GPU" not in head["resources"]
    assert not head["node_config"]["InstanceType"].startswith(("g", "p"))  # a CPU instance
    assert any("--num-cpus=0" in cmd for cmd in config["head_start_ray_commands"])


def test_gpu_worker_types_have_explicit_resources(config):
    workers = {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}
    assert workers
    for name, node_type in workers.items():
        resources = node_type["resources"]
        assert resources.get("CPU", 0) >= 1 and resources.get("GPU", 0) >= 1, name
        assert node_type["node_config"]["InstanceType"].startswith("g5."), name
        assert node_type.get("min_workers", 0) == 0, f"{name}: GPU nodes start only on demand"
        assert node_type["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::"), name
    extract = [n for n, t in workers.items() if t["resources"].get("extract_node")]
    train = [n for n, t in workers.items() if t["resources"].get("train_node")]
    assert extract and all(workers[n]["resources"]["GPU"] == 1 for n in extract)
    assert train and all(workers[n]["resources"]["GPU"] > 1 for n in train)
    spot = [n for n, t in workers.items() if t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"]
    assert spot, "a spot worker type"
    assert config["idle_timeout_minutes"] > 0


def test_s3_through_instance_profiles(config):
    head = config["available_node_types"][config["head_node_type"]]
    assert head["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::")
    assert "s3" in " ".join(config["initialization_commands"]).lower()


def test_install_commands_use_the_gpu_extra(config):
    installs = [c for c in config["setup_commands"] if "pip install" in c and "sare" in c]
    assert installs and all(re.search(r"\[[^\]]*\bgpu\b[^\]]*\]", c) for c in installs), installs
    assert config["docker"]["image"].startswith("rayproject/ray:") and config["docker"]["image"].endswith("-gpu")
    assert config["head_start_ray_commands"] and config["worker_start_ray_commands"]
    # The project's extras exist under those names (pyproject.toml, [project.optional-dependencies]).
    pyproject = (REPO / "pyproject.toml").read_text()
    for extra in ("gpu", "tune"):
        assert re.search(rf"^{extra}\s*=\s*\[", pyproject, re.MULTILINE), extra


def test_no_aws_keys_anywhere():
    files = [CONFIG_PATH, *sorted(p for p in (REPO / "cluster").rglob("*")
                                  if p.is_file() and "__pycache__" not in p.parts)]
    assert len(files) > 5
    for path in files:
        text = path.read_text(errors="replace")
        for pattern in KEY_PATTERNS:
            assert not pattern.search(text), f"{path.relative_to(REPO)}: matches {pattern.pattern}"
