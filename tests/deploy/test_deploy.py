"""Offline checks of deploy/, docker-compose.yml and the Dockerfile: no daemon, no cluster.

Compose is checked by ``docker-compose config`` (Debian's docker-compose), Prometheus files
and the dashboard's PromQL by ``promtool``, k8s manifests by their cross-references, by
``kubectl kustomize`` and, when ``kubernetes-validate`` is installed, by the Kubernetes schemas.
What they let onto the network, and whether their Redis wants a password: test_security.py.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client import REGISTRY

from deploy.grafana.queries import DASHBOARD, load, panel_queries
from liveness import __version__
from liveness.app.cli import COMMANDS, build_parser
from liveness.config import load_settings
from liveness.contract import EyeSample, FaceCrop, Keys
from liveness.defaults import EYE_MODEL, METRICS_PORT, eye_model_path
from tests.conftest import ROLE_USERS
from tests.deploy.conftest import (COMPOSE_SECRETS, K8S, ROOT, by_kind, compose_config, kustomize, manifests,
                                   secret_docs, tool)

DEPLOY = ROOT / "deploy"
CONFIG_IN_CONTAINER = "/etc/liveness/config.yaml"
LIVENESS_SERVICES = ("ingest", "face-worker", "eye-worker", "fusion")
OPT_IN = {"eye-worker": "eyes"}
"""Services a default deployment starts none of, and the compose profile or kustomize component
that adds each: the eye model is for research use only (models/artifacts/eye.md)."""
EYE_MODEL_IN_POD = "/etc/liveness-eye/eye.onnx"
WORKER_STREAMS = {"face-worker": (FaceCrop, "face-workers"), "eye-worker": (EyeSample, "eye-workers")}
METRIC_MODULES = ("liveness.ingest.metrics", "liveness.workers.metrics", "liveness.fusion.metrics",
                  "liveness.streams", "liveness.metrics", "liveness.supervisor")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
"""Sample names a metric family exposes, by type; other types expose their own name."""

DASHBOARD_METRICS = {
    "liveness_decisions_total", "liveness_apcer_ratio", "liveness_bpcer_ratio", "liveness_acer_ratio",
    "liveness_time_to_decision_seconds_bucket", "liveness_pipeline_latency_seconds_bucket",
    "liveness_stage_latency_seconds_bucket", "liveness_ingest_stage_seconds_bucket",
    "liveness_consumer_lag", "liveness_consumer_pending", "liveness_scored_total", "liveness_batch_size_bucket",
    "liveness_camera_up", "liveness_camera_fps", "liveness_camera_reconnects_total", "liveness_frames_shed_total",
    "liveness_messages_dead_lettered_total", "liveness_forged_decisions",
    "liveness_frames_corrupt_total",
}
"""What the dashboard must show (issue 6, deploy/)."""


# --- docker-compose -----------------------------------------------------------------------

def volumes(service: dict) -> dict[str, str]:
    """Container path -> volume name or host path, for both volume syntaxes."""
    out = {}
    for v in service.get("volumes", []):
        source, target = v.split(":")[:2] if isinstance(v, str) else (v["source"], v["target"])
        out[target] = source
    return out


def mounts(service: dict) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts."""
    return {target: Path(source) for target, source in volumes(service).items() if source.startswith("/")}


def test_compose_runs_every_service(compose: dict) -> None:
    services = compose["services"]
    assert set(services) >= {"redis", *LIVENESS_SERVICES, "prometheus", "grafana", "mediamtx", "demo-source"}
    for name in LIVENESS_SERVICES:
        svc = services[name]
        assert svc["image"] == services["ingest"]["image"], f"{name}: every liveness service runs one image"
        assert svc["command"][0] == name and svc["command"][0] in COMMANDS, f"{name}: {svc['command']}"
        assert svc["command"][svc["command"].index("--config") + 1] == CONFIG_IN_CONTAINER
    assert services["face-worker"]["deploy"]["replicas"] >= 2, "face-worker: scaled with deploy.replicas"
    assert services["eye-worker"]["deploy"]["replicas"] >= 1


