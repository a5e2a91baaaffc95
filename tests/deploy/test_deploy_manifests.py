"""deploy/ stays valid: every Kubernetes manifest parses strictly into the `kubernetes` client's models (unknown
fields and missing required ones fail), the pieces reference each other correctly, probes and args match the real
server and CLI, and the Dockerfile exposes the port the manifests use. The image is built only where a Docker
daemon answers and the base image is present (no registry here)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
kubernetes = pytest.importorskip("kubernetes")
PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}
CORE_KINDS = {("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim", ("v1", "Service"): "V1Service",
              ("v1", "ConfigMap"): "V1ConfigMap", ("apps/v1", "Deployment"): "V1Deployment",
              ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler"}


def strict_problems(value, type_name: str, where: str) -> list[str]:
    """Every field the client's model does not know, or whose type is wrong, as 'path: problem'."""
    if type_name.startswith(("list[", "List[")):
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [p for i, v in enumerate(value) for p in strict_problems(v, type_name[5:-1], f"{where}[{i}]")]
    if type_name.startswith(("dict(", "Dict[")):
        inner = type_name[5:-1].split(", ", 1)[1]
        return [p for k, v in (value or {}).items() for p in strict_problems(v, inner, f"{where}.{k}")]
    if type_name in PRIMITIVES:
        ok = isinstance(value, PRIMITIVES[type_name]) and not (type_name == "int" and isinstance(value, bool))
        return [] if ok else [f"{where}: expected {type_name}, got {value!r}"]
    cls = getattr(kubernetes.client.models, type_name)
    if not isinstance(value, dict):
        return [f"{where}: expected an object ({type_name})"]
    by_json = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    problems = []
    for key, v in value.items():
        if key not in by_json:
            problems.append(f"{where}.{key}: unknown field of {type_name}")
        else:
            problems += strict_problems(v, cls.openapi_types[by_json[key]], f"{where}.{key}")
    return problems


def documents() -> dict[str, dict]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_manifest_parses_strictly(path):
    from kubernetes.client import ApiClient

    for doc in yaml.safe_load_all(path.read_text()):
        if doc["kind"] == "ServiceMonitor":
            continue  # a CRD: the client has no model (checked below)
        model = CORE_KINDS[(doc["apiVersion"], doc["kind"])]
        assert strict_problems(doc, model, doc["kind"]) == []
        obj = ApiClient()._ApiClient__deserialize(doc, model)  # required fields checked by the models' setters
        assert obj.metadata.name


def test_strict_check_catches_typos():
    doc = documents()["Deployment"]
    bad = yaml.safe_load(yaml.safe_dump(doc).replace("readinessProbe", "readynessProbe"))
    assert strict_problems(bad, "V1Deployment", "d") == [
        "d.spec.template.spec.containers[0].readynessProbe: unknown field of V1Container"]
    bad = yaml.safe_load(yaml.safe_dump(doc).replace("containerPort: 11435", "containerPort: '11435'"))
    assert strict_problems(bad, "V1Deployment", "d")[0].endswith("expected int, got '11435'")
    from kubernetes.client import ApiClient

    bad = yaml.safe_load(yaml.safe_dump(doc))
    del bad["spec"]["template"]["spec"]["containers"][0]["name"]  # required
    with pytest.raises(Exception, match="name"):
        ApiClient()._ApiClient__deserialize(bad, "V1Deployment")


def test_pieces_reference_each_other():
    docs = documents()
    dep, svc, pvc, mon, hpa = (docs[k] for k in ("Deployment", "Service", "PersistentVolumeClaim",
                                                 "ServiceMonitor", "HorizontalPodAutoscaler"))
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    container = dep["spec"]["template"]["spec"]["containers"][0]
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names
    claims = [v["persistentVolumeClaim"]["claimName"] for v in dep["spec"]["template"]["spec"]["volumes"]]
    assert claims == [pvc["metadata"]["name"]]
    mount = container["volumeMounts"][0]["mountPath"]
    assert {"name": "ATHANOR_HOME", "value": mount} in container["env"]
    assert mon["apiVersion"] == "monitoring.coreos.com/v1"
    assert mon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert [e["port"] for e in mon["spec"]["endpoints"]] == [p["name"] for p in svc["spec"]["ports"]]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": dep["metadata"]["name"]}
    for key in ("requests", "limits"):
        assert container["resources"][key]["memory"]


def test_probe_paths_and_metric_names_are_the_servers(tmp_path):
    from athanor.models.store import Store
    from athanor.serve.app import create_app

    app = create_app(store=Store(tmp_path))
    routes = {getattr(r, "path", None) for r in app.routes}
    docs = documents()
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] in routes
    assert docs["ServiceMonitor"]["spec"]["endpoints"][0]["path"] in routes
    metric = docs["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert metric in app.state.metrics.render(app.state.manager) or metric in _gauge_names(app)
    assert metric in docs["ConfigMap"]["data"]["config.yaml"]


def _gauge_names(app) -> set[str]:
    return {name for name, _, _ in app.state.manager.engine_gauges()}


def test_container_args_are_options_of_athanor_serve():
    import typer.main

    from athanor.cli import app

    container = documents()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    command = typer.main.get_command(app).commands[args[0]]
    ctx = command.make_context(args[0], list(args[1:]))  # unknown options / bad values raise here
    assert ctx.params["port"] == container["ports"][0]["containerPort"] and ctx.params["host"] == "0.0.0.0"
    with pytest.raises(Exception, match="No such option"):
        command.make_context(args[0], ["--no-such-option"])


def test_dockerfile_matches_the_manifests():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    instructions = [line.split()[0] for line in text.replace("\\\n", " ").splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    known = {"FROM", "RUN", "WORKDIR", "COPY", "ENV", "EXPOSE", "USER", "ENTRYPOINT", "CMD", "STOPSIGNAL", "ARG"}
    assert set(instructions) <= known and instructions[0] == "FROM"
    container = documents()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert re.search(rf"^EXPOSE {container['ports'][0]['containerPort']}$", text, re.MULTILINE)
    assert re.search(r"^USER (\d+)$", text, re.MULTILINE).group(1) == str(
        documents()["Deployment"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"])
    for src in re.findall(r"^COPY (\S+)", text, re.MULTILINE):
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repository"


def test_image_builds_where_a_builder_exists():
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "info"], capture_output=True, timeout=20, check=False).returncode != 0:
        pytest.skip("no Docker daemon on this machine")
    base = re.search(r"^FROM (\S+)", (ROOT / "deploy" / "Dockerfile").read_text(), re.MULTILINE).group(1)
    if subprocess.run([docker, "image", "inspect", base], capture_output=True, check=False).returncode != 0:
        pytest.skip(f"base image {base} not present and no registry access")
    r = subprocess.run([docker, "build", "-f", "deploy/Dockerfile", "-t", "athanor:test", "."], cwd=ROOT,
                       capture_output=True, text=True, timeout=1800, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
