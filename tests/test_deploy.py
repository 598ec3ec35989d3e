"""The deployment files in deploy/: offline checks that a broken manifest or unit fails `make test`.

Kubernetes manifests are validated against the API schemas (kubernetes-validate, strict: an
unknown or misspelt field fails) and rendered with kustomize where kubectl exists. The systemd
unit goes through `systemd-analyze verify` where systemd is installed. Beyond the schemas, the
pieces must fit together: the config the pods read, the Secret, the probes, the drain timing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from proxy.config import Config, parse_config

REPO = Path(__file__).resolve().parent.parent
KUBERNETES = REPO / "deploy" / "kubernetes"
SYSTEMD = REPO / "deploy" / "systemd"
UNIT = SYSTEMD / "edge-proxy.service"
# The preStop `sleep` action is on by default from Kubernetes 1.30; check the newest schemas too.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
PRESTOP_SLEEP_SINCE = "1.30"
WORKERS_GRACE_SECONDS = 5  # proxy/app.py: the main process waits drain_seconds + 5 s for its workers


def documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def manifests() -> list[dict[str, Any]]:
    return [document for path in sorted(KUBERNETES.glob("*.yaml")) if path.name != "kustomization.yaml" for document in documents(path)]


def one(kind: str, resources: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    found = [resource for resource in (resources or manifests()) if resource["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def kubernetes_config() -> Config:
    path = KUBERNETES / "edge.toml"
    return parse_config(path.read_text(), source=str(path))


def container() -> dict[str, Any]:
    containers = one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def mount_for(path: Path | PurePosixPath) -> tuple[dict[str, Any], dict[str, Any]]:
    """The volumeMount that holds `path` (the deepest), and its volume."""
    pod = one("Deployment")["spec"]["template"]["spec"]
    candidates = [m for m in container()["volumeMounts"] if PurePosixPath(path).is_relative_to(m["mountPath"])]
    assert candidates, f"nothing is mounted at {path}: the root file system is read-only"
    mount = max(candidates, key=lambda m: len(m["mountPath"]))
    (volume,) = (v for v in pod["volumes"] if v["name"] == mount["name"])
    return mount, volume


# --- Kubernetes: schemas ----------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_kubernetes_manifest_passes_the_api_schema_strictly(version: str) -> None:
    checked = []
    for resource in manifests():
        if resource["apiVersion"].startswith("cert-manager.io/"):
            continue  # a CRD: no built-in schema; see test_the_certificate_example_feeds_the_deployments_secret
        kubernetes_validate.validate(resource, version, strict=True)
        checked.append(resource["kind"])
    assert sorted(checked) == ["Deployment", "PodDisruptionBudget", "Service"]


def test_a_misspelt_field_fails_the_schema_check() -> None:
    """The check above catches what matters: a typo would otherwise be dropped by the API server."""
    deployment = one("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed")
def test_kustomize_renders_valid_resources_with_the_config_map() -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(KUBERNETES)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    resources = [document for document in yaml.safe_load_all(rendered.stdout) if document]
    for resource in resources:
        kubernetes_validate.validate(resource, KUBERNETES_VERSIONS[-1], strict=True)
    assert sorted(r["kind"] for r in resources) == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]
    config_map, deployment = one("ConfigMap", resources), one("Deployment", resources)
    assert config_map["data"]["edge.toml"] == (KUBERNETES / "edge.toml").read_text()
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    # The generated name carries a content hash: a changed edge.toml rolls the pods.
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"] != "edge-proxy-config"
    assert not deployment["spec"]["template"]["spec"]["containers"][0]["image"].startswith("edge-proxy:")


# --- Kubernetes: the pieces fit together ------------------------------------------------------


def test_the_pods_config_is_a_valid_edge_config() -> None:
    config = kubernetes_config()
    assert config.server.workers == 1  # the Deployment scales by replicas, one process per pod
    assert config.admin.uploads in ("auto", "off")  # never "on": an upload would reach one replica


def test_the_deployment_runs_replicas_as_non_root_on_a_read_only_root() -> None:
    deployment = one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] >= 2
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    security = container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (deployment["spec"]["selector"]["matchLabels"], one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert one("Service")["spec"]["selector"].items() <= labels.items()


def test_the_config_comes_from_the_config_map_the_command_names() -> None:
    command = container()["command"]
    assert command[:2] == ["edge-proxy", "run"]
    config_path = PurePosixPath(command[command.index("--config") + 1])
    mount, volume = mount_for(config_path)
    assert volume["configMap"]["name"] == "edge-proxy-config" and mount["readOnly"] is True
    generator = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["configMapGenerator"]
    assert generator == [{"name": "edge-proxy-config", "files": [config_path.name]}]


def test_the_certificate_secret_is_mounted_as_a_whole_directory_at_cert_dir() -> None:
    config = kubernetes_config()
    mount, volume = mount_for(config.tls.cert_dir)
    assert mount["mountPath"] == str(config.tls.cert_dir)
    assert "subPath" not in mount and "subPathExpr" not in mount, "a subPath mount never sees the Secret change"
    assert volume["secret"]["secretName"] == one("Certificate")["spec"]["secretName"]
    assert "items" not in volume["secret"], "items would fail the mount when cert-manager leaves out ca.crt"


def test_everything_the_edge_writes_is_on_an_empty_dir() -> None:
    config = kubernetes_config()
    # state_dir and the token; /tmp for the fallback temp file OpenSSL may load keys from.
    for path in (config.tls.state_dir, config.admin.token_file.parent, PurePosixPath("/tmp")):
        mount, volume = mount_for(path)
        assert "emptyDir" in volume and not mount.get("readOnly", False), path
    _, tmp = mount_for(PurePosixPath("/tmp"))
    assert tmp["emptyDir"]["medium"] == "Memory"  # private keys never touch the node's disk


def test_the_probes_ask_healthz_on_the_admin_port() -> None:
    config = kubernetes_config()
    ports = {port["name"]: port["containerPort"] for port in container()["ports"]}
    assert config.admin.listen.host == "0.0.0.0"  # the kubelet probes the pod's IP, not its loopback
    assert ports["admin"] == config.admin.listen.port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container()[probe]["httpGet"] == {"path": "/healthz", "port": "admin"}, probe


def test_the_grace_period_outlasts_the_prestop_sleep_and_the_drain() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    pre_stop = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + kubernetes_config().server.drain_seconds
    assert KUBERNETES_VERSIONS[0] == PRESTOP_SLEEP_SINCE


def test_the_service_exposes_every_listener_but_not_the_admin_port() -> None:
    config = kubernetes_config()
    container_ports = {port["name"]: port["containerPort"] for port in container()["ports"]}
    service_ports = {port["targetPort"]: port["port"] for port in one("Service")["spec"]["ports"]}
    assert "admin" not in service_ports
    exposed = {container_ports[name] for name in service_ports}
    assert exposed == {listener.listen.port for listener in config.listeners}
    by_protocol = {listener.protocol: listener for listener in config.listeners}
    https_name = next(name for name, port in container_ports.items() if port == by_protocol["https"].listen.port)
    # Redirects must send clients to the port they reach the edge on: the Service's, not the pod's.
    assert by_protocol["http-redirect"].redirect_port == service_ports[https_name]


def test_the_services_443_carries_browsers_api_and_grpc() -> None:
    """The platform is reached on 443 for all three: the listener behind it relays gRPC too."""
    web = next(listener for listener in kubernetes_config().listeners if listener.protocol == "https")
    container_ports = {port["containerPort"]: port["name"] for port in container()["ports"]}
    service_ports = {port["targetPort"]: port["port"] for port in one("Service")["spec"]["ports"]}
    assert service_ports[container_ports[web.listen.port]] == 443
    assert web.protocol == "https" and web.grpc_upstream is not None
    assert not [listener for listener in kubernetes_config().listeners if listener.protocol == "grpc"], "no second port for gRPC"


def test_the_certificate_example_feeds_the_deployments_secret() -> None:
    """cert-manager's CRD has no built-in schema, so its example is checked field by field."""
    certificate = one("Certificate")
    spec = certificate["spec"]
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    assert set(spec) <= {"secretName", "dnsNames", "ipAddresses", "duration", "renewBefore", "privateKey", "usages", "issuerRef"}
    server_name = kubernetes_config().tls.server_name
    assert server_name in spec["dnsNames"]
    assert "server auth" in spec["usages"]  # the edge refuses a leaf whose EKU lacks it
    assert spec["privateKey"]["encoding"] in ("PKCS8", "PKCS1")
    assert spec["privateKey"]["algorithm"] in ("ECDSA", "Ed25519") or spec["privateKey"]["size"] >= 2048
    assert spec["issuerRef"]["name"] and spec["issuerRef"]["kind"] in ("Issuer", "ClusterIssuer")
    assert re.fullmatch(r"\d+h", spec["renewBefore"]) and re.fullmatch(r"\d+h", spec["duration"])
    assert int(spec["renewBefore"][:-1]) < int(spec["duration"][:-1])


