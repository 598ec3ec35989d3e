"""Edge configs for tests, built as Python dicts and written as TOML: the file an operator would
write, so every test config goes through the same parser as theirs. A test changes a key in
the dict, never the text.

Nothing here knows what a test asserts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w

from proxy.config import Config, parse_config
from tests.support.pki import SERVER_IP, SERVER_NAME

Table = dict[str, Any]


def edge_config(
    *,
    http_upstream: int,
    grpc_upstream: int,
    watch: str = "events",
    admin_port: int = 0,
    https_port: int = 0,
    grpc_port: int = 0,
    server: Table | None = None,
    admin: Table | None = None,
    tls: Table | None = None,
    log: Table | None = None,
    web: Table | None = None,
    listeners: list[Table] | None = None,
) -> Table:
    """A complete config on loopback: an HTTPS listener "web" and a gRPC listener "grpc" (port 0
    unless told), the admin API on `admin_port`, certificates in `certs`, state in `state`.
    `server`, `admin`, `tls` and `log` add keys to those tables (or replace them), `web` to the
    "web" listener; `listeners` are further `[[listeners]]` tables."""
    tls_table = {"cert_dir": "certs", "state_dir": "state", "server_name": SERVER_NAME, "ip_addresses": [SERVER_IP], "watch": watch}
    config: Table = {
        "server": {"drain_seconds": 1, **(server or {})},
        "tls": {**tls_table, **(tls or {})},
        "admin": {"listen": f"{SERVER_IP}:{admin_port}", "token_file": "state/admin.token", **(admin or {})},
        "listeners": [
            {
                "name": "web",
                "protocol": "https",
                "listen": f"{SERVER_IP}:{https_port}",
                "upstream": f"http://{SERVER_IP}:{http_upstream}",
                **(web or {}),
            },
            {"name": "grpc", "protocol": "grpc", "listen": f"{SERVER_IP}:{grpc_port}", "upstream": f"{SERVER_IP}:{grpc_upstream}"},
            *(listeners or []),
        ],
    }
    if log is not None:
        config["log"] = log
    return config


def toml(config: Table) -> str:
    return tomli_w.dumps(config)


def write_config(directory: Path, config: Table) -> Path:
    """`directory`/edge.toml holding `config`; relative paths in it resolve against `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "edge.toml"
    path.write_text(toml(config))
    return path


def load(directory: Path, config: Table) -> Config:
    """`config` written to `directory`/edge.toml and parsed as `edge-proxy run` would."""
    path = write_config(directory, config)
    return parse_config(path.read_text(), source=str(path), base_dir=directory)


def parse(config: Table, base_dir: Path = Path(".")) -> Config:
    """`config` parsed as if it were a file in `base_dir`, without writing one."""
    return parse_config(toml(config), source=str(base_dir / "edge.toml"), base_dir=base_dir)


def one_port(grpc_upstream: int) -> Table:
    """The keys that make the "web" listener serve gRPC on its HTTPS port too."""
    return {"grpc_upstream": f"{SERVER_IP}:{grpc_upstream}"}