def test_compose_starts_no_eye_worker_unless_asked(compose: dict) -> None:
    """``up`` starts the services without ``profiles``; ``--profile eyes`` adds the eye worker."""
    opt_in = {name: svc["profiles"] for name, svc in compose["services"].items() if svc.get("profiles")}
    assert opt_in == {name: [profile] for name, profile in OPT_IN.items()}


def test_compose_eye_worker_mounts_its_model(compose: dict, tmp_path: Path) -> None:
    """The image has no eye model: the eye worker mounts the checkout's, or the one EYE_MODEL names."""
    svc = compose["services"]["eye-worker"]
    settings = load_settings(mounts(svc)[CONFIG_IN_CONTAINER], environ=svc["environment"])
    model = settings.eye_worker.model
    assert model and model != CONFIG_IN_CONTAINER
    assert mounts(svc)[model] == ROOT / "models" / "artifacts" / EYE_MODEL
    assert eye_model_path(str(mounts(svc)[model])).is_file()
    mine = tmp_path / "mine.onnx"
    proc = compose_config(tmp_path, {**COMPOSE_SECRETS, "EYE_MODEL": str(mine)})
    assert proc.returncode == 0, proc.stderr
    assert mounts(yaml.safe_load(proc.stdout)["services"]["eye-worker"])[model] == mine


def test_compose_redis_persists(compose: dict) -> None:
    redis_svc = compose["services"]["redis"]
    command = " ".join(redis_svc["command"])
    assert "--appendonly yes" in command
    assert volumes(redis_svc).get("/data") in compose["volumes"], "redis: /data on a named volume, or the AOF dies"


@pytest.mark.parametrize("name", LIVENESS_SERVICES)
def test_compose_config_validates(compose: dict, name: str) -> None:
    services = compose["services"]
    svc = services[name]
    environ = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
    settings = load_settings(mounts(svc)[CONFIG_IN_CONTAINER], environ=environ)
    url = urlsplit(settings.redis.url)
    assert url.hostname in services, settings.redis.url
    user = ROLE_USERS[name]
    assert (url.username, url.password) == (user, COMPOSE_SECRETS[f"REDIS_{user.upper()}_PASSWORD"])
    key = settings.fusion.decision_key
    assert key == (COMPOSE_SECRETS["LIVENESS_DECISION_KEY"] if name == "fusion" else None), "fusion alone signs"
    assert settings.metrics.host == "0.0.0.0", "Prometheus scrapes the containers over the compose network"
    assert settings.cameras, "the compose config has a camera"
    for cam in settings.cameras:
        if isinstance(cam.source, str) and cam.source.startswith("rtsp://"):
            assert urlsplit(cam.source).hostname in services, f"camera {cam.id}: {cam.source}"
    assert str(settings.metrics.port) in {str(p) for p in svc["expose"]}


