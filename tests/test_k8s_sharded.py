"""deploy/kubernetes-sharded: the base with its Deployment replaced by a StatefulSet of N shards.

Checked without a cluster or the kustomize binary (neither Debian nor PyPI ships one): the
overlay is rendered here for exactly the features it uses (the base directory as a resource,
inline strategic-merge patches that delete an object or set fields of one; anything else
fails the test), then the core objects are validated against the bundled Kubernetes schemas
(kubernetes-validate, strict, offline) like the base's in tests/test_packaging.py, and the
objects against each other and against --shard's parsing.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import ConfigError
from exporter.shard import Shard, parse

ROOT = Path(__file__).resolve().parent.parent
OVERLAY = ROOT / "deploy" / "kubernetes-sharded"
MIN_K8S = "1.29.0"
CORE_KINDS = {"StatefulSet", "Service", "ConfigMap"}


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A strategic merge patch for maps of scalars and maps (no list merge keys)."""
    out = copy.deepcopy(base)
    for k, v in patch.items():
        assert not isinstance(v, list), f"list patches are not rendered here: {k}"
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def render(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(k) <= {"apiVersion", "kind", "resources", "patches"}, set(k)
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for res in k["resources"]:
        path = directory / res
        found = render(path).values() if path.is_dir() else load_docs(path)
        for obj in found:
            assert key(obj) not in objects, f"{key(obj)} twice"
            objects[key(obj)] = obj
    for p in k.get("patches", []):
        assert set(p) == {"patch"}, "only inline patches are rendered here"
        patch = yaml.safe_load(p["patch"])
        target = key(patch)
        assert target in objects, f"patch for {target}, which the resources do not define"
        if patch.get("$patch") == "delete":
            del objects[target]
        else:
            objects[target] = merge(objects[target], patch)
    return objects


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], dict[str, Any]]:
    return render(OVERLAY)


def the(rendered, kind: str) -> dict[str, Any]:
    (obj,) = [o for (k, _), o in rendered.items() if k == kind]
    return obj


def test_the_statefulset_replaces_the_deployment_and_the_rest_is_the_base(rendered):
    base = render(ROOT / "deploy" / "kubernetes")
    assert {k for k in rendered if k[0] != "StatefulSet"} == {
        k for k in base if k[0] != "Deployment"
    }
    assert not [k for k in rendered if k[0] == "Deployment"]
    assert the(rendered, "ConfigMap") == the(base, "ConfigMap")  # one shared configuration


def test_core_objects_validate_against_the_kubernetes_schemas(rendered):
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    checked = set()
    for k, obj in rendered.items():
        if obj["kind"] not in CORE_KINDS:
            assert obj["apiVersion"].startswith("monitoring.coreos.com/"), f"{k}: unchecked"
            continue
        for v in sorted({MIN_K8S, latest_version()}):
            kubernetes_validate.validate(obj, v, strict=True)  # raises on any error
        checked.add(obj["kind"])
    assert checked == CORE_KINDS
    broken = json.loads(json.dumps(the(rendered, "StatefulSet")))
    broken["spec"]["serviceNames"] = "typo"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, MIN_K8S, strict=True)


def test_the_pod_template_is_the_deployments_plus_the_shard(rendered):
    sts = the(rendered, "StatefulSet")
    dep = the(render(ROOT / "deploy" / "kubernetes"), "Deployment")
    replicas = sts["spec"]["replicas"]
    assert replicas >= 2
    pod, base_pod = copy.deepcopy(sts["spec"]["template"]), dep["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    shard_args = [a for a in container["args"] if a.startswith("--shard")]
    assert shard_args == [f"--shard=auto/{replicas}"], "N must equal replicas"
    container["args"].remove(shard_args[0])
    assert container.pop("env") == [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    # spreading the replicas over nodes is the StatefulSet's own; the rest must not drift
    assert pod["spec"].pop("topologySpreadConstraints")
    assert pod == base_pod
    assert sts["spec"]["selector"] == dep["spec"]["selector"]


def test_every_pod_name_gives_its_shard_and_an_extra_replica_is_refused(rendered):
    sts = the(rendered, "StatefulSet")
    name, replicas = sts["metadata"]["name"], sts["spec"]["replicas"]
    flag = next(a for a in sts["spec"]["template"]["spec"]["containers"][0]["args"] if "shard" in a)
    value = flag.split("=", 1)[1]
    shards = [parse(value, {"POD_NAME": f"{name}-{i}"}) for i in range(replicas)]
    assert shards == [Shard(i, replicas) for i in range(replicas)]
    with pytest.raises(ConfigError, match="must be below N="):
        parse(value, {"POD_NAME": f"{name}-{replicas}"})


def test_the_headless_service_governs_the_set_and_each_pod_is_scraped_once(rendered):
    sts, svc, sm = (
        the(rendered, "StatefulSet"),
        the(rendered, "Service"),
        the(rendered, "ServiceMonitor"),
    )
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None"
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    # exactly one Service (so one endpoint per pod) is selected by the ServiceMonitor
    selected = [
        o
        for o in rendered.values()
        if o["kind"] == "Service"
        and sm["spec"]["selector"]["matchLabels"].items() <= o["metadata"]["labels"].items()
    ]
    assert selected == [svc]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}
