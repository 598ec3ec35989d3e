"""The config loader: every mistake named with the file, the key path and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import EMBEDDED_DEFAULT, Address, GrpcUpstream, load_config_file, parse_config
from proxy.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent

MINIMAL = """
[tls]
server_name = "edge.example"

[[listeners]]
name = "web"
protocol = "https"
listen = "127.0.0.1:8443"
upstream = "http://127.0.0.1:8081"
"""


def problems_of(text: str) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "edge.toml", Path("/etc/edge"))
    return caught.value.problems


def test_embedded_default_is_valid_and_loopback_only() -> None:
    config = parse_config(EMBEDDED_DEFAULT)
    assert {listener.listen.host for listener in config.listeners} == {"127.0.0.1"}
    assert config.admin.listen.host == "127.0.0.1"
    assert [listener.protocol for listener in config.listeners] == ["https", "http-redirect"]
    web = config.listeners[0]
    assert web.protocol == "https" and web.grpc_upstream is not None, "browsers, API and gRPC share one port"


def test_example_config_is_valid() -> None:
    config = load_config_file(REPO / "config" / "edge.toml")
    assert config.tls.cert_dir.is_absolute()


def test_relative_paths_are_relative_to_the_config_file() -> None:
    config = parse_config(MINIMAL, "edge.toml", Path("/etc/edge"))
    assert config.tls.cert_dir == Path("/etc/edge/certs")
    assert config.admin.token_file == Path("/etc/edge/state/admin.token")


def test_single_upstream_routes_everything() -> None:
    listener = parse_config(MINIMAL).listeners[0]
    assert [(r.path_prefix, r.host, str(r.upstream)) for r in listener.routes] == [("/", None, "http://127.0.0.1:8081")]


def test_listener_overrides_server_limits() -> None:
    config = parse_config(
        MINIMAL.replace('upstream = "http', 'upstream_timeout = 5\nupstream = "http')
        + "\n[server]\nupstream_timeout = 30\nconnect_timeout = 2\n"
    )
    assert config.server.limits.upstream_timeout == 30
    assert config.listeners[0].limits.upstream_timeout == 5
    assert config.listeners[0].limits.connect_timeout == 2


def test_unknown_key_is_an_error_with_a_suggestion() -> None:
    assert problems_of(MINIMAL + "\n[server]\ndrain_secnds = 3\n") == (
        "edge.toml: server.drain_secnds: unknown key; did you mean 'drain_seconds'?",
    )


def test_unknown_top_level_section() -> None:
    assert problems_of(MINIMAL + "\n[logging]\nlevel = 1\n")[0].startswith("edge.toml: logging: unknown key")


def test_wrong_type() -> None:
    assert problems_of(MINIMAL + '\n[server]\nworkers = "two"\n') == ("edge.toml: server.workers: must be an integer, not a string 'two'",)


def test_bool_is_not_a_number() -> None:
    assert problems_of(MINIMAL + "\n[server]\ndrain_seconds = true\n") == (
        "edge.toml: server.drain_seconds: must be an integer or a number, not true or false True",
    )


@pytest.mark.parametrize(
    ("listen", "reason"),
    [
        ("8443", "write it as host:port, for example 127.0.0.1:8443"),
        ("127.0.0.1:99999", "the port '99999' is not a number from 0 to 65535"),
        ("::1:8443", "an IPv6 address is written in brackets, for example [::1]:8443"),
        ("bad host:80", "'bad host' is neither an IP address nor a host name"),
    ],
)
def test_bad_host_port(listen: str, reason: str) -> None:
    assert problems_of(MINIMAL.replace('"127.0.0.1:8443"', f'"{listen}"')) == (
        f"edge.toml: listeners[0] (web).listen: '{listen}' is not a valid address: {reason}",
    )


def test_ipv6_listen() -> None:
    assert parse_config(MINIMAL.replace('"127.0.0.1:8443"', '"[::1]:8443"')).listeners[0].listen.host == "::1"


def test_duplicate_names_and_addresses_and_every_problem_at_once() -> None:
    text = MINIMAL + MINIMAL.split("\n", 4)[4].replace("[[listeners]]", "[[listeners]]") + "\n[tls.bad]\n"
    text = (
        MINIMAL
        + """
[[listeners]]
name = "web"
protocol = "https"
listen = "127.0.0.1:8443"
upstream = "http://127.0.0.1:8082"

[[listeners]]
name = "api"
protocol = "https"
listen = "127.0.0.1:9443"
  [[listeners.routes]]
  path_prefix = "/v1/"
