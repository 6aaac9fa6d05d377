"""Kubernetes manifests: built with kustomize, validated offline by kubeconform against the
Kubernetes and CRD schemas, checked against policy and against the code they derive from."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from fulfilment_kit.contracts import access, topics
from fulfilment_kit.settings import AuthSettings
from tests.deploy.settings_env import auth_names, read_names, required_names, secret_names

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".local/bin"
OVERLAYS = ("dev", "prod")
Obj = dict[str, Any]


OFF_PATH = {"customer-service", "read-models"}


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("k8s_generate", REPO / "deploy/k8s/generate.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


GENERATE = _generator()


def _need_tools() -> None:
    for tool in ("kustomize", "kubeconform"):
        if not (BIN / tool).exists():
            raise AssertionError(f".local/bin/{tool} missing: run `make k8s-tools`")


def build(overlay: str) -> list[Obj]:
    _need_tools()
    out = subprocess.run(
        [BIN / "kustomize", "build", REPO / "deploy/k8s/overlays" / overlay],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def built() -> dict[str, list[Obj]]:
    return {overlay: build(overlay) for overlay in OVERLAYS}


def kubeconform(objects: list[Obj]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", REPO / "deploy/k8s/validate.sh", "-"],
        input=yaml.safe_dump_all(objects, sort_keys=False),
        capture_output=True,
        text=True,
    )


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


# -- policy ------------------------------------------------------------------------------


def policy_violations(objects: list[Obj]) -> list[str]:
    """What the platform requires of every workload, as messages naming the object."""
    problems: list[str] = []
    deployments = of_kind(objects, "Deployment")
    for d in deployments:
        name = d["metadata"]["name"]
        pod = d["spec"]["template"]["spec"]
        pod_ctx = pod.get("securityContext", {})
        for c in pod.get("initContainers", []) + pod["containers"]:
            where = f"Deployment/{name} container {c['name']}"
            ctx = {**pod_ctx, **c.get("securityContext", {})}
            if not ctx.get("runAsNonRoot"):
                problems.append(f"{where}: not runAsNonRoot")
            if not ctx.get("readOnlyRootFilesystem"):
                problems.append(f"{where}: root filesystem not read-only")
            if "ALL" not in ctx.get("capabilities", {}).get("drop", []):
                problems.append(f"{where}: capabilities not dropped")
            if ctx.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: seccomp not RuntimeDefault")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(part, {})):
                    problems.append(f"{where}: no cpu/memory {part}")
            image = c.get("image", "")
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            if not tag or tag == "latest":
                problems.append(f"{where}: image {image!r} has no pinned tag")
        for c in pod["containers"]:
            where = f"Deployment/{name} container {c['name']}"
            for kind, path in (
                ("startupProbe", "/livez"),
                ("livenessProbe", "/livez"),
                ("readinessProbe", "/readyz"),
            ):
                if c.get(kind, {}).get("httpGet", {}).get("path") != path:
                    problems.append(f"{where}: no {kind} on {path}")
            if "preStop" not in c.get("lifecycle", {}):
                problems.append(f"{where}: no preStop hook")
        if pod.get("terminationGracePeriodSeconds", 30) < 45:
            problems.append(f"Deployment/{name}: terminationGracePeriodSeconds too short to drain")
        labels = d["spec"]["template"]["metadata"]["labels"]

        def selects(o: Obj, key: str, pod_labels: dict[str, str] = labels) -> bool:
            wanted = o["spec"][key].get("matchLabels", {})
            return bool(wanted) and wanted.items() <= pod_labels.items()

        if not any(selects(p, "selector") for p in of_kind(objects, "PodDisruptionBudget")):
            problems.append(f"Deployment/{name}: no PodDisruptionBudget")
        if not any(selects(n, "podSelector") for n in of_kind(objects, "NetworkPolicy")):
            problems.append(f"Deployment/{name}: no NetworkPolicy")
        scalers = [
            s
            for s in of_kind(objects, "ScaledObject")
            if s["spec"]["scaleTargetRef"]["name"] == name
        ]
        if not scalers or scalers[0]["spec"]["maxReplicaCount"] > topics_partitions():
            problems.append(f"Deployment/{name}: no ScaledObject capped at the partition count")
    problems += environment_violations(objects)
    for secretish in of_kind(objects, "Secret"):
        problems.append(f"Secret/{secretish['metadata']['name']}: secret values in the manifests")
    return problems


def container_environment(objects: list[Obj], c: Obj) -> dict[str, Obj]:
    """A container's variables: its `env` entries, and {"configMap": name, "value": v} for
    each key of a ConfigMap it takes with envFrom."""
    maps = {m["metadata"]["name"]: m for m in of_kind(objects, "ConfigMap")}
    found: dict[str, Obj] = {}
    for source in c.get("envFrom", []):
        name = source["configMapRef"]["name"]
        for key, value in maps.get(name, {}).get("data", {}).items():
            found[key] = {"configMap": name, "value": value}
    for entry in c.get("env", []):
        found[entry["name"]] = entry
    return found


def environment_violations(objects: list[Obj]) -> list[str]:
    """Every container checks tokens against a configured JWKS with the dev issuer refused,
    and every secret it is given comes from a Secret by reference, never a value in a file."""
    problems: list[str] = []
    required, jwks = auth_names()
    secrets = secret_names()
    for d in of_kind(objects, "Deployment"):
        pod = d["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            where = f"Deployment/{d['metadata']['name']} container {c['name']}"
            env = container_environment(objects, c)
            for name in sorted(required - set(env)):
                problems.append(f"{where}: lacks auth setting {name}")
            if not jwks & set(env):
                problems.append(f"{where}: lacks auth setting {' or '.join(sorted(jwks))}")
            refusal = env.get("FULFIL_AUTH_DEV_ISSUER", {}).get("value")
            if refusal is not None and str(refusal).lower() != "false":
                problems.append(f"{where}: the dev issuer is not refused ({refusal!r})")
            for name in sorted(secrets & set(env)):
                entry = env[name]
                if "configMap" in entry or "value" in entry:
                    problems.append(f"{where}: secret {name} inline, not from a Secret")
                elif "secretKeyRef" not in entry.get("valueFrom", {}):
                    problems.append(f"{where}: secret {name} not from a Secret")
    return problems


def topics_partitions() -> int:
    return int(GENERATE.PARTITIONS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_builds_and_validates_with_zero_errors(overlay: str) -> None:
    _need_tools()
    result = subprocess.run(
        ["bash", REPO / "deploy/k8s/validate.sh", REPO / "deploy/k8s/overlays" / overlay],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Invalid: 0, Errors: 0, Skipped: 0" in result.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_meets_the_policy(built: dict[str, list[Obj]], overlay: str) -> None:
    assert policy_violations(built[overlay]) == []


def test_prod_prints_every_kind_the_platform_needs(built: dict[str, list[Obj]]) -> None:
    kinds = {o["kind"] for o in built["prod"]}
    assert kinds >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "ServiceAccount",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ScaledObject",
        "TriggerAuthentication",
        "KafkaTopic",
        "KafkaUser",
        "ServiceMonitor",
        "PrometheusRule",
    }
    assert {o["metadata"]["name"] for o in of_kind(built["prod"], "Deployment")} == set(
        access.users()
    )
    prod_topics = of_kind(built["prod"], "KafkaTopic")
    assert {t["spec"]["config"]["min.insync.replicas"] for t in prod_topics} == {2}
    assert {t["spec"]["replicas"] for t in prod_topics} == {3}


def test_base_is_what_the_generator_makes_from_the_code() -> None:
    committed = {p.name: p.read_text() for p in (REPO / "deploy/k8s/base").glob("*.yaml")}
    assert committed == GENERATE.files(), "run: uv run python deploy/k8s/generate.py"


def test_kafka_users_and_topics_equal_the_code_registry(built: dict[str, list[Obj]]) -> None:
    for overlay in OVERLAYS:
        users = {u["metadata"]["name"]: u for u in of_kind(built[overlay], "KafkaUser")}
        assert set(users) == set(access.principals())  # the deployables' and ops
        assert set(access.all_access(prefix="")) == set(access.principals())
        for name, grant in access.all_access(prefix="").items():
            acls = users[name]["spec"]["authorization"]["acls"]
            found = {
                (a["resource"]["type"], a["resource"]["name"], tuple(a["operations"])) for a in acls
            }
            assert found == {(a.resource, a.name, a.operations) for a in grant.acls()}
            assert all(a["resource"]["patternType"] == "literal" for a in acls)
            assert all(a["type"] == "allow" for a in acls)
        names = {t["spec"]["topicName"] for t in of_kind(built[overlay], "KafkaTopic")}
        with pytest.MonkeyPatch.context() as env:
            env.setenv("FULFIL_TOPIC_PREFIX", "")
            assert names == set(topics.all_physical_topics())
        groups = {
            trig["metadata"]["consumerGroup"]
            for s in of_kind(built[overlay], "ScaledObject")
            for trig in s["spec"]["triggers"]
        }
        assert groups == set(topics.CONSUMERS)


def test_dashboards_and_rules_are_generated_from_their_files(built: dict[str, list[Obj]]) -> None:
    dashboards = {
        c["metadata"]["annotations"]["fulfil.io/generated-from"]: c
        for c in of_kind(built["prod"], "ConfigMap")
        if c["metadata"]["labels"].get("grafana_dashboard") == "1"
    }
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "deploy/grafana").rglob("*.json"))
    assert sorted(dashboards) == files
    for path, cm in dashboards.items():
        [(key, text)] = cm["data"].items()
        assert key == Path(path).name
        assert json.loads(text) == json.loads((REPO / path).read_text())
    [rule] = of_kind(built["prod"], "PrometheusRule")
    expected: list[Any] = []
    for path in sorted((REPO / "deploy/prometheus/rules").glob("*.y*ml")):
        expected.extend((yaml.safe_load(path.read_text()) or {}).get("groups", []))
    assert rule["spec"]["groups"] == expected


# -- the validators reject what is broken ----------------------------------------------------


def _first(objects: list[Obj], kind: str) -> Obj:
    return of_kind(objects, kind)[0]


def _unknown_field(o: Obj) -> None:
    o["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}


def _wrong_type(o: Obj) -> None:
    o["spec"]["replicas"] = "three"


def _crd_unknown_field(o: Obj) -> None:
    o["spec"]["authorization"]["acls"][0]["operation"] = "Write"


def _crd_wrong_type(o: Obj) -> None:
    o["spec"]["maxReplicaCount"] = "six"


BROKEN: list[tuple[str, Callable[[Obj], None], str]] = [
    ("Deployment", _unknown_field, "livenessprobe"),
    ("Deployment", _wrong_type, "replicas"),
    ("KafkaUser", _crd_unknown_field, "operation"),
    ("ScaledObject", _crd_wrong_type, "maxReplicaCount"),
]


def test_kubeconform_rejects_each_broken_manifest(built: dict[str, list[Obj]]) -> None:
    """One run over one broken copy per breakage (built-in kinds and CRDs), each named."""
    objects = []
    for n, (kind, breakage, _) in enumerate(BROKEN):
        broken = copy.deepcopy(_first(built["prod"], kind))
        broken["metadata"]["name"] = f"broken-{n}"
        breakage(broken)
        objects.append(broken)
    result = kubeconform(objects)
    assert result.returncode != 0
    assert f"Invalid: {len(BROKEN)}" in result.stdout, result.stdout
    lines = result.stdout.splitlines()
    for n, (kind, _, message) in enumerate(BROKEN):
        [line] = [x for x in lines if f"{kind} broken-{n} is invalid" in x]
        assert message in line, line


def _no_readiness(o: list[Obj]) -> None:
    del _first(o, "Deployment")["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]


def _root(o: list[Obj]) -> None:
    pod = _first(o, "Deployment")["spec"]["template"]["spec"]
    pod["securityContext"]["runAsNonRoot"] = False
    pod["containers"][0]["securityContext"]["runAsNonRoot"] = False


def _latest(o: list[Obj]) -> None:
    _first(o, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] = "x/y:latest"


def _no_limits(o: list[Obj]) -> None:
    del _first(o, "Deployment")["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def _no_pdb(o: list[Obj]) -> None:
    o.remove(_first(o, "PodDisruptionBudget"))


def _no_netpol(o: list[Obj]) -> None:
    o.remove(_first(o, "NetworkPolicy"))


def _writable_root(o: list[Obj]) -> None:
    c = _first(o, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    c["securityContext"]["readOnlyRootFilesystem"] = False


def _service_config(o: list[Obj]) -> dict[str, Any]:
    name = _first(o, "Deployment")["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]
    [cm] = [
        c for c in of_kind(o, "ConfigMap") if c["metadata"]["name"] == name["configMapRef"]["name"]
    ]
    data: dict[str, Any] = cm["data"]
    return data


def _no_idempotency_secret(o: list[Obj]) -> None:
    c = _first(o, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    c["env"] = [e for e in c["env"] if e["name"] != "FULFIL_AUTH_IDEMPOTENCY_SECRET"]


def _no_jwks(o: list[Obj]) -> None:
    del _service_config(o)["FULFIL_AUTH_JWKS_URL"]


def _dev_issuer_allowed(o: list[Obj]) -> None:
    _service_config(o)["FULFIL_AUTH_DEV_ISSUER"] = "true"


def _inline_secret(o: list[Obj]) -> None:
    c = _first(o, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    for e in c["env"]:
        if e["name"] == "FULFIL_AUTH_IDEMPOTENCY_SECRET":
            e.pop("valueFrom")
            e["value"] = "x" * 32


def _secret_in_config_map(o: list[Obj]) -> None:
    c = _first(o, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    c["env"] = [e for e in c["env"] if e["name"] != "POSTGRES_PASSWORD"]
    for init in _first(o, "Deployment")["spec"]["template"]["spec"]["initContainers"]:
        init["env"] = [e for e in init["env"] if e["name"] != "POSTGRES_PASSWORD"]
    _service_config(o)["POSTGRES_PASSWORD"] = "hunter2"


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (_no_idempotency_secret, "lacks auth setting FULFIL_AUTH_IDEMPOTENCY_SECRET"),
        (_no_jwks, "lacks auth setting FULFIL_AUTH_JWKS_FILE or FULFIL_AUTH_JWKS_URL"),
        (_dev_issuer_allowed, "the dev issuer is not refused"),
        (_inline_secret, "secret FULFIL_AUTH_IDEMPOTENCY_SECRET inline"),
        (_secret_in_config_map, "secret POSTGRES_PASSWORD inline"),
        (_no_readiness, "no readinessProbe"),
        (_root, "not runAsNonRoot"),
        (_latest, "no pinned tag"),
        (_no_limits, "no cpu/memory limits"),
        (_no_pdb, "no PodDisruptionBudget"),
        (_no_netpol, "no NetworkPolicy"),
        (_writable_root, "not read-only"),
    ],
)
def test_the_policy_rejects_unsafe_manifests(
    built: dict[str, list[Obj]], breakage: Callable[[list[Obj]], None], message: str
) -> None:
    objects = copy.deepcopy(built["prod"])
    breakage(objects)
    problems = policy_violations(objects)
    assert problems
    assert all(message in p for p in problems), problems


def test_every_deployment_gets_the_environment_the_code_reads(
    built: dict[str, list[Obj]],
) -> None:
    known = read_names()
    maps = {c["metadata"]["name"]: c for c in of_kind(built["prod"], "ConfigMap")}
    for d in of_kind(built["prod"], "Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            names = {e["name"] for e in c.get("env", [])}
            for source in c.get("envFrom", []):
                names |= set(maps[source["configMapRef"]["name"]]["data"])
            assert required_names() <= names, required_names() - names
            assert names <= known, names - known
            secrets = {e["name"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
            expected = {
                "KAFKA_SASL_PASSWORD",
                "POSTGRES_PASSWORD",
                "FULFIL_AUTH_IDEMPOTENCY_SECRET",
                "FULFIL_PRIVACY_KEKS",
            }
            if d["metadata"]["name"] == "shipping":
                expected.add("FULFIL_CARRIER_WEBHOOK_SECRETS")
            assert secrets == expected
            assert names & secret_names() == secrets
            assert all("value" not in e for e in c["env"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_names_its_identity_provider_and_the_kit_accepts_it(
    built: dict[str, list[Obj]], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The base's placeholder provider (.invalid) never reaches a cluster, and each service's
    ConfigMap plus its idempotency secret is a valid, non-dev AuthSettings."""
    for d in of_kind(built[overlay], "Deployment"):
        env = container_environment(built[overlay], d["spec"]["template"]["spec"]["containers"][0])
        url = env["FULFIL_AUTH_JWKS_URL"]["value"]
        assert url.startswith("https://"), url
        assert GENERATE.AUTH_PLACEHOLDER not in url + env["FULFIL_AUTH_ISSUER"]["value"]
        for name, entry in env.items():
            if name.startswith("FULFIL_AUTH_") and "value" in entry:
                monkeypatch.setenv(name, str(entry["value"]))
        monkeypatch.setenv("FULFIL_AUTH_IDEMPOTENCY_SECRET", "s" * 32)
        settings = AuthSettings()
        assert not settings.dev
        assert not settings.dev_issuer
        assert settings.jwks_url == url


