"""The `edge-proxy` command line: `run`, `check-config` and `cert check`.

Turns arguments into calls and errors into messages and exit codes (0 clean, 1 runtime
failure or refused material, 2 bad usage or bad config). No traceback for expected errors.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from proxy import __version__, logs
from proxy.certstore.pem import Material
from proxy.certstore.roots import system_roots
from proxy.certstore.validate import NamePolicy, ValidMaterial, san_names, validate_material
from proxy.config import Config, load_default_config
from proxy.errors import ConfigError, MaterialError, ProxyError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edge-proxy", description="TLS edge for HTTPS and gRPC with validated, atomic certificate swaps.")
    parser.add_argument("--version", action="version", version=f"edge-proxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run the edge")
    run.add_argument("--config", type=Path, help="config file (default: config/edge.toml if present, else the embedded default)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    check = commands.add_parser("check-config", help="validate a config file and print every problem")
    check.add_argument("--config", type=Path)

    cert = commands.add_parser("cert", help="certificate tools")
    cert_commands = cert.add_subparsers(dest="cert_command", required=True, parser_class=_Parser)
    cert_check = cert_commands.add_parser("check", help="validate certificate material exactly as the running edge would")
    cert_check.add_argument("--cert", type=Path, required=True, help="tls.crt: the leaf, then intermediates")
    cert_check.add_argument("--key", type=Path, required=True, help="tls.key: PKCS#8, PKCS#1 or SEC1, unencrypted")
    cert_check.add_argument("--ca", type=Path, help="ca.crt: the CA the chain must lead to (optional)")
    cert_check.add_argument("--config", type=Path, help="take server_name and ip_addresses from this config")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check-config":
            return _check_config(args.config)
        if args.command == "cert":
            return _cert_check(args.cert, args.key, args.ca, args.config)
        return _run(args)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def _load(config: Path | None) -> Config:
    return load_default_config(config, Path.cwd())


def _check_config(path: Path | None) -> int:
    config = _load(path)
    from proxy.app import check_policy

    check_policy(config)
    print(
        f"{config.source}: ok ({len(config.listeners)} listeners: "
        + ", ".join(f"{x.name} {x.protocol} {x.listen}" for x in config.listeners)
        + ")"
    )
    return 0


def _cert_check(cert: Path, key: Path, ca: Path | None, config_path: Path | None) -> int:
    config = _load(config_path)
    policy = NamePolicy(config.tls.server_name, config.tls.ip_addresses)
    problems: list[str] = []
    data: dict[str, bytes] = {}
    for label, path in (("certificate", cert), ("key", key), ("ca", ca)):
        if path is None:
            continue
        try:
            data[label] = path.read_bytes()
        except OSError as e:
            problems.append(f"{path}: cannot read the {label} file: {e.strerror or e}")
    if problems:
        _print_problems(problems)
        return 1
    material = Material(data["certificate"], data["key"], data.get("ca"))
    try:
        valid = validate_material(material, policy, datetime.now(UTC), system_roots())
        _canary(valid, config)
    except MaterialError as e:
        _print_problems(list(e.problems))
        return 1
    dns, ips = san_names(valid.leaf)
    leaf = valid.leaf
    print("ok: the edge would serve this certificate")
    print(f"  subject:     {leaf.subject.rfc4514_string()}")
    print(f"  issuer:      {leaf.issuer.rfc4514_string()}")
    print(f"  names:       {', '.join(dns + ips)}")
    print(f"  valid:       {leaf.not_valid_before_utc:%Y-%m-%d} to {leaf.not_valid_after_utc:%Y-%m-%d}")
    print(f"  chain:       {1 + len(valid.chain)} certificate(s){', verified up to ca.crt' if valid.ca else ''}")
    print(f"  fingerprint: {valid.fingerprint}")
    print(f"  tls policy:  {config.tls.policy} (a browser's TLS handshakes with it succeed)")
    return 0


def _canary(valid: ValidMaterial, config: Config) -> None:
    """The running edge's last step before it publishes: TLS objects under the config's
    policy, and the canary handshakes against them. Raises MaterialError."""
    from proxy.certstore.store import Snapshot
    from proxy.tlsmaterial import tls_preparer

    tls_preparer(config.tls.min_version, config.tls.policy)(Snapshot(1, "directory", valid, datetime.now(UTC)))


def _print_problems(problems: list[str]) -> None:
    print("refused: the edge would not serve this material", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    # grpc's core prints a line for every failed client handshake unless told otherwise; it
    # reads this once, when grpc is first imported (below, with the app).
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    config = _load(args.config)
    logs.configure(config.log.format, args.log_level)
    from proxy.app import run_edge  # imported late: `check-config` needs none of the servers

    try:
        return run_edge(config)
    except ConfigError:
        raise  # exit 2, every problem printed
    except ProxyError as e:
        logging.getLogger("proxy").error("%s", e)
        return 1
