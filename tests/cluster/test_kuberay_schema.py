"""The KubeRay manifests against the operator's own CustomResourceDefinitions (../shared/data/kuberay_crds,
KubeRay's ray.io/v1 schemas): each RayCluster / RayJob validates against its OpenAPI v3 schema, and has no
field the schema does not know (the API server would silently prune it: a typo that never takes effect)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
KINDS = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml", "RayService": "ray.io_rayservices.yaml"}


@functools.cache
def crd_schema(crds: Path, kind: str) -> dict:
    (crd,) = [d for d in yaml.load_all((crds / KINDS[kind]).read_text(), Loader=yaml.CSafeLoader) if d]
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def kuberay_objects() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(CLUSTER.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("apiVersion") == "ray.io/v1":
                found.append((f"{path.name}:{doc['kind']}:{doc['metadata']['name']}", doc))
    return found


def pruned_fields(value, schema: dict, where: str = "") -> list[str]:
    """Paths of the fields in `value` that `schema` neither lists nor allows (structural pruning)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out = []
    if isinstance(value, dict) and schema.get("type", "object") == "object":
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if properties is not None and key in properties:
                out += pruned_fields(item, properties[key], f"{where}.{key}")
            elif isinstance(extra, dict):
                out += pruned_fields(item, extra, f"{where}.{key}")
            elif properties is not None or extra is False:
                out.append(f"{where}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += pruned_fields(item, schema["items"], f"{where}[{i}]")
    return out


@pytest.fixture(scope="module")
def crds(shared_data) -> Path:
    return shared_data / "kuberay_crds"


def test_there_are_kuberay_objects_of_every_kind_we_ship():
    kinds = {doc["kind"] for _, doc in kuberay_objects()}
    assert {"RayCluster", "RayJob"} <= kinds


@pytest.mark.parametrize("name,doc", kuberay_objects(), ids=[n for n, _ in kuberay_objects()])
def test_each_object_validates_against_the_operators_schema(name, doc, crds):
    import jsonschema

    schema = crd_schema(crds, doc["kind"])
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, f"{name}: {errors[:5]}"
    assert not pruned_fields(doc, schema), f"{name}: fields the API server would prune: {pruned_fields(doc, schema)}"


def test_the_checks_catch_a_typo_and_a_wrong_type(crds):
    """The same checks on a broken copy: a misspelt field is reported as pruned, a string count as invalid."""
    import copy

    import jsonschema

    (_, job) = next((n, d) for n, d in kuberay_objects() if d["kind"] == "RayJob")
    broken = copy.deepcopy(job)
    broken["spec"]["entrypointt"] = broken["spec"].pop("entrypoint")
    broken["spec"]["backoffLimit"] = "three"
    schema = crd_schema(crds, "RayJob")
    assert ".spec.entrypointt" in pruned_fields(broken, schema)
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(broken))
    assert any("backoffLimit" in ".".join(map(str, e.absolute_path)) for e in errors)