def test_compose_grafana_home_dashboard(compose: dict) -> None:
    grafana = compose["services"]["grafana"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    binds = mounts(grafana)
    on_host = [src / Path(home).relative_to(dst) for dst, src in binds.items() if Path(home).is_relative_to(dst)]
    assert on_host == [DASHBOARD], f"{home} is not deploy/grafana/dashboards/liveness.json"
    assert binds["/etc/grafana/provisioning"] == DEPLOY / "grafana" / "provisioning"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/liveness.yml").read_text())
    assert [p["options"]["path"] for p in provider["providers"]] == [str(Path(home).parent)]


def test_compose_prometheus_scrapes_every_liveness_service(compose: dict) -> None:
    prometheus = compose["services"]["prometheus"]
    config_file = mounts(prometheus)["/etc/prometheus/prometheus.yml"]
    assert config_file == DEPLOY / "prometheus" / "prometheus.yml"
    scraped = {}
    for job in yaml.safe_load(config_file.read_text())["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            scraped.update({name: sd["port"] for name in sd["names"]})
    assert scraped == {name: METRICS_PORT for name in LIVENESS_SERVICES}
    assert set(scraped) <= set(compose["services"])


# --- Prometheus and the dashboard ------------------------------------------------------

@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-local.yml"])
def test_prometheus_config_is_valid(name: str) -> None:
    proc = subprocess.run([tool("promtool"), "check", "config", str(DEPLOY / "prometheus" / name)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_local_discovers_the_targets_run_writes() -> None:
    """No guessed ports: the file_sd files liveness run and liveness targets write (tests/e2e/test_targets.py)."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-local.yml").read_text())
    (job,) = config["scrape_configs"]
    assert set(job) == {"job_name", "file_sd_configs"}, "no static targets"
    (sd,) = job["file_sd_configs"]
    assert sd["files"] == ["targets/*.json"]
    ignored = (DEPLOY / "prometheus" / "targets" / ".gitignore").read_text().splitlines()
    assert "*" in ignored, "what run writes there stays out of the repository"


def exposed_metric_names() -> set[str]:
    """Every sample name the services' metric definitions expose."""
    for module in METRIC_MODULES:
        importlib.import_module(module)
    names = set()
    for family in REGISTRY.collect():
        names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
    return names


def promql_metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return set(re.findall(r"\bliveness_[A-Za-z0-9_]+", without_strings))


def test_dashboard_panels_have_promql() -> None:
    dashboard = load()
    for panel in dashboard["panels"]:
        exprs = [t.get("expr", "").strip() for t in panel.get("targets", [])]
        assert exprs and all(exprs), f"panel {panel.get('title')!r} has no PromQL target"
        assert promql_metric_names(" ".join(exprs)), f"panel {panel['title']!r} queries no liveness metric"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"


def test_dashboard_metrics_exist_in_code() -> None:
    exposed = exposed_metric_names()
    used = set().union(*(promql_metric_names(expr) for _, expr in panel_queries()))
    assert used - exposed == set(), "the dashboard queries metrics no service defines"
    assert DASHBOARD_METRICS - used == set(), "the dashboard misses metrics it must show"


def test_dashboard_camera_variable() -> None:
    dashboard = load()
    (camera,) = [v for v in dashboard["templating"]["list"] if v["name"] == "camera"]
    assert camera["query"]["query"] == "label_values(liveness_camera_up, camera)"
    assert camera["multi"] and camera["includeAll"]
    camera_panels = [t["expr"] for p in dashboard["panels"] for t in p["targets"] if "camera" in t["expr"]]
    assert camera_panels and all('camera=~"$camera"' in e for e in camera_panels), "per-camera panels follow $camera"
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in datasource["datasources"]}
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} <= uids


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    """promtool parses every query as a recording rule: a syntax error fails here, offline."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{i}", "expr": expr} for i, (_, expr) in enumerate(panel_queries())]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    proc = subprocess.run([tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_panel_queries_fill_variables() -> None:
    queries = panel_queries()
    assert len(queries) >= len(load()["panels"])
    assert not [q for _, q in queries if "$" in q]


# --- Kubernetes ----------------------------------------------------------------------------

def test_manifests_parse_and_are_named() -> None:
    docs = manifests()
    assert docs
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), doc


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def names(docs: list[dict]) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in docs}


def test_kustomize_builds_the_manifests() -> None:
    built = kustomize(K8S)
    assert names(built) == names(manifests())
    assert all(d["metadata"].get("namespace") == "liveness" for d in built if d["kind"] != "Namespace")


def ingest_env(docs: list[dict]) -> dict[str, str]:
    (ingest,) = [d for d in docs if (d["kind"], d["metadata"]["name"]) == ("Deployment", "ingest")]
    return {e["name"]: e.get("value") for e in ingest["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_kustomize_eyes_component_adds_the_eye_path() -> None:
    """By default no eye worker and no eye windows; the component adds the pool, KEDA's scaling of
    it, and ingest's eye windows, and composes with tls."""
    default = kustomize(K8S)
    assert not {("Deployment", "eye-worker"), ("ScaledObject", "eye-worker")} & names(default)
    assert load_settings(environ={k: v for k, v in ingest_env(default).items() if v}).ingest.eyes is False
    component = yaml.safe_load((K8S / "eyes" / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    assert set(component["resources"]) == {p.name for p in (K8S / "eyes").glob("*.yaml")} - {"kustomization.yaml"}
    built = kustomize(K8S, "eyes")
    assert names(built) - names(default) == {("Deployment", "eye-worker"), ("ScaledObject", "eye-worker")}
    assert names(built) == names(manifests("eyes"))
    env = ingest_env(built)
    assert load_settings(environ={k: v for k, v in env.items() if v}).ingest.eyes is True
    with_tls = {d["metadata"]["name"]: d for d in kustomize(K8S, "eyes", "tls") if d["kind"] == "Deployment"}
    eye_env = {e["name"] for e in with_tls["eye-worker"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "LIVENESS_REDIS__SSL_CA_CERTS" in eye_env, "tls reaches the eye worker too"


@pytest.mark.parametrize("name", LIVENESS_SERVICES)
def test_deployment(name: str, k8s_secrets: dict[str, dict[str, str]]) -> None:
    assert (name in by_kind("Deployment")) == (name not in OPT_IN), "the default deploys no eye worker"
    deployment = by_kind("Deployment", *OPT_IN.values())[name]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] != 0
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(METRICS_PORT)
    (container,) = pod["spec"]["containers"]
    assert container["image"]
    assert container["command"][:2] == ["liveness", name] and name in COMMANDS
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{name}: resources.{kind}"
    config_path = container["command"][container["command"].index("--config") + 1]
    mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    config_volume = next(n for n, p in mounted.items() if config_path.startswith(p + "/"))
    assert volumes[config_volume]["configMap"]["name"] in by_kind("ConfigMap")
    if name == "eye-worker":  # not in the image: a ConfigMap the operator makes (eyes/kustomization.yaml)
        model_volume = next(n for n, p in mounted.items() if EYE_MODEL_IN_POD.startswith(p + "/"))
        assert volumes[model_volume]["configMap"]["name"] == "liveness-eye-model"
        assert "liveness-eye-model" in (K8S / "eyes" / "kustomization.yaml").read_text()
    for env in container["env"]:
        if "valueFrom" in env:
            ref = env["valueFrom"]["secretKeyRef"]
            assert ref["key"] in k8s_secrets[ref["name"]], f"{name}: env {env['name']}"
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    values = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert values == ({"LIVENESS_EYE_WORKER__MODEL": EYE_MODEL_IN_POD} if name == "eye-worker" else {})
    assert secrets["LIVENESS_REDIS__URL"] == f"liveness-redis-{ROLE_USERS[name]}", "its role's own Redis user"
    assert ("LIVENESS_FUSION__DECISION_KEY" in secrets) == (name == "fusion"), "fusion alone signs decisions"
    # the probes ask the pod's own heartbeats: alive while they beat, ready while they say ready
    for kind in ("liveness", "readiness"):
        probe = container[f"{kind}Probe"]
        command = probe["exec"]["command"]
        args = build_parser().parse_args(command[1:])
        assert command[0] == "liveness" and (args.command, args.self, args.config) == ("status", "", config_path)
        assert args.ready == (kind == "readiness"), f"{name}: {kind}Probe"
        assert probe["timeoutSeconds"] >= 5, "a Python command starts in seconds on a busy node"


def test_configmap_config_validates(tmp_path: Path, k8s_secrets: dict[str, dict[str, str]]) -> None:
    (configmap,) = by_kind("ConfigMap").values()
    path = tmp_path / "config.yaml"
    path.write_text(configmap["data"]["config.yaml"], encoding="utf-8")
    secret = k8s_secrets["liveness-redis-fusion"]
    settings = load_settings(path, environ={"LIVENESS_REDIS__URL": secret["url"]})
    assert settings.redis.url == secret["url"] and settings.cameras
    url = urlsplit(secret["url"])
    assert f"{url.hostname}:{url.port}" == secret["address"]
    assert (url.username, url.password) == (secret["username"], secret["password"])
    assert url.hostname in by_kind("Service"), "the URL names the redis Service"
    assert settings.metrics.host == "0.0.0.0", "Prometheus scrapes the pods from elsewhere"


def test_services_select_pods() -> None:
    workloads = [d for d in manifests(*OPT_IN.values()) if d["kind"] in ("Deployment", "StatefulSet")]
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in workloads]
    for name, service in by_kind("Service").items():
        selector = service["spec"]["selector"].items()
        assert any(selector <= labels.items() for labels in pod_labels), f"service {name} selects no pod"


@pytest.mark.parametrize("name", WORKER_STREAMS)
def test_scaled_object_scales_on_its_group(name: str) -> None:
    message, role = WORKER_STREAMS[name]
    keys = Keys()
    assert (name in by_kind("ScaledObject")) == (name not in OPT_IN), "KEDA keeps no idle eye worker by default"
    scaled = by_kind("ScaledObject", *OPT_IN.values())[name]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = by_kind("Deployment", *OPT_IN.values())[scaled["spec"]["scaleTargetRef"]["name"]]
    assert target["metadata"]["name"] == name
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "redis-streams"
    assert meta["stream"] == keys.stream(message)
    assert meta["consumerGroup"] == keys.group(role)
    assert int(meta.get("lagCount") or meta["pendingEntriesCount"]) > 0
    env = {e["name"] for c in target["spec"]["template"]["spec"]["containers"] for e in c["env"]}
    assert meta.get("address") or meta["addressFromEnv"] in env


def test_manifests_match_kubernetes_schemas() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in manifests() + kustomize(K8S, "eyes", "tls") + secret_docs():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: no schema bundled; checked above and in test_security.py
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)



# --- image -------------------------------------------------------------------------------------

def test_dockerfile_runs_liveness_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    final_stage = lines[max(i for i, ln in enumerate(lines) if ln.startswith("FROM "))]
    assert final_stage.startswith("FROM python:3.11-slim")
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["liveness"]' in lines
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {"models", "liveness", "pyproject.toml"} & set(ignored)


def test_wheel_ships_the_models(tmp_path: Path) -> None:
    """What the image installs: one ``liveness`` namespace, the models inside it as package data,
    each under a licence that allows commercial use: not the eye model (NUAA, research use; opt-in).

    Built from the image's build context (``.dockerignore`` applied): setuptools would also pack
    whatever a stale ``build/`` of the checkout holds.
    """
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = [ln.strip().removeprefix("**/") for ln in lines if ln.strip() and not ln.startswith("#")]
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*ignored))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("liveness-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {n.split("/")[0] for n in names} == {"liveness", f"liveness-{__version__}.dist-info"}
    for package in ("app", "ingest", "workers", "fusion", "models"):
        assert f"liveness/{package}/__init__.py" in names
    committed = {f"liveness/models/artifacts/{p.name}" for p in (ROOT / "models" / "artifacts").glob("*.onnx")}
    eye = f"liveness/models/artifacts/{EYE_MODEL}"
    assert eye in committed, "the checkout keeps it, for development and the tests"
    assert committed - {eye} <= names and eye not in names
    assert {n for n in names if n.endswith(".onnx")} == committed - {eye}
