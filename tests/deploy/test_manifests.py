"""The deployment files (compose, Kubernetes, Dockerfile) parse and agree with the code.

No Docker engine or cluster here: the files are parsed with PyYAML and checked for consistency
with the settings classes (every STREAMREC_* variable exists), the CLI (every container command
parses with the real command line), each other (images, ports, names) and the secrets rule
(secret settings only ever come from a Secret, or from the environment in compose).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
from pydantic import SecretStr
from pydantic_settings import BaseSettings

yaml = pytest.importorskip("yaml")

from deploy.cli import app  # noqa: E402
from deploy.settings import SUBSYSTEMS, Settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"


def settings_classes() -> list[type[BaseSettings]]:
    classes = [Settings.__dataclass_fields__[name].type for name in SUBSYSTEMS]
    resolved = [c if isinstance(c, type) else None for c in classes]
    if None in resolved:  # string annotations (from __future__): resolve through a real instance
        from deploy.settings import load_settings

        loaded = load_settings(Path("/nonexistent"))
        resolved = [type(getattr(loaded, name)) for name in SUBSYSTEMS]
    from deploy.gateway.settings import GatewaySettings

    return [*resolved, GatewaySettings]


def env_catalogue() -> dict[str, bool]:
    """Every STREAMREC_* variable our settings read -> whether it holds a secret."""
    out: dict[str, bool] = {}
    for cls in settings_classes():
        prefix = cls.model_config["env_prefix"]
        for name, info in cls.model_fields.items():
            secret = SecretStr in (getattr(info.annotation, "__args__", None) or (info.annotation,))
            out[(prefix + name).upper()] = secret
    return out


CATALOGUE = env_catalogue()
SECRETS = {name for name, secret in CATALOGUE.items() if secret}


def k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_docs() if d["kind"] == kind]


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for doc in k8s_docs():
        if doc["kind"] in ("Deployment", "StatefulSet"):
            out.append((doc["metadata"]["name"], doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "CronJob":
            out.append((doc["metadata"]["name"], doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return out


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def streamrec_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if svc.get("image", "").startswith("streamrec:")
    }


def check_command(args: list[str]) -> None:
    """Parse ``args`` with the real CLI (unknown commands or options raise)."""
    group = typer.main.get_command(app)
    name, *rest = args
    command = group.commands.get(name)  # type: ignore[attr-defined]
    assert command is not None, f"no streamrec command {name!r}"
    command.make_context(name, list(rest), resilient_parsing=False)


# -- settings ------------------------------------------------------------------------------------


def test_the_catalogue_is_complete() -> None:
    assert "STREAMREC_REDIS_CLUSTER" in CATALOGUE and "STREAMREC_WORKER_METRICS_PORT" in CATALOGUE
    assert {"STREAMREC_REDIS_URL", "STREAMREC_REDIS_PASSWORD", "STREAMREC_KAFKA_SASL_PASSWORD"} <= SECRETS
    assert "STREAMREC_KAFKA_BOOTSTRAP_SERVERS" not in SECRETS


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(STREAMREC_[A-Z0-9_]+)` \|", readme, flags=re.M))
    missing = sorted(set(CATALOGUE) - documented)
    assert not missing, f"README settings tables lack: {missing}"
    unknown = sorted(documented - set(CATALOGUE))
    assert not unknown, f"README documents settings that do not exist: {unknown}"


# -- Kubernetes ----------------------------------------------------------------------------------


def test_kubernetes_objects_are_well_formed() -> None:
    docs = k8s_docs()
    kinds = {d["kind"] for d in docs}
    assert {"ConfigMap", "Secret", "Deployment", "HorizontalPodAutoscaler", "Service", "CronJob"} <= kinds
    for doc in docs:
        assert doc.get("apiVersion") and doc["metadata"].get("name"), doc


def test_kubernetes_env_names_exist_and_secrets_stay_in_secrets() -> None:
    config = by_kind("ConfigMap")
    secrets = by_kind("Secret")
    for cm in config:
        for key in cm["data"]:
            assert key in CATALOGUE, f"ConfigMap {cm['metadata']['name']}: unknown setting {key}"
            assert key not in SECRETS, f"secret setting {key} in a ConfigMap"
    for secret in secrets:
        for key in secret.get("stringData", {}) | secret.get("data", {}):
            assert key in CATALOGUE, f"Secret: unknown setting {key}"
    for name, spec in pod_specs():
        for container in spec["containers"]:
            for env in container.get("env", []):
                if env["name"].startswith("STREAMREC_"):
                    assert env["name"] in CATALOGUE, f"{name}: unknown setting {env['name']}"
                if env["name"] in SECRETS:
                    assert "secretKeyRef" in env.get("valueFrom", {}), (
                        f"{name}: {env['name']} not from a Secret"
                    )


def test_kubernetes_references_resolve() -> None:
    names = {(d["kind"], d["metadata"]["name"]) for d in k8s_docs()}
    for name, spec in pod_specs():
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in names, name
                if "secretRef" in source:
                    assert ("Secret", source["secretRef"]["name"]) in names, name
            mounted = {m["name"] for m in container.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            assert mounted <= set(volumes), name
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names
    for hpa in by_kind("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) in names
    for svc in by_kind("Service"):
        selected = [
            spec for doc in k8s_docs() if doc["kind"] == "Deployment"
            for spec in [doc["spec"]["template"]]
            if svc["spec"]["selector"].items() <= spec["metadata"]["labels"].items()
        ]  # fmt: skip
        assert selected, f"Service {svc['metadata']['name']} selects no pods"
        ports = {p["containerPort"] for s in selected for c in s["spec"]["containers"] for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports


def test_kubernetes_images_commands_and_ports_agree() -> None:
    config = {k: str(v) for cm in by_kind("ConfigMap") for k, v in cm["data"].items()}
    images = {c["image"] for _, spec in pod_specs() for c in spec["containers"]}
    assert len(images) == 1, f"all streamrec containers should run one image: {images}"
    for _, spec in pod_specs():
        for container in spec["containers"]:
            check_command(container["args"])
            if container["args"][0] == "run":
                # One worker process per pod: the metrics port is the configured one, no offset.
                assert container["args"][container["args"].index("--workers") + 1] == "1"
                ports = {p["containerPort"] for p in container["ports"]}
                assert int(config["STREAMREC_WORKER_METRICS_PORT"]) in ports
            if container["args"][0] == "serve":
                assert int(config["STREAMREC_GATEWAY_PORT"]) in {
                    p["containerPort"] for p in container["ports"]
                }
    workers = next(d for d in by_kind("Deployment") if d["metadata"]["name"] == "streamrec-worker")
    annotations = workers["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == config["STREAMREC_WORKER_METRICS_PORT"]
    for hpa in by_kind("HorizontalPodAutoscaler"):
        # Consumers beyond the partition count would get no partition.
        assert hpa["spec"]["maxReplicas"] <= int(config["STREAMREC_KAFKA_PARTITIONS"])
        external = [
            m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "External"
        ]
        assert external == ["streamrec_consumer_lag"]
    from consumers.metrics import WorkerMetrics

    exported = {m.name for m in WorkerMetrics().registry.collect()}
    assert "streamrec_consumer_lag" in exported


# -- compose -------------------------------------------------------------------------------------


def _interpolated(value: str) -> bool:
    return bool(re.fullmatch(r"\$\{[A-Z0-9_]+(:?[-?][^}]*)?\}", value))


def test_compose_services_and_settings() -> None:
    doc = compose()
    services = doc["services"]
    assert {"kafka", "redis", "worker", "gateway", "trainer"} <= set(services)
    kafka_env = services["kafka"]["environment"]
    assert "controller" in kafka_env["KAFKA_PROCESS_ROLES"] and "KAFKA_CONTROLLER_QUORUM_VOTERS" in kafka_env
    ours = streamrec_services()
    assert set(ours) == {"worker", "gateway", "trainer"}
    assert len({svc["image"] for svc in ours.values()}) == 1
    for name, svc in ours.items():
        assert (COMPOSE.parent / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == DOCKERFILE
        for key, value in svc["environment"].items():
            if key.startswith("STREAMREC_"):
                assert key in CATALOGUE, f"{name}: unknown setting {key}"
            if key in SECRETS:
                assert _interpolated(str(value)), f"{name}: secret {key} must come from the environment"
                default = str(value).partition(":-")[2]
                assert "@" not in default, f"{name}: {key} default carries credentials"
        if "entrypoint" not in svc:
            check_command(svc["command"])
        else:
            assert "streamrec train" in svc["command"][0]


def test_compose_addresses_match_the_servers() -> None:
    doc = compose()
    services = doc["services"]
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    kafka_host_port = advertised.split("://", 1)[1]
    redis_port = services["redis"]["command"][services["redis"]["command"].index("--port") + 1]
    partitions = None
    for svc in streamrec_services().values():
        env = svc["environment"]
        assert env["STREAMREC_KAFKA_BOOTSTRAP_SERVERS"] == kafka_host_port
        url = str(env["STREAMREC_REDIS_URL"]).partition(":-")[2].rstrip("}")
        assert url.startswith("redis://redis:" + redis_port + "/")
        partitions = env["STREAMREC_KAFKA_PARTITIONS"]
    init = services["kafka-init"]["command"][0]
    assert set(re.findall(r"--partitions (\d+)", init)) == {partitions}
    assert str(services["worker"]["environment"]["STREAMREC_WORKER_METRICS_PORT"]) in [
        str(p) for p in services["worker"]["expose"]
    ]
    for name in ("kafka", "redis"):
        for mapping in services[name].get("ports", []):
            host_port = int(str(mapping).split(":")[-2])
            assert host_port not in (9092, 6379), "leave the well-known ports to the host"


# -- image ---------------------------------------------------------------------------------------


def test_dockerfile_builds_the_cpu_engine_image() -> None:
    lines = [
        ln.strip() for ln in DOCKERFILE.read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0].startswith("FROM python:3.11")
    text = "\n".join(lines)
    assert "download.pytorch.org/whl/cpu" in text  # CPU torch, before the project resolves its own
    assert text.index("whl/cpu") < text.index("pip install .")
    for package in ("engine", "consumers", "producers", "index", "models", "deploy"):
        assert re.search(rf"^COPY {package} ", text, flags=re.M), package
    assert re.search(r"^USER (?!root)", text, flags=re.M)
    assert 'ENTRYPOINT ["streamrec"]' in text
    exposed = {int(p) for ln in lines if ln.startswith("EXPOSE") for p in ln.split()[1:]}
    from consumers.metrics import ObservabilitySettings  # noqa: F401  (the port is a setting)

    config = {k: str(v) for cm in by_kind("ConfigMap") for k, v in cm["data"].items()}
    assert {int(config["STREAMREC_WORKER_METRICS_PORT"]), int(config["STREAMREC_GATEWAY_PORT"])} <= exposed