# --- systemd ----------------------------------------------------------------------------------


def unit_options(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values]}}; keys may repeat, as systemd allows."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{path}: {line!r} before any section"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def systemd_config() -> Config:
    path = SYSTEMD / "edge.toml"
    return parse_config(path.read_text(), source=str(path))


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", text)
    assert match, f"{text!r}: write seconds as 45s or minutes as 2min"
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


def unit_for_this_machine(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's console script, which verify requires
    to exist; everything else exactly as shipped."""
    edge_proxy = Path(sys.executable).parent / "edge-proxy"
    if not edge_proxy.exists():
        pytest.skip(f"{edge_proxy} is not installed (pip install -e .)")
    text = UNIT.read_text()
    assert text.count("/opt/edge-proxy/bin/edge-proxy ") == 1
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace("/opt/edge-proxy/bin/edge-proxy ", f"{edge_proxy} "))
    return copy


def test_the_systemd_config_is_a_valid_edge_config_serving_grpc_on_443() -> None:
    web = next(listener for listener in systemd_config().listeners if listener.protocol == "https")
    assert web.protocol == "https" and web.listen.port == 443 and web.grpc_upstream is not None


def test_the_unit_has_the_hardening_and_signals_the_edge_needs() -> None:
    service = unit_options(UNIT)["Service"]
    single = {key: values[-1] for key, values in service.items()}
    assert single["User"] == "edge-proxy" and single["Group"] == "edge-proxy"
    assert single["ProtectSystem"] == "strict"
    assert single["NoNewPrivileges"] == "yes"
    assert single["AmbientCapabilities"] == single["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert single["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert single["KillSignal"] == "SIGTERM"
    assert single["Restart"] == "on-failure"
    assert single["PrivateTmp"] == "yes"  # strict leaves /tmp read-only otherwise
    assert single["ExecStart"].endswith(" run --config /etc/edge-proxy/edge.toml")
    drain = systemd_config().server.drain_seconds
    assert seconds(single["TimeoutStopSec"]) > drain + WORKERS_GRACE_SECONDS


def test_the_unit_lets_the_edge_write_exactly_where_its_config_says() -> None:
    config = systemd_config()
    writable = [PurePosixPath(p) for values in unit_options(UNIT)["Service"]["ReadWritePaths"] for p in values.split()]
    wanted = [config.tls.state_dir, config.admin.token_file.parent]
    if config.admin.uploads != "off":
        wanted.append(config.tls.cert_dir)
    for path in wanted:
        assert any(PurePosixPath(path).is_relative_to(place) for place in writable), f"{path} is read-only under ProtectSystem=strict"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (no systemd here)")
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = unit_for_this_machine(tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 on an unknown key or a bad value, warning on stderr: any line about the unit fails.
    problems = [line for line in (result.stdout + result.stderr).splitlines() if unit.name in line]
    assert result.returncode == 0 and problems == [], result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (no systemd here)")
def test_the_unit_stays_well_hardened(tmp_path: Path) -> None:
    version = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True, timeout=30).stdout.split()
    if len(version) < 2 or not version[1].isdigit() or int(version[1]) < 250:
        pytest.skip("systemd-analyze security --offline needs systemd 250 or newer")
    unit = unit_for_this_machine(tmp_path)
    # Exposure on systemd's 0-10 scale, given in tenths: 2.5 and below is "OK".
    command = ["systemd-analyze", "security", "--offline=yes", "--threshold=25", "--no-pager", str(unit)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers is not installed (no systemd here)")
def test_the_sysusers_file_creates_the_units_user(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    conf = SYSTEMD / "edge-proxy.sysusers.conf"
    result = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(conf)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    user = unit_options(UNIT)["Service"]["User"][-1]
    entry = next(line for line in (tmp_path / "etc" / "passwd").read_text().splitlines() if line.startswith(f"{user}:"))
    assert entry.endswith("nologin"), entry  # no login shell
