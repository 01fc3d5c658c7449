"""What the shipped deployments open to the network, and that nothing reaches their Redis without
a password: the compose file, the Kubernetes manifests with the Secrets make-secrets.sh makes,
``liveness run``'s private Redis, and the services themselves logging in against a real Redis:
each as its role's user of deploy/redis/users-acl.sh, which reaches only its own keys and
commands, and with a wrong password."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError
from redis.retry import Retry

from liveness.app.localredis import PrivateRedis
from liveness.app.run import effective_settings
from liveness.config import RedisSettings, Settings
from liveness.contract import Decision, Keys
from liveness.metrics import serve
from liveness.redisconn import connect
from tests.conftest import REDIS_URL, ROLE_USERS, free_port, liveness_cmd, make_certificates, wait_for
from tests.deploy.conftest import (COMPOSE_SECRETS, ROOT, ManifestRedis, by_kind, compose_config, kustomize,
                                   local_path, make_secrets, manifests)
from tests.fixtures import FAULT_CLIPS, Services, drained, services_config, wait_state

LIVENESS_SERVICES = ("ingest", "face-worker", "eye-worker", "fusion")
BEYOND_THE_LIST = (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("ACL", "LIST"),
                   ("CLIENT", "LIST"), ("SELECT", "1"), ("EVAL", "return 1", "0"), ("SET", "liveness:x", "1"),
                   ("DEL", "liveness:x"))
"""Commands the services never run: their Redis users must be refused each one."""

OTHERS_WRITES = {
    "ingest": (("XADD", "liveness:decisions", "*", "verdict", "live"), ("XADD", "liveness:face-scores", "*", "a", "1"),
               ("HSET", "liveness:track:t", "verdict", "live"), ("XTRIM", "liveness:decisions", "MAXLEN", "0"),
               ("XREADGROUP", "GROUP", "g", "c", "STREAMS", "liveness:faces", ">")),
    "worker": (("XADD", "liveness:decisions", "*", "verdict", "live"), ("XADD", "liveness:faces", "*", "a", "1"),
               ("HSET", "liveness:track:t", "verdict", "live"), ("XTRIM", "liveness:face-scores", "MAXLEN", "0")),
    "fusion": (("XADD", "liveness:faces", "*", "a", "1"), ("XADD", "liveness:face-scores", "*", "a", "1"),
               ("XTRIM", "liveness:decisions", "MAXLEN", "0")),
    "keda": (("XADD", "liveness:decisions", "*", "verdict", "live"), ("XADD", "liveness:faces", "*", "a", "1"),
             ("XTRIM", "liveness:faces", "MAXLEN", "0"), ("HGETALL", "liveness:track:t")),
}
"""What each role must not do: only fusion writes decisions and track state (docs/operations.md, "Trust")."""

OWN_WRITE = {"ingest": "liveness:faces", "worker": "liveness:face-scores", "fusion": "liveness:decisions"}
"""A stream each service user adds to."""


def refused_beyond_the_list(client: redis.Redis, user: str) -> None:
    """``user`` may run its own commands on its own keys, and nothing beyond."""
    for command in BEYOND_THE_LIST + OTHERS_WRITES[user]:
        with pytest.raises(NoPermissionError):
            client.execute_command(*command)
    with pytest.raises(NoPermissionError):
        client.xadd("other-app:stream", {"a": 1})
    if user in OWN_WRITE:
        assert client.xadd(OWN_WRITE[user], {"a": 1}), "its own keys are allowed"
    else:
        assert client.xlen("liveness:faces") >= 0, "it reads the lengths"


def once(**kwargs: object) -> redis.Redis:
    """A client that tries once: redis-py retries refused logins by default, with backoff."""
    return redis.Redis(retry=Retry(NoBackoff(), 0), **kwargs)  # type: ignore[arg-type]


def anonymous_refused(port: int, **ssl: object) -> None:
    with pytest.raises(redis.AuthenticationError):
        once(port=port, **ssl).ping()
    with pytest.raises(redis.AuthenticationError):
        once(port=port, username="default", password="liveness", **ssl).ping()


# --- docker-compose -------------------------------------------------------------------------

@pytest.mark.parametrize("missing", COMPOSE_SECRETS)
def test_compose_without_a_secret_is_refused_naming_it(tmp_path: Path, missing: str) -> None:
    proc = compose_config(tmp_path, {k: v for k, v in COMPOSE_SECRETS.items() if k != missing})
    assert proc.returncode != 0
    assert f"set {missing} (in .env, see .env.example)" in proc.stderr, proc.stderr


def test_env_example_holds_no_password_and_env_stays_private(tmp_path: Path) -> None:
    lines = [ln for ln in (ROOT / ".env.example").read_text().splitlines() if ln and not ln.startswith("#")]
    variables = dict(ln.split("=", 1) for ln in lines)
    assert set(variables) == set(COMPOSE_SECRETS) and not any(variables.values())
    assert compose_config(tmp_path, variables).returncode != 0, "the example as it is starts nothing"
    assert subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT).returncode == 0, ".env is ignored by git"
    assert ".env" in (ROOT / ".dockerignore").read_text().split(), ".env stays out of the image"


def published(service: dict) -> list[tuple[str, str]]:
    """(host address, host port) of each published port, for both port syntaxes."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip", "0.0.0.0"), str(port["published"])))
        else:
            parts = port.split("/")[0].split(":")
            out.append((parts[0], parts[1]) if len(parts) == 3 else ("0.0.0.0", parts[0]))
    return out


