"""docker-compose.yml and deploy/Dockerfile agree with the code.

CI has no Docker engine, so this is the review that never forgets: every service the
compose file runs exists, every ``YILIAN_*`` variable it sets is read by the code, every
published port is the one the service listens on, every mounted path is used, every file
the image copies exists, and the topic init creates every topic the Kafka adapter uses.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import re
import subprocess
from dataclasses import fields
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from services.core.bus.port import DEAD_LETTER_TOPIC, deployment_topics, topic_of
from services.core.consortium import load_consortium
from services.core.events import registry
from services.core.runtime import SERVICE_NAMES
from services.core.settings import Settings

from .support import ROOT

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?]([^}]*))?\}")


def resolve(value: object) -> str:
    """Compose interpolation with the defaults: ``${X:-d}`` -> ``d``; ``${X:?msg}`` stays a marker."""
    def sub(m: re.Match[str]) -> str:
        text = m.group(0)
        return f"<required {m.group(1)}>" if ":?" in text else (m.group(2) or "")
    return INTERPOLATION.sub(sub, str(value))


@functools.cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict]:
    return compose()["services"]


def yilian_services() -> dict[str, dict]:
    """The services built from deploy/Dockerfile (not the optional profiles, e.g. the edge)."""
    return {name: s for name, s in services().items()
            if isinstance(s.get("build"), dict) and s["build"].get("dockerfile") == "deploy/Dockerfile"
            and not s.get("profiles")}


def test_the_edge_profile_runs_yilian_edge_on_its_own_embedded_store():
    edge = services()["edge"]
    assert edge["profiles"] == ["edge"] and edge["command"] == ["edge"]
    env = edge["environment"]
    assert not any(k in env for k in ("YILIAN_BUS_URL", "YILIAN_STORE_URL")), "an edge never uses the centre's stores"
    for required in ("YILIAN_EDGE_CENTRE_URL", "YILIAN_EDGE_TOKEN", "YILIAN_EDGE_ORGANIZATION"):
        assert ":?" in env[required], required  # no default: compose refuses to start without it


@functools.cache
def source_text() -> str:
    return "\n".join(p.read_text("utf-8") for p in sorted((ROOT / "services").rglob("*.py")))


@functools.cache
def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_env() -> dict[str, str]:
    env = {}
    for word, rest in dockerfile():
        if word == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    return env


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def default(name: str):
    return next(f.default for f in fields(Settings) if f.name == name)


def listens_on(service: dict, variable: str, setting: str) -> int:
    """The port a Yilian container listens on: its environment, else the image's, else the code default."""
    value = environment(service).get(variable) or dockerfile_env().get(variable)
    return int(resolve(value)) if value else default(setting)


# --- services --------------------------------------------------------------------------------

def test_compose_runs_exactly_the_services_of_the_code():
    ys = yilian_services()
    assert set(ys) == set(SERVICE_NAMES)
    for name, service in ys.items():
        assert service["command"] == ["serve", name], name
        assert service.get("restart") == "unless-stopped"


def test_infrastructure_is_kafka_kraft_and_a_mongo_replica_set():
    kafka, mongo = services()["kafka"], services()["mongo"]
    assert kafka["image"].startswith("apache/kafka:")
    env = environment(kafka)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft: no ZooKeeper
    assert not any(k.startswith("KAFKA_ZOOKEEPER") for k in env)
    assert mongo["image"] == "mongo:7"
    assert mongo["command"][mongo["command"].index("--replSet") + 1] == "rs0"
    assert '_id: "rs0"' in (ROOT / "deploy" / "mongo-init.js").read_text()


