"""What the deploy tests share: the compose file as ``docker-compose config`` resolves it, the
Secrets ``deploy/k8s/make-secrets.sh`` makes, and redis-server run as a manifest runs it."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

from tests.conftest import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE_SECRETS = {
    "REDIS_ADMIN_PASSWORD": "compose-admin-0123456789",
    "REDIS_INGEST_PASSWORD": "compose-ingest-0123456789",
    "REDIS_WORKER_PASSWORD": "compose-worker-0123456789",
    "REDIS_FUSION_PASSWORD": "compose-fusion-0123456789",
    "LIVENESS_DECISION_KEY": "compose-decision-key-0123456789",
    "GRAFANA_ADMIN_PASSWORD": "compose-grafana-0123456789",
}
"""What .env.example asks for, filled in."""


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package {'prometheus' if name == 'promtool' else name})")
    return path


COMPOSE_PROFILES = ("eyes",)
"""Every profile of the compose file: the opt-in services (``profiles``), which ``up`` starts only when named."""


def compose_config(tmp: Path, variables: dict[str, str],
                   profiles: tuple[str, ...] = COMPOSE_PROFILES) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` with exactly ``variables`` set (none from this shell or a ``.env``),
    the services of ``profiles`` included."""
    env_file = tmp / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in variables.items()))
    env = {k: v for k, v in os.environ.items()
           if k not in COMPOSE_SECRETS and k not in ("EYE_MODEL", "COMPOSE_PROFILES") and not k.endswith("_BIND")}
    selected = [arg for profile in profiles for arg in ("--profile", profile)]
    return subprocess.run([tool("docker-compose"), "--env-file", str(env_file), "-f", str(ROOT / "docker-compose.yml"),
                           *selected, "config"], capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="session")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The compose file validated and normalised (paths made absolute), with the secrets set and
    every profile's services included (each keeps its ``profiles``)."""
    proc = compose_config(tmp_path_factory.mktemp("compose"), COMPOSE_SECRETS)
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


def secret_docs(**env: str) -> list[dict]:
    """The Secret manifests ``make-secrets.sh`` prints, run with ``env`` added to ours."""
    tool("kubectl")
    proc = subprocess.run(["sh", str(K8S / "make-secrets.sh")], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert docs and all(d["kind"] == "Secret" for d in docs)
    return docs


def make_secrets(**env: str) -> dict[str, dict[str, str]]:
    """Secret name -> decoded data, as ``make-secrets.sh`` makes them."""
    return {d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d["data"].items()}
            for d in secret_docs(**env)}


@pytest.fixture(scope="session")
def k8s_secrets() -> dict[str, dict[str, str]]:
    return make_secrets()


def yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def manifests(*components: str) -> list[dict]:
    """Every manifest of deploy/k8s, and those the named components add, as committed."""
    files = sorted(p for folder in (K8S, *(K8S / c for c in components)) for p in folder.glob("*.yaml")
                   if p.name != "kustomization.yaml")
    return [doc for path in files for doc in yaml_docs(path)]


def by_kind(kind: str, *components: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in manifests(*components) if d["kind"] == kind}


def kustomize(base: Path, *components: str) -> list[dict]:
    """``kubectl kustomize`` of ``base``, with the named components of it added (an overlay in a
    temporary folder, since kustomize takes relative paths only)."""
    tool("kubectl")
    with tempfile.TemporaryDirectory() as tmp:
        rel = os.path.relpath(base, tmp)
        overlay = {"resources": [rel], "components": [f"{rel}/{c}" for c in components]}
        (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
        proc = subprocess.run(["kubectl", "kustomize", tmp], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def local_path(arg: str, paths: dict[str, Path]) -> str:
    """``arg`` with a container path replaced by its local counterpart (the longest mount wins)."""
    for mount in sorted(paths, key=len, reverse=True):
        if arg == mount or arg.startswith(mount + "/"):
            return str(paths[mount]) + arg[len(mount):]
    return arg


class ManifestRedis:
    """redis-server with the arguments a manifest gives it, its container paths mapped to local
    files, on a free loopback port: the deployed Redis, minus the container."""

    def __init__(self, args: list[str], paths: dict[str, Path], workdir: Path) -> None:
        assert args[0] == "redis-server", args
        self.port = free_port()
        self.paths = paths
        local = [local_path(a, paths) for a in args[1:]]
        port_option = "--tls-port" if "--tls-port" in local else "--port"
        self.args = ["redis-server", *local, port_option, str(self.port), "--bind", "127.0.0.1",
                     "--dir", str(workdir), "--save", ""]
        self.log = workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, url: str) -> str:
        """A deployment's Redis URL, pointed at this server."""
        parts = urlsplit(url)
        return urlunsplit(parts._replace(netloc=f"{parts.netloc.rpartition('@')[0]}@127.0.0.1:{self.port}"))

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._listening, timeout_s=10, every_s=0.05)

    def _listening(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def probe(self, command: str, env: dict[str, str]) -> int:
        """Exit status of a health or readiness command (``sh -c``) run against this server."""
        local = command
        for mount in self.paths:
            local = local.replace(mount + "/", f"{self.paths[mount]}/")
        local = local.replace("redis-cli", f"redis-cli -p {self.port}", 1)
        return subprocess.run(["sh", "-c", local], env={**os.environ, **env}, capture_output=True,
                              timeout=30).returncode

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def manifest_redis() -> Iterator[list[ManifestRedis]]:
    """Started ManifestRedis servers go in this list; they are stopped after the test."""
    servers: list[ManifestRedis] = []
    yield servers
    for server in servers:
        server.stop()