def test_compose_publishes_on_loopback_only(compose: dict) -> None:
    ports = {name: published(svc) for name, svc in compose["services"].items()}
    assert {p for ps in ports.values() for p in ps} == {("127.0.0.1", "3000"), ("127.0.0.1", "9090"),
                                                          ("127.0.0.1", "8554")}
    assert not ports["redis"], "Redis is not published"


def test_compose_opens_grafana_only_when_asked(tmp_path: Path) -> None:
    proc = compose_config(tmp_path, {**COMPOSE_SECRETS, "GRAFANA_BIND": "0.0.0.0"})
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    assert published(services["grafana"]) == [("0.0.0.0", "3000")]
    assert published(services["prometheus"]) == [("127.0.0.1", "9090")], "Prometheus has no login: loopback only"


def test_compose_grafana_wants_a_login(compose: dict) -> None:
    env = compose["services"]["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == COMPOSE_SECRETS["GRAFANA_ADMIN_PASSWORD"]


def compose_redis(compose: dict, workdir: Path) -> tuple[ManifestRedis, dict[str, str]]:
    """The compose Redis as its command runs it: users.acl written by users-acl.sh from the
    service's environment, then redis-server through the image's entrypoint."""
    svc = compose["services"]["redis"]
    sh, flag, script = svc["command"]
    assert (sh, flag) == ("sh", "-c")
    steps = [shlex.split(step) for step in script.split(" && ")]
    (write,) = [s for s in steps if s[:1] == ["sh"] and s[1].endswith("/users-acl.sh")]
    (start,) = [s for s in steps if s[0] == "exec"]
    assert start[1] == "docker-entrypoint.sh", "the image's entrypoint starts Redis as user redis"
    binds = {}
    for volume in svc["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("/"):
            binds[target] = Path(source)
    acl = write[write.index(">") + 1]
    paths = {**binds, acl: workdir / "users.acl"}
    env = {k: str(v) for k, v in svc["environment"].items()}
    with (workdir / "users.acl").open("w") as out:
        subprocess.run(["sh", local_path(write[1], paths)], env={"PATH": os.environ["PATH"], **env}, stdout=out,
                       check=True, timeout=30)
    return ManifestRedis(start[2:], paths, workdir), env


def test_compose_redis_lets_in_only_its_users(compose: dict, tmp_path: Path, manifest_redis: list) -> None:
    server, env = compose_redis(compose, tmp_path)
    manifest_redis.append(server)
    server.start()
    anonymous_refused(server.port)
    for name in LIVENESS_SERVICES:
        url = compose["services"][name]["environment"]["LIVENESS_REDIS__URL"]
        client = redis.Redis.from_url(server.url(url))
        assert client.ping()
        refused_beyond_the_list(client, ROLE_USERS[name])
    admin = redis.Redis(port=server.port, username="admin", password=COMPOSE_SECRETS["REDIS_ADMIN_PASSWORD"])
    assert admin.config_get("appendonly") == {"appendonly": "yes"}
    health = compose["services"]["redis"]["healthcheck"]["test"]
    assert health[0] == "CMD-SHELL"
    command = health[1].replace("$$", "$")
    assert server.probe(command, env) == 0
    assert server.probe(command, {**env, "REDIS_ADMIN_PASSWORD": "wrong-password-0123456789"}) != 0


# --- Kubernetes -----------------------------------------------------------------------------

def selects(selector: dict, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions) selects ``labels``."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) \
                or (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def pod_labels(name: str) -> dict[str, str]:
    """The pod labels of a workload of the manifests, those of the opt-in eye path too."""
    workloads = {**by_kind("Deployment", "eyes"), **by_kind("StatefulSet")}
    return workloads[name]["spec"]["template"]["metadata"]["labels"]


def redis_containers(docs: list[dict]) -> list[tuple[dict, dict]]:
    """(pod spec, container) of every Redis the manifests run."""
    return [(d["spec"]["template"]["spec"], c) for d in docs if d["kind"] in ("Deployment", "StatefulSet")
            for c in d["spec"]["template"]["spec"]["containers"] if c["image"].startswith("redis")]


def k8s_redis(pod: dict, container: dict, secrets: dict[str, dict[str, str]], workdir: Path) -> ManifestRedis:
    """The manifest's Redis with its Secret volumes written out as files; other volumes empty."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    paths = {}
    for mount in container["volumeMounts"]:
        folder = workdir / mount["name"]
        folder.mkdir()
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret:
            for key, value in secrets[secret["secretName"]].items():
                (folder / key).write_text(value)
        paths[mount["mountPath"]] = folder
    return ManifestRedis(container["args"], paths, workdir)


def container_env(container: dict, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    out = {}
    for env in container.get("env", []):
        if "value" in env:
            out[env["name"]] = env["value"]
        else:
            ref = env["valueFrom"]["secretKeyRef"]
            out[env["name"]] = secrets[ref["name"]][ref["key"]]
    return out


def test_make_secrets_makes_new_passwords_or_takes_given_ones() -> None:
    first, second = make_secrets(), make_secrets()
    made = [first[f"liveness-redis-{user}"]["password"] for user in ("ingest", "worker", "fusion", "keda")]
    made.append(first["liveness-decisions"]["key"])
    assert len(set(made)) == len(made) and all(len(p) >= 32 for p in made), "a secret of its own for each role"
    assert first["liveness-redis-fusion"]["password"] != second["liveness-redis-fusion"]["password"]
    given = make_secrets(REDIS_INGEST_PASSWORD="given-ingest-0123456789", REDIS_ADMIN_PASSWORD="given-admin-0123456789",
                         LIVENESS_DECISION_KEY="given-key-0123456789")
    assert given["liveness-redis-ingest"]["url"] == "redis://ingest:given-ingest-0123456789@redis:6379/0"
    assert ">given-admin-0123456789 " in given["redis-users"]["users.acl"]
    assert given["liveness-decisions"]["key"] == "given-key-0123456789"
    bad = subprocess.run(["sh", str(ROOT / "deploy/k8s/make-secrets.sh")], capture_output=True, text=True,
                         env={**os.environ, "REDIS_WORKER_PASSWORD": "has@an-at-sign-0123456789"})
    assert bad.returncode != 0 and "REDIS_WORKER_PASSWORD may hold only" in bad.stderr


def test_no_redis_in_the_manifests_answers_without_a_password(k8s_secrets: dict, tmp_path: Path,
                                                              manifest_redis: list) -> None:
    found = redis_containers(manifests())
    assert found, "the manifests run a Redis"
    for i, (pod, container) in enumerate(found):
        args = container["args"]
        assert "--aclfile" in args and "--requirepass" not in args, args
        acl_path = args[args.index("--aclfile") + 1]
        mount = next(m for m in container["volumeMounts"] if acl_path.startswith(m["mountPath"] + "/"))
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        users = k8s_secrets[volume["secret"]["secretName"]][acl_path.rsplit("/", 1)[1]]
        assert "user default off resetpass ~* &* +@all" in users.splitlines() and "nopass" not in users
        (tmp_path / str(i)).mkdir()
        server = k8s_redis(pod, container, k8s_secrets, tmp_path / str(i))
        manifest_redis.append(server)
        server.start()
        anonymous_refused(server.port)
        for user in ("ingest", "worker", "fusion", "keda"):
            client = redis.Redis.from_url(server.url(k8s_secrets[f"liveness-redis-{user}"]["url"]))
            assert client.ping()
            refused_beyond_the_list(client, user)
        probe = container["readinessProbe"]["exec"]["command"]
        assert probe[:2] == ["sh", "-c"]
        env = container_env(container, k8s_secrets)
        assert server.probe(probe[2], env) == 0, "the readiness probe logs in"
        assert server.probe(probe[2], {**env, "REDISCLI_AUTH": "wrong-password-0123456789"}) != 0
    for service in by_kind("Service").values():
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", "nothing is exposed outside the cluster"


def test_network_policy_admits_only_liveness_pods_and_keda_to_redis() -> None:
    redis_labels = pod_labels("redis")
    (policy,) = [p for p in by_kind("NetworkPolicy").values() if selects(p["spec"]["podSelector"], redis_labels)]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    pods = [peer["podSelector"] for peer in rule["from"] if set(peer) == {"podSelector"}]
    namespaces = [peer["namespaceSelector"] for peer in rule["from"] if set(peer) == {"namespaceSelector"}]
    assert len(pods) + len(namespaces) == len(rule["from"])
    for name in LIVENESS_SERVICES:
        assert any(selects(s, pod_labels(name)) for s in pods), f"{name} may reach Redis"
    other = {"app.kubernetes.io/name": "debug-shell", "app.kubernetes.io/part-of": "liveness"}
    assert not any(selects(s, other) for s in pods), "no other pod of the namespace may"
    assert not any(selects(s, redis_labels) for s in pods)
    assert all(selects(s, {"kubernetes.io/metadata.name": "keda"}) for s in namespaces) and namespaces
    assert not any(selects(s, {"kubernetes.io/metadata.name": "default"}) for s in namespaces)


def test_keda_logs_in_as_its_read_only_user(k8s_secrets: dict) -> None:
    auths = by_kind("TriggerAuthentication")
    secret = k8s_secrets["liveness-redis-keda"]
    for scaled in by_kind("ScaledObject", "eyes").values():
        for trigger in scaled["spec"]["triggers"]:
            refs = {r["parameter"]: secret[r["key"]] for r in auths[trigger["authenticationRef"]["name"]]["spec"]
                    ["secretTargetRef"] if r["name"] == "liveness-redis-keda"}
            assert refs == {"username": "keda", "password": secret["password"], "tls": "disable"}


def test_tls_component_serves_rediss_with_a_ca_from_a_secret(tmp_path: Path, manifest_redis: list) -> None:
    built = kustomize(ROOT / "deploy" / "k8s", "tls")
    secrets = make_secrets(REDIS_TLS="1")
    assert all(secrets[f"liveness-redis-{user}"]["url"].startswith("rediss://")
               and secrets[f"liveness-redis-{user}"]["tls"] == "enable" for user in ("ingest", "worker", "fusion", "keda"))
    (tmp_path / "certs").mkdir()
    ca = make_certificates(tmp_path / "certs")
    secrets["redis-tls"] = {"ca.crt": ca.read_text(), "tls.crt": (tmp_path / "certs/server.crt").read_text(),
                            "tls.key": (tmp_path / "certs/server.key").read_text()}
    ((pod, container),) = redis_containers(built)
    assert container["args"][container["args"].index("--port") + 1] == "0", "no plain-text port"
    (tmp_path / "redis").mkdir()
    server = k8s_redis(pod, container, secrets, tmp_path / "redis")
    manifest_redis.append(server)
    server.start()
    with pytest.raises(redis.ConnectionError):
        once(port=server.port, username="fusion", password=secrets["liveness-redis-fusion"]["password"],
             socket_timeout=2).ping()
    anonymous_refused(server.port, ssl=True, ssl_ca_certs=str(ca))
    assert server.probe(container["readinessProbe"]["exec"]["command"][2], container_env(container, secrets)) == 0
    for doc in built:
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        (svc,) = pod["containers"]
        ca_path = container_env(svc, secrets)["LIVENESS_REDIS__SSL_CA_CERTS"]
        mount = next(m for m in svc["volumeMounts"] if ca_path.startswith(m["mountPath"] + "/"))
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert volume["secret"]["secretName"] == "redis-tls", doc["metadata"]["name"]
        url = server.url(container_env(svc, secrets)["LIVENESS_REDIS__URL"])
        assert connect(RedisSettings(url=url, ssl_ca_certs=str(ca))).ping(), doc["metadata"]["name"]
    (auth,) = [d for d in built if d["kind"] == "TriggerAuthentication"]
    assert {"parameter": "ca", "name": "redis-tls", "key": "ca.crt"} in auth["spec"]["secretTargetRef"]


# --- the services against a real Redis ------------------------------------------------------

def role_env(server: ManifestRedis, secrets: dict[str, dict[str, str]], wrong: str | None = None
             ) -> Callable[[str], dict[str, str]]:
    """What the manifests give each service: its role's Redis URL (with ``wrong`` for its password),
    and fusion the decision key."""
    def env(command: str) -> dict[str, str]:
        secret = secrets[f"liveness-redis-{ROLE_USERS.get(command, 'fusion')}"]
        url = secret["url"] if wrong is None else secret["url"].replace(secret["password"], wrong)
        out = {"LIVENESS_REDIS__URL": server.url(url)}
        if command == "fusion":
            out["LIVENESS_FUSION__DECISION_KEY"] = secrets["liveness-decisions"]["key"]
        return out
    return env


def test_services_run_as_their_users_and_nothing_more(k8s_secrets: dict, tmp_path: Path,
                                                      manifest_redis: list) -> None:
    """Every service, as compose and Kubernetes run them, each as its role's user of users-acl.sh;
    fusion signs every decision."""
    ((pod, container),) = redis_containers(manifests())
    (tmp_path / "redis").mkdir()
    server = k8s_redis(pod, container, k8s_secrets, tmp_path / "redis")
    manifest_redis.append(server)
    server.start()
    admin_password = re.search(r"^user admin on >(\S+)", k8s_secrets["redis-users"]["users.acl"], re.M)
    assert admin_password
    admin = redis.Redis(port=server.port, username="admin", password=admin_password[1])
    keys = Keys(Settings().prefix)
    svc = Services(services_config(tmp_path, keys.prefix, {"photo": FAULT_CLIPS["photo"]}),
                   role_env(server, k8s_secrets))
    try:
        svc.start_scoring()
        wait_state(admin, keys, "fusion", "face", "eye")
        svc.start("ingest", "ingest")
        wait_for(lambda: admin.exists(keys.stream(Decision)), timeout_s=180)
        wait_for(lambda: svc.procs["ingest"].poll() is not None, timeout_s=90)
        wait_for(lambda: drained(admin, keys), timeout_s=90)
    except pytest.fail.Exception:
        svc.stop_all()
        pytest.fail("the pipeline did not finish:\n" + "\n".join(f"{n}: {log[-1500:]}" for n, log in svc.logs.items()))
    finally:
        svc.stop_all()
    logs = "".join(svc.logs.values())
    assert "NOPERM" not in logs and "no permissions" not in logs, "the services need no command beyond their users'"
    assert "Traceback" not in logs
    key = k8s_secrets["liveness-decisions"]["key"].encode()
    decisions = [Decision.from_fields(f) for _, f in admin.xrange(keys.stream(Decision))]
    assert decisions and all(d.authentic(key) for d in decisions), "fusion signed every decision"
    for user in ("ingest", "worker", "fusion"):
        secret = k8s_secrets[f"liveness-redis-{user}"]
        assert secret["password"] not in logs
        refused_beyond_the_list(redis.Redis.from_url(server.url(secret["url"])), user)


def test_refused_credentials_are_named_and_retried(k8s_secrets: dict, tmp_path: Path, manifest_redis: list) -> None:
    """Each service, started with a wrong password, names the user and backs off; takes the
    password once Redis does (a rotation's first step); and when its user is dropped mid-run,
    names it again instead of failing."""
    ((pod, container),) = redis_containers(manifests())
    (tmp_path / "redis").mkdir()
    server = k8s_redis(pod, container, k8s_secrets, tmp_path / "redis")
    manifest_redis.append(server)
    server.start()
    wrong = "rotated-password-0123456789"
    env = role_env(server, k8s_secrets, wrong)
    config = services_config(tmp_path, Settings().prefix, {"photo": FAULT_CLIPS["photo"]})
    logs = {name: tmp_path / f"{name}.log" for name in LIVENESS_SERVICES}
    procs = {}
    for name in LIVENESS_SERVICES:
        loop = ["--loop"] if name == "ingest" else []
        with logs[name].open("w") as out:
            procs[name] = subprocess.Popen(liveness_cmd(name, *loop, "--config", str(config)),
                                           env={**os.environ, **env(name)}, stdout=out, stderr=subprocess.STDOUT)

    def failed(name: str) -> str:
        return f"authentication failed for user {ROLE_USERS[name]}"

    try:
        wait_for(lambda: all(logs[n].read_text().count(failed(n)) >= 3 for n in LIVENESS_SERVICES), timeout_s=120,
                 every_s=1)
        assert all(p.poll() is None for p in procs.values()), "nobody gave up"
        for name in LIVENESS_SERVICES:
            delays = [float(d) for d in re.findall(re.escape(failed(name)) + r"; retrying in ([\d.]+) s",
                                                   logs[name].read_text())]
            assert delays[:3] == sorted(delays[:3]) and delays[2] > delays[0], f"{name} backs off: {delays}"
        admin_password = re.search(r"^user admin on >(\S+)", k8s_secrets["redis-users"]["users.acl"], re.M)
        assert admin_password
        admin = redis.Redis(port=server.port, username="admin", password=admin_password[1])
        for user in ("ingest", "worker", "fusion"):
            admin.execute_command("ACL", "SETUSER", user, f">{wrong}")  # the first step of a rotation
        wait_for(lambda: all("is back" in logs[n].read_text() for n in LIVENESS_SERVICES), timeout_s=30,
                 every_s=0.5)
        wait_for(lambda: admin.exists(Keys(Settings().prefix).stream(Decision)), timeout_s=120)
        seen = {name: len(logs[name].read_text()) for name in LIVENESS_SERVICES}
        admin.execute_command("ACL", "DELUSER", "ingest", "worker", "fusion")  # closes their connections: all log in again
        wait_for(lambda: all(failed(n) in logs[n].read_text()[seen[n]:]
                             for n in LIVENESS_SERVICES), timeout_s=60, every_s=0.5)
        assert all(p.poll() is None for p in procs.values()), "nobody gave up"
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
    for name in LIVENESS_SERVICES:
        text = logs[name].read_text()
        assert wrong not in text and "Traceback" not in text, text[-2000:]


# --- liveness run on one machine ------------------------------------------------------------

def test_private_redis_wants_its_generated_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    local = PrivateRedis()
    try:
        url = urlsplit(local.url)
        assert url.hostname == "127.0.0.1" and url.password and len(url.password) >= 32
        anonymous_refused(local.port)
        with pytest.raises(redis.AuthenticationError):
            once(port=local.port, password="not-" + url.password).ping()
        client = redis.Redis.from_url(local.url)
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        cmdline = Path(f"/proc/{client.info()['process_id']}/cmdline").read_text()
        assert url.password not in cmdline, "the password is not on redis-server's command line"
        other = PrivateRedis()
        assert urlsplit(other.url).password != url.password
        other.close()
    finally:
        local.close()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(local.url, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)).ping()
    assert url.password not in caplog.text and "private Redis" in caplog.text


def test_run_takes_its_private_redis_unless_one_is_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare ``liveness run`` never uses a password-less Redis that happens to answer on the
    default port (here: the tests' own), and signs its decisions with a key of its own."""
    monkeypatch.delenv("LIVENESS_REDIS__URL", raising=False)
    monkeypatch.delenv("LIVENESS_FUSION__DECISION_KEY", raising=False)
    assert redis.Redis.from_url(REDIS_URL).ping(), "a Redis answers without a password"
    with ExitStack() as stack:
        settings, _ = effective_settings(None, stack, tmp_path, cameras=[])
        url = urlsplit(settings.redis.url)
        assert url.password and url.port != urlsplit(REDIS_URL).port
        assert redis.Redis.from_url(settings.redis.url).ping()
        assert settings.fusion.decision_key
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"redis": {"url": REDIS_URL}, "fusion": {"decision_key": "k" * 20}}))
    with ExitStack() as stack:
        settings, _ = effective_settings(str(config), stack, tmp_path, cameras=[])
        assert settings.redis.url == REDIS_URL and settings.fusion.decision_key == "k" * 20, "the configured ones"


def test_metrics_and_preview_listen_on_loopback_by_default() -> None:
    settings = Settings()
    assert settings.metrics.host == "127.0.0.1" and settings.preview.host == "127.0.0.1"
    port = serve(settings.metrics, "test", free_port())
    assert port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.status == 200
    assert listening_addresses(port) == {"127.0.0.1"}, "/metrics listens beyond loopback"


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on TCP ``port``, as the kernel lists them (IPv4 and IPv6)."""
    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                if sys.byteorder == "little":  # the kernel prints each 32-bit word in host order
                    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))
                found.add(socket.inet_ntop(socket.AF_INET if width == 4 else socket.AF_INET6, raw))
    return found
