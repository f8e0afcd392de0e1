"""cluster/: the KubeRay manifests parse, run real `sare` commands with real configs on GPU worker groups,
all use one image; the Dockerfile installs the gpu extra; the launch helper prints the right Ray commands."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
GPU = "nvidia.com/gpu"


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def manifests(kind: str) -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted(CLUSTER.glob("*.yaml")) for d in load_docs(p) if d.get("kind") == kind]


def cluster_specs() -> list[tuple[str, dict]]:
    """(where, RayClusterSpec) of the RayCluster and of every RayJob."""
    specs = [(f"{p.name} RayCluster", d["spec"]) for p, d in manifests("RayCluster")]
    specs += [(f"{p.name} RayJob", d["spec"]["rayClusterSpec"]) for p, d in manifests("RayJob")]
    return specs


def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def start_resources(group: dict) -> dict:
    """A group's custom Ray resources: rayStartParams.resources holds a JSON object as a quoted string."""
    raw = group.get("rayStartParams", {}).get("resources")
    if raw is None:
        return {}
    value = json.loads(raw)
    return json.loads(value) if isinstance(value, str) else value


def sare_subcommands() -> set[str]:
    from pipelines.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def load_launch():
    spec = importlib.util.spec_from_file_location("sare_cluster_launch", CLUSTER / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_yaml_parses():
    paths = sorted(CLUSTER.glob("*.yaml")) + sorted(CLUSTER.glob("*.yml"))
    assert len(paths) >= 6
    for path in paths:
        docs = load_docs(path)
        assert docs, path.name
        for doc in docs:
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path.name


def test_the_kuberay_objects_are_there():
    jobs = {d["metadata"]["name"]: d for _, d in manifests("RayJob")}
    assert len(manifests("RayCluster")) == 1 and len(jobs) == 4
    for _, doc in manifests("RayJob") + manifests("RayCluster"):
        assert doc["apiVersion"] == "ray.io/v1"
    commands = {shlex.split(d["spec"]["entrypoint"])[1] for d in jobs.values()}
    assert commands == {"extract", "train", "tune", "eval"}


def test_rayjob_entrypoints_name_real_commands_and_configs():
    known = sare_subcommands()  # what the modules of pipelines.cli.COMMAND_MODULES register
    assert {"extract", "train", "tune", "eval"} <= known
    for path, job in manifests("RayJob"):
        tokens = shlex.split(job["spec"]["entrypoint"])
        assert tokens[0] == "sare", path.name
        assert tokens[1] in known, f"{path.name}: sare {tokens[1]} is not a sare command"
        for config in re.findall(r"configs/[\w./-]+\.ya?ml", job["spec"]["entrypoint"]):
            assert (REPO / config).is_file(), f"{path.name}: {config} does not exist"


class Captured(Exception):
    def __init__(self, config):
        super().__init__("captured")
        self.config = config


def _capture(*_args, **_kw):
    raise Captured(_args[0])


def entrypoint_config(tokens: list[str], monkeypatch):
    """The typed config `sare ...` builds from these arguments (the real parser and loaders; the stage's
    `run` is replaced, so nothing runs). Relative config paths resolve from the repository root, as in
    the image (/home/ray/sare is the job's working directory)."""
    import pipelines.evaluate.manifest
    import pipelines.evaluate.stores
    import pipelines.extract.pipeline
    import pipelines.train.driver
    import pipelines.tune.sweep
    from pipelines.cli import build_parser

    for module in (pipelines.evaluate.stores, pipelines.evaluate.manifest, pipelines.extract.pipeline,
                   pipelines.train.driver, pipelines.tune.sweep):
        monkeypatch.setattr(module, "run", _capture)
    monkeypatch.chdir(REPO)
    args = build_parser().parse_args(tokens[1:])
    with pytest.raises(Captured) as captured:
        args.func(args)
    return captured.value.config


def test_rayjob_entrypoints_parse_into_valid_configs(monkeypatch):
    configs = {}
    for _, job in manifests("RayJob"):
        tokens = shlex.split(job["spec"]["entrypoint"])
        configs[tokens[1]] = (entrypoint_config(tokens, monkeypatch), job)

    train, job = configs["train"]
    assert train.use_gpu is True and train.storage_path.startswith("s3://") and train.dataset.startswith("/data/")
    assert train.model.weights == "torchvision-download"  # the cluster has internet; no local weights file
    [group] = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    limits = containers(group["template"])[0]["resources"]["limits"]
    assert train.num_workers == int(limits[GPU]) * group["replicas"]
    assert train.num_workers * train.cpus_per_worker <= int(limits["cpu"]) * group["replicas"]
    assert json.loads(job["spec"]["entrypointResources"]).keys() <= start_resources(group).keys()

    extract, _ = configs["extract"]
    assert extract.use_gpu is True and extract.out.startswith("s3://") and extract.model.startswith("s3://")

    tune, job = configs["tune"]
    assert tune.storage_path.startswith("s3://") and tune.train["use_gpu"] is True
    gpus = sum(int(containers(g["template"])[0]["resources"]["limits"][GPU]) * g["replicas"]
               for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"])
    assert tune.max_concurrent_trials == gpus

    evaluation, _ = configs["eval"]
    assert [m.name for m in evaluation.models] == ["off-the-shelf", "trained"]
    assert evaluation.out_dir.startswith("s3://")


def test_gpu_limits_on_worker_groups_and_a_cpu_head():
    specs = cluster_specs()
    assert len(specs) == 5
    for where, spec in specs:
        head = spec["headGroupSpec"]
        assert head["rayStartParams"]["num-cpus"] == "0", where
        for container in containers(head["template"]):
            for section in ("limits", "requests"):
                assert GPU not in container.get("resources", {}).get(section, {}), f"{where}: GPU on the head"
        assert spec["workerGroupSpecs"], where
        for group in spec["workerGroupSpecs"]:
            [container] = containers(group["template"])
            limits = container["resources"]["limits"]
            assert int(limits.get(GPU, 0)) >= 1, f"{where} {group['groupName']}: no {GPU} limit"
            assert container["resources"]["requests"][GPU] == limits[GPU]
            assert set(start_resources(group)) & {"extract_node", "train_node"}, group["groupName"]
            assert group["template"]["spec"]["serviceAccountName"] == "sare-ray"  # S3 through IRSA


def test_one_image_everywhere_built_from_a_ray_gpu_image():
    images = {c["image"] for _, spec in cluster_specs()
              for tpl in [spec["headGroupSpec"]["template"], *(g["template"] for g in spec["workerGroupSpecs"])]
              for c in containers(tpl)}
    assert len(images) == 1, images
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE).group(1)
    assert base.startswith("rayproject/ray:") and base.endswith("-gpu")
    # The image installs the base requirements plus the gpu (faiss-gpu) and tune (Optuna) extras, read from
    # pyproject.toml itself, and never the CPU FAISS build beside the GPU one.
    assert "['optional-dependencies']['gpu']" in dockerfile and "['optional-dependencies']['tune']" in dockerfile
    assert "['optional-dependencies']['cpu']" not in dockerfile
    versions = {d["spec"]["rayVersion"] for _, d in manifests("RayCluster")}
    versions |= {d["spec"]["rayClusterSpec"]["rayVersion"] for _, d in manifests("RayJob")}
    assert versions == {base.split(":")[1].split("-")[0]}


def test_launch_knows_the_sare_commands():
    assert set(load_launch().SARE_COMMANDS) == sare_subcommands()


@pytest.mark.parametrize("argv, expected", [
    (["up", "--yes"], ["ray up ray_cluster.yaml --yes"]),
    (["down"], ["ray down ray_cluster.yaml"]),
    (["dashboard"], ["ray dashboard ray_cluster.yaml"]),
    (["status"], ["ray exec ray_cluster.yaml 'ray status'", "ray job list --address http://127.0.0.1:8265"]),
    (["--address", "http://10.0.0.5:8265", "logs", "raysubmit_1"],
     ["ray job logs --address http://10.0.0.5:8265 --follow raysubmit_1"]),
])
def test_launch_dry_run_prints_the_commands(argv, expected, capsys, monkeypatch):
    monkeypatch.delenv("RAY_DASHBOARD_ADDRESS", raising=False)
    assert load_launch().main(["--dry-run", *argv]) == 0
    assert capsys.readouterr().out.splitlines() == expected


def test_launch_submit_places_drivers_and_uploads_the_checkout(capsys, monkeypatch):
    monkeypatch.delenv("RAY_DASHBOARD_ADDRESS", raising=False)
    launch = load_launch()
    train = ["sare", "train", "--config", "configs/pitts250k_vgg16_sare_joint.yaml", "--set", "use_gpu=true"]
    cases = [
        (["submit", "--", *train], ["--entrypoint-resources", '{"train_node": 1}']),
        (["submit", "--no-wait", "--", "sare", "eval", "--store", "a=s3://b/c"], ["--entrypoint-num-gpus", "1"]),
        (["submit", "--", "sare", "extract", "--dataset", "d"], []),
        (["submit", "--driver", "gpu", "--", *train], ["--entrypoint-num-gpus", "1"]),
    ]
    for argv, placement in cases:
        assert launch.main(["--dry-run", *argv]) == 0
        [line] = capsys.readouterr().out.splitlines()
        cmd = shlex.split(line)
        assert cmd[:5] == ["ray", "job", "submit", "--address", "http://127.0.0.1:8265"]
        entrypoint = argv[argv.index("--") + 1:]
        assert cmd[cmd.index("--") + 1:] == entrypoint
        options = cmd[5:cmd.index("--")]
        runtime_env = json.loads(options[options.index("--runtime-env-json") + 1])
        assert runtime_env["working_dir"] == "." and ".venv" in runtime_env["excludes"]
        for flag in ("--entrypoint-resources", "--entrypoint-num-gpus"):
            if flag in options:
                assert options[options.index(flag):options.index(flag) + 2] == placement
        if not placement:
            assert not {"--entrypoint-resources", "--entrypoint-num-gpus"} & set(options)
        assert ("--no-wait" in options) == ("--no-wait" in argv)
    # The placements name resources ray_cluster.yaml gives its worker types.
    node_types = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())["available_node_types"]
    offered = {k for t in node_types.values() for k in t["resources"]}
    assert json.loads(launch.DRIVER_PLACEMENTS["train-node"][1]).keys() <= offered


def test_launch_scale_requests_extraction_and_training_nodes(capsys):
    assert load_launch().main(["--dry-run", "scale", "--gpus", "8", "--train-nodes", "1"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    cmd = shlex.split(line)
    assert cmd[:3] == ["ray", "exec", "ray_cluster.yaml"]
    remote = shlex.split(cmd[3])
    assert remote[:2] == ["python", "-c"]
    tree = ast.parse(remote[2])
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "request_resources")
    bundles = eval(compile(ast.Expression(call.keywords[0].value), "<bundles>", "eval"))  # our own expression
    assert bundles == [{"GPU": 1, "extract_node": 1}] * 8 + [{"train_node": 1}]


def test_launch_rejects_what_is_not_a_sare_job(capsys):
    launch = load_launch()
    for argv in (["submit", "--", "python", "train.py"], ["submit", "--", "sare", "nonsense"], ["submit"]):
        with pytest.raises(SystemExit) as exc:
            launch.main(["--dry-run", *argv])
        assert exc.value.code == 2
    assert "sare" in capsys.readouterr().err


def test_launch_runs_as_a_script():
    out = subprocess.run([sys.executable, str(CLUSTER / "launch.py"), "--dry-run", "up"], cwd="/",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ray up ray_cluster.yaml"