def test_every_secret_the_pods_reference_is_documented(built: dict[str, list[Obj]]) -> None:
    """The platform creates these Secrets (no values in the repo): docs/deploy.md says which."""
    docs = (REPO / "docs/deploy.md").read_text()
    strimzi = set(access.users())  # Strimzi's KafkaUser secrets, named after the user
    for d in of_kind(built["prod"], "Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            for e in c["env"]:
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] not in strimzi:
                    name = ref["name"].replace(d["metadata"]["name"], "<service>")
                    assert f"`{name}`" in docs or f"`{ref['name']}`" in docs, ref
                    assert f"`{ref['key']}`" in docs, ref


def test_the_read_models_are_a_deployment_of_their_own_on_customer_services_database(
    built: dict[str, list[Obj]],
) -> None:
    """ADR 17: probes, a disruption budget and scaling on their group's lag like the services;
    customer-service's database and role; no caller but Prometheus, no identity provider."""
    objects = {(o["kind"], o["metadata"]["name"]): o for o in built["prod"]}
    deployment = objects[("Deployment", "read-models")]
    pod = deployment["spec"]["template"]["spec"]
    [main] = pod["containers"]
    assert main["command"] == ["fulfil-read-models"]
    assert {
        main["livenessProbe"]["httpGet"]["path"],
        main["readinessProbe"]["httpGet"]["path"],
    } == {
        "/livez",
        "/readyz",
    }
    [migrate] = pod["initContainers"]
    assert migrate["command"][-1] == "customer_service.projections.main:create_app"
    config = objects[("ConfigMap", "fulfil-read-models")]["data"]
    assert config["POSTGRES_DBNAME"] == config["POSTGRES_USER"] == "fulfil_customer_service"
    password = next(e for e in main["env"] if e["name"] == "POSTGRES_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"]["name"] == "fulfil-customer-service-postgres"
    assert ("PodDisruptionBudget", "read-models") in objects
    [trigger] = objects[("ScaledObject", "read-models")]["spec"]["triggers"]
    assert trigger["metadata"]["consumerGroup"] == "customer-service-projections"
    policy = objects[("NetworkPolicy", "read-models")]["spec"]
    callers = [c for rule in policy["ingress"] for c in rule["from"]]
    assert callers == [{"namespaceSelector": {"matchLabels": {"fulfil.io/monitoring": "true"}}}]
    assert not [r for r in policy["egress"] if "ipBlock" in str(r) or "identity" in str(r)]
    user = objects[("KafkaUser", "read-models")]["spec"]["authorization"]["acls"]
    assert not [a for a in user if a["resource"]["type"] == "transactionalId"]
    written = {a["resource"]["name"] for a in user if "Write" in a["operations"]}
    assert written == {topics.dlq(t, "customer-service-projections") for t in topics.ALL}


def test_the_processes_off_the_orders_path_request_less_cpu(built: dict[str, list[Obj]]) -> None:
    """ADR 29: a quarter of the CPU request in the base and in prod, so a contended node gives
    the order's path the CPU first (cgroup `cpu.weight` follows the request); which ones are
    off the path is derived from the wiring (`BACKGROUND_CONSUMERS`)."""
    requests = {
        o["metadata"]["name"]: o["spec"]["template"]["spec"]["containers"][0]["resources"][
            "requests"
        ]["cpu"]
        for o in built["prod"]
        if o["kind"] == "Deployment"
    }
    assert {name for name, cpu in requests.items() if cpu == "125m"} == OFF_PATH
    assert {cpu for name, cpu in requests.items() if name not in OFF_PATH} == {"500m"}
    base = {d.name: GENERATE.resources(d)["requests"]["cpu"] for d in GENERATE.DEPLOYABLES}
    assert {name for name, cpu in base.items() if cpu == "25m"} == OFF_PATH
    assert {cpu for name, cpu in base.items() if name not in OFF_PATH} == {"100m"}