def test_urls_point_at_the_infrastructure():
    kafka_env = environment(services()["kafka"])
    advertised = {urlsplit(u).netloc for u in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    replset = services()["mongo"]["command"][services()["mongo"]["command"].index("--replSet") + 1]
    for name, service in yilian_services().items():
        env = environment(service)
        bus, store = urlsplit(env["YILIAN_BUS_URL"]), urlsplit(env["YILIAN_STORE_URL"])
        assert bus.scheme == "kafka" and bus.netloc in advertised, name
        assert store.scheme == "mongodb" and store.hostname in services(), name
        assert store.port == 27017
        assert parse_qs(store.query)["replicaSet"] == [replset]
        assert store.path == "/yilian"


def test_jwt_secret_comes_from_the_host_and_is_required():
    for name, service in yilian_services().items():
        assert environment(service)["YILIAN_JWT_SECRET"] == "${YILIAN_JWT_SECRET:?set it}", name
    assert "YILIAN_JWT_SECRET" not in dockerfile_env()


def test_every_yilian_variable_set_is_read_by_the_code():
    consortium_file = ROOT / "deploy" / "consortium.example.yaml"
    secret_envs = {o.webhook.secret_env for o in load_consortium(consortium_file).organizations.values()
                   if o.webhook}
    set_here = {(name, var) for name, s in yilian_services().items() for var in environment(s)
                if var.startswith("YILIAN_")}
    set_here |= {("Dockerfile", var) for var in dockerfile_env() if var.startswith("YILIAN_")}
    assert len(set_here) > 10
    for where, var in sorted(set_here):
        assert f'"{var}"' in source_text() or var in secret_envs, f"{where} sets {var}, which no code reads"


def test_every_webhook_secret_reaches_the_delivery_service():
    consortium = load_consortium(ROOT / "deploy" / "consortium.example.yaml")
    env = environment(yilian_services()["delivery"])
    for org in consortium.organizations.values():
        if org.webhook:
            assert env[org.webhook.secret_env].startswith("${"), "a webhook secret must come from the host"


# --- ports -----------------------------------------------------------------------------------

def published(service: dict) -> list[int]:
    out = []
    for spec in service.get("ports") or []:
        container = resolve(spec).split(":")[-1].split("/")[0]
        out.append(int(container))
    return out


def test_published_ports_are_the_ones_the_services_listen_on():
    ys = yilian_services()
    assert published(ys["pacs_gateway"]) == [listens_on(ys["pacs_gateway"], "YILIAN_DICOM_PORT", "dicom_port")]
    assert published(ys["api"]) == [listens_on(ys["api"], "YILIAN_HTTP_PORT", "http_port")]
    assert published(ys["pacs_gateway"]) == [11112] and published(ys["api"]) == [8080]
    for name in ("workflow", "delivery", "monitor"):
        assert published(ys[name]) == [], f"{name} talks only through events; it publishes no port"


def test_healthchecks_probe_readyz_on_the_service_http_port():
    for name, service in yilian_services().items():
        test = " ".join(service["healthcheck"]["test"])
        port = listens_on(service, "YILIAN_HTTP_PORT", "http_port")
        assert f"127.0.0.1:{port}/readyz" in test, name
    # /readyz is served by the api, and by the runtime's health listener in every other 'serve' process.
    assert '"/readyz"' in (ROOT / "services" / "core" / "health.py").read_text()
    assert "_health_listener" in (ROOT / "services" / "core" / "runtime.py").read_text()


def test_depends_on_waits_for_health_or_completion():
    conditions = {"service_healthy", "service_completed_successfully"}
    for name, service in services().items():
        deps = service.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        for dep, spec in deps.items():
            assert dep in services(), f"{name} depends on unknown {dep}"
            assert spec["condition"] in conditions, name
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services()[dep], f"{name} waits for {dep}'s health, which has no check"
    for name in yilian_services():
        assert set(services()[name]["depends_on"]) == {"kafka-init", "mongo-init"}
    assert services()["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services()["mongo-init"]["depends_on"]["mongo"]["condition"] == "service_healthy"


# --- volumes ---------------------------------------------------------------------------------

def volumes(service: dict) -> list[tuple[str, str, str]]:
    out = []
    for spec in service.get("volumes") or []:
        parts = resolve(spec).split(":")
        out.append((parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"))
    return out


def test_yilian_volumes_are_paths_the_code_reads():
    for name, service in yilian_services().items():
        env = {**dockerfile_env(), **environment(service)}
        used = {env.get("YILIAN_CONSORTIUM"), env.get("YILIAN_DATA_DIR")}
        for host, container, mode in volumes(service):
            assert container in used, f"{name} mounts {container}, which no YILIAN_* path names"
            if container == env["YILIAN_CONSORTIUM"]:
                assert mode == "ro"
                # The mounted file exists and loads.
                consortium = load_consortium(ROOT / host)
                assert consortium.id == "demo-county"
    assert '"YILIAN_CONSORTIUM"' in source_text() and '"YILIAN_DATA_DIR"' in source_text()


def test_infrastructure_volumes():
    kafka = services()["kafka"]
    assert [c for _, c, _ in volumes(kafka)] == [environment(kafka)["KAFKA_LOG_DIRS"]]
    assert [c for _, c, _ in volumes(services()["mongo"])] == ["/data/db"]  # the mongo image's dbPath
    named = set(compose().get("volumes") or {})
    for service in services().values():
        for host, _, _ in volumes(service):
            assert host in named or (ROOT / host).exists(), f"{host} is neither a named volume nor a file"


def test_init_containers_mount_what_they_run():
    kafka_init = services()["kafka-init"]
    mounts = {c: (ROOT / h) for h, c, _ in volumes(kafka_init)}
    assert kafka_init["entrypoint"][-1] in mounts
    assert mounts[environment(kafka_init)["SCHEMAS_DIR"]] == ROOT / "schemas" / "events"
    mongo_init = services()["mongo-init"]
    mounts = {c: (ROOT / h) for h, c, _ in volumes(mongo_init)}
    assert mongo_init["command"][-1] in mounts and mounts[mongo_init["command"][-1]].exists()


# --- the image -------------------------------------------------------------------------------

def test_dockerfile_shape():
    words = dockerfile()
    assert words[0] == ("FROM", "python:3.11-slim")
    users = [rest for word, rest in words if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert json.loads(next(rest for word, rest in words if word == "ENTRYPOINT")) == ["yilian"]
    cmd = json.loads(next(rest for word, rest in words if word == "CMD"))
    assert cmd[0] == "serve" and cmd[1] in SERVICE_NAMES
    assert any(word == "RUN" and "pip install" in rest for word, rest in words)
    exposed = {int(p) for word, rest in words if word == "EXPOSE" for p in rest.split()}
    assert exposed == {default("http_port"), default("dicom_port")}


def test_dockerfile_copy_sources_exist_and_are_in_the_build_context():
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    copies = [rest.split()[:-1] for word, rest in dockerfile() if word == "COPY"]
    assert copies
    for sources in copies:
        for source in sources:
            assert not source.startswith("--")
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            for pattern in ignored:
                assert not fnmatch.fnmatch(source, pattern) and not source.startswith(pattern.rstrip("/") + "/"), \
                    f"COPY {source} is excluded by .dockerignore ({pattern})"
    # What the code reads from the source tree at run time is in the image.
    copied = {s.rstrip("/") for sources in copies for s in sources}
    assert {"pyproject.toml", "services", "schemas"} <= copied
    assert "README.md" in copied  # pyproject's readme: the build needs it


# --- topics ----------------------------------------------------------------------------------

def test_kafka_init_creates_every_topic_the_bus_uses(tmp_path):
    """Run the real init script with a stand-in for kafka-topics.sh that records its calls."""
    calls = tmp_path / "calls"
    stub = tmp_path / "kafka-topics.sh"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    stub.chmod(0o755)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KAFKA_BIN": str(tmp_path),
           "SCHEMAS_DIR": str(ROOT / "schemas" / "events"), "KAFKA_TOPIC_PARTITIONS": "6",
           "KAFKA_BOOTSTRAP": "kafka:9092"}
    out = subprocess.run(["/bin/sh", str(ROOT / "deploy" / "kafka-init.sh")], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    created = {}
    for line in calls.read_text().splitlines():
        args = line.split()
        assert args[args.index("--bootstrap-server") + 1] == "kafka:9092"
        if "--create" in args:
            assert "--if-not-exists" in args
            created[args[args.index("--topic") + 1]] = int(args[args.index("--partitions") + 1])
    types = {p.name.split(".v")[0] for p in (ROOT / "schemas" / "events").glob("*.v*.json")}
    expected = {topic_of(t) for t in types if not t.startswith("bus.")} | {DEAD_LETTER_TOPIC}
    assert set(created) == expected == set(deployment_topics(registry().types))
    assert set(created.values()) == {6}
    assert all(t.startswith("yilian.") for t in created)


def test_the_deployment_guide_lists_the_topics_of_the_code():
    """docs/deployment.md names today's topics; they are the code's, in its order."""
    doc = (ROOT / "docs" / "deployment.md").read_text()
    sentence = re.search(r"Today's topics:(.*?)\.(?:\s|$)", doc, re.S)
    assert sentence, "docs/deployment.md: no \"Today's topics:\" sentence"
    assert re.findall(r"`([a-z_.]+)`", sentence.group(1)) == deployment_topics(registry().types)


def test_kafka_init_fails_loudly_without_schemas(tmp_path):
    out = subprocess.run(["/bin/sh", str(ROOT / "deploy" / "kafka-init.sh")], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "SCHEMAS_DIR": str(tmp_path), "KAFKA_BIN": str(tmp_path)},
                         timeout=30)
    assert out.returncode != 0 and "no event schemas" in out.stderr


@pytest.mark.parametrize("path", ["deploy/kafka-init.sh", "deploy/mongo-init.js", "deploy/Dockerfile", ".dockerignore"])
def test_no_secret_is_written_in_the_deployment(path):
    text = (ROOT / path).read_text()
    assert not re.search(r"(?i)(password|secret)\s*[:=]\s*['\"]?[A-Za-z0-9+/]{8,}", text), path
    compose_text = COMPOSE.read_text()
    for line in compose_text.splitlines():
        if re.search(r"SECRET\s*:", line):
            assert "${" in line, f"a secret written in docker-compose.yml: {line.strip()}"


# --- the documentation keeps up with the code -----------------------------------------------

def test_configuration_doc_names_every_variable_the_code_reads():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    read = set(re.findall(r"YILIAN_[A-Z0-9_]*[A-Z0-9]", source_text()))
    missing = sorted(v for v in read if f"`{v}`" not in doc)
    assert not missing, f"docs/configuration.md does not document {missing}"


def test_configuration_doc_names_every_key_of_the_consortium_file():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    loader = (ROOT / "services" / "core" / "consortium.py").read_text()
    # Every key the loader accepts is a quoted name in a {"key": required} mapping.
    keys = set(re.findall(r'"([a-z_]+)": (?:True|False)', loader))
    assert {"modality_aes", "escalation", "overflow", "on_duty", "secret_env"} <= keys
    missing = sorted(k for k in keys if f"`{k}`" not in doc and f"`scp.{k}`" not in doc
                     and f"`webhook.{k}`" not in doc)
    assert not missing, f"docs/configuration.md does not document consortium keys {missing}"