"""
    )
    assert problems_of(text) == (  # in the order the keys stand in the file
        "edge.toml: listeners[1].name: 'web' is already the name of listeners[0]",
        "edge.toml: listeners[1] (web).listen: 127.0.0.1:8443 is already used by listeners[0] (web)",
        'edge.toml: listeners[2] (api).routes[0].upstream: is required, for example "http://127.0.0.1:8081"',
    )


def test_listener_on_the_admin_address() -> None:
    assert problems_of(MINIMAL.replace('"127.0.0.1:8443"', '"127.0.0.1:9900"')) == (
        "edge.toml: listeners[0] (web).listen: 127.0.0.1:9900 is already used by admin.listen",
    )


def test_bad_min_version_and_watch() -> None:
    assert problems_of(MINIMAL.replace("[tls]", '[tls]\nmin_version = "1.1"\nwatch = "inotify"')) == (
        'edge.toml: tls.min_version: must be "1.2" or "1.3", not \'1.1\'',
        'edge.toml: tls.watch: must be "events", "poll" or "off", not \'inotify\'',
    )


def test_names_required() -> None:
    assert problems_of(MINIMAL.replace('server_name = "edge.example"', "")) == (
        'edge.toml: tls: set server_name (for example "vertex.example.com") or ip_addresses (for example ["10.0.0.5"])',
    )


def test_https_listener_needs_an_upstream() -> None:
    assert problems_of(MINIMAL.replace('upstream = "http://127.0.0.1:8081"', "")) == (
        'edge.toml: listeners[0] (web): an https listener needs an upstream ("http://127.0.0.1:8081") or [[listeners.routes]]',
    )


def test_grpc_listener_keys_are_checked_per_protocol() -> None:
    text = (
        MINIMAL
        + '\n[[listeners]]\nname = "g"\nprotocol = "grpc"\nlisten = "127.0.0.1:9443"\n'
        + 'upstream = "grpcs://127.0.0.1:50051"\nredirect_port = 3\n'
    )
    assert problems_of(text) == (
        "edge.toml: listeners[1] (g).redirect_port: unknown key; allowed keys: "
        + ", ".join(
            sorted(
                {
                    "name",
                    "protocol",
                    "listen",
                    "upstream",
                    "upstream_ca",
                    "max_connection_age",
                    "connect_timeout",
                    "upstream_timeout",
                    "idle_timeout",
                    "handshake_timeout",
                    "header_timeout",
                    "max_body_bytes",
                }
            )
        ),
    )


def test_invalid_toml() -> None:
    found = problems_of("[server\n")
    assert len(found) == 1 and found[0].startswith("edge.toml: not valid TOML: ")


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_check_config_prints_every_problem_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(MINIMAL + "\n[server]\nworkers = 0\nbogus = 1\n")
    result = _cli("check-config", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [  # in the order the keys stand in the file
        f"{path}: server.workers: must be from 1 to 64, not 0",
        f"{path}: server.bogus: unknown key; allowed keys: connect_timeout, drain_seconds, handshake_timeout, header_timeout, "
        "idle_timeout, max_body_bytes, upstream_timeout, workers",
    ]
    assert "Traceback" not in result.stderr


def test_check_config_ok_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(MINIMAL)
    ok = _cli("check-config", "--config", str(path))
    assert ok.returncode == 0 and ok.stdout.startswith(f"{path}: ok")
    missing = _cli("check-config", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"{tmp_path / 'nope.toml'}: cannot read the config file: No such file or directory"


def test_bad_usage_exits_2() -> None:
    assert _cli("frobnicate").returncode == 2


def test_the_removed_grpcio_mode_names_the_relay() -> None:
    text = MINIMAL + '\n[[listeners]]\nname = "g"\nprotocol = "grpc"\nlisten = "127.0.0.1:9443"\nupstream = "127.0.0.1:50051"\n'
    assert problems_of(text + 'mode = "grpcio"\nmax_message_bytes = 8388608\n') == (
        "edge.toml: listeners[1] (g).mode: gRPC listeners always relay each HTTP/2 connection to the upstream as bytes "
        "(the grpcio mode is gone); delete this key",
        "edge.toml: listeners[1] (g).max_message_bytes: gRPC listeners relay messages as bytes, so the client's and "
        "the upstream's own limits apply; delete this key",
    )


ONE_PORT = MINIMAL.replace(
    'upstream = "http://127.0.0.1:8081"', 'upstream = "http://127.0.0.1:8081"\ngrpc_upstream = "grpcs://10.0.0.7:443"'
)


def test_an_https_listener_takes_a_grpc_upstream_with_its_ca_and_connection_age() -> None:
    config = parse_config(ONE_PORT + 'grpc_upstream_ca = "ca.pem"\nmax_connection_age = 60\n', "edge.toml", Path("/etc/edge"))
    web = config.listeners[0]
    assert web.protocol == "https"
    assert web.grpc_upstream == GrpcUpstream(Address("10.0.0.7", 443), tls=True, ca_file=Path("/etc/edge/ca.pem"))
    assert web.max_connection_age == 60


def test_grpc_upstream_is_refused_on_other_listeners_naming_the_key() -> None:
    text = (
        MINIMAL
        + '\n[[listeners]]\nname = "g"\nprotocol = "grpc"\nlisten = "127.0.0.1:9443"\nupstream = "127.0.0.1:50051"\n'
        + 'grpc_upstream = "127.0.0.1:50052"\n'
        + '\n[[listeners]]\nname = "r"\nprotocol = "http-redirect"\nlisten = "127.0.0.1:8080"\ngrpc_upstream = "127.0.0.1:50052"\n'
    )
    assert problems_of(text) == (
        "edge.toml: listeners[1] (g).grpc_upstream: only an https listener takes a grpc_upstream: it serves gRPC on the HTTPS port",
        "edge.toml: listeners[2] (r).grpc_upstream: only an https listener takes a grpc_upstream: it serves gRPC on the HTTPS port",
    )


def test_grpc_upstream_problems_name_their_keys() -> None:
    plain = MINIMAL.replace('upstream = "http://127.0.0.1:8081"', 'upstream = "http://127.0.0.1:8081"\ngrpc_upstream = "127.0.0.1:50051"')
    assert problems_of(plain + 'grpc_upstream_ca = "ca.pem"\n') == (
        'edge.toml: listeners[0] (web).grpc_upstream_ca: applies only to a TLS grpc_upstream ("grpcs://host:port")',
    )
    assert problems_of(MINIMAL + "max_connection_age = 60\n") == (
        "edge.toml: listeners[0] (web).max_connection_age: applies only with a grpc_upstream (to the gRPC connections on this port)",
    )
    bad = MINIMAL.replace('upstream = "http://127.0.0.1:8081"', 'upstream = "http://127.0.0.1:8081"\ngrpc_upstream = "nowhere"')
    assert problems_of(bad) == (
        "edge.toml: listeners[0] (web).grpc_upstream: 'nowhere' is not a valid gRPC upstream: "
        "write it as host:port, for example 127.0.0.1:8443",
    )


def test_log_section_defaults_to_text_lines_and_no_access_log() -> None:
    log = parse_config(MINIMAL).log
    assert (log.format, log.access, log.access_file) == ("text", "off", None)


def test_access_file_is_relative_to_the_config_file() -> None:
    text = MINIMAL + '\n[log]\nformat = "json"\naccess = "json"\naccess_file = "logs/access.log"\n'
    log = parse_config(text, "edge.toml", Path("/etc/edge")).log
    assert (log.format, log.access, log.access_file) == ("json", "json", Path("/etc/edge/logs/access.log"))


def test_log_section_mistakes_are_named() -> None:
    text = MINIMAL + '\n[log]\nformat = "yaml"\naccess = true\naccess_fle = "a.log"\n'
    assert problems_of(text) == (
        'edge.toml: log.format: must be "text" or "json", not \'yaml\'',
        "edge.toml: log.access: must be a string, not true or false True",
        "edge.toml: log.access_fle: unknown key; did you mean 'access_file'?",
    )


def test_problems_come_in_the_order_their_keys_stand_in_the_file() -> None:
    text = """
[[listeners]]
name = "web"
protocol = "https"
listen = "127.0.0.1:99999"
upstream = "http://127.0.0.1:8081"
idle_timeout = -1

[tls]
watch = "inotify"
server_name = "edge.example"
min_version = "1.1"

[server]
workers = 0
"""
    assert problems_of(text) == (
        "edge.toml: listeners[0] (web).listen: '127.0.0.1:99999' is not a valid address: the port '99999' is not a number from 0 to 65535",
        "edge.toml: listeners[0] (web).idle_timeout: must be more than zero, not -1.0",
        'edge.toml: tls.watch: must be "events", "poll" or "off", not \'inotify\'',
        'edge.toml: tls.min_version: must be "1.2" or "1.3", not \'1.1\'',
        "edge.toml: server.workers: must be from 1 to 64, not 0",
    )
