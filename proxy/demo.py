"""`python -m proxy.demo`, what `make demo` runs: the edge on the embedded default config in front
of two small demo upstreams, then the URLs and three commands to try.

`python -m proxy.demo new-cert` makes the demo material those commands use. Nothing in the edge
imports this module; it only drives the same `serve` path that `edge-proxy run` takes.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import shlex
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import aiohttp
import grpc
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proxy.app import loop_factory, serve
from proxy.certstore.files import write_private
from proxy.certstore.pem import Material
from proxy.config import EMBEDDED_DEFAULT, Config, parse_config
from proxy.errors import ProxyError
from proxy.tasks import TaskSet

log = logging.getLogger("proxy.demo")

READY_TIMEOUT = 30.0


# --- the demo upstreams -----------------------------------------------------------------------


async def _show_request(request: web.Request) -> web.StreamResponse:
    """Answer with the request as it arrived here, so the edge's forwarding can be seen."""
    if request.path == "/ws" and request.headers.get("Upgrade", "").lower() == "websocket":
        return await _echo_websocket(request)
    body = await request.read()
    shown = {
        "upstream": "edge-proxy demo HTTP app",
        "method": request.method,
        "path": request.path_qs,
        "http_version": f"{request.version.major}.{request.version.minor}",
        "client": request.remote,
        "headers": {name: ", ".join(request.headers.getall(name)) for name in request.headers},
        "body_bytes": len(body),
    }
    if "text/plain" in request.headers.get("Accept", "") and "json" not in request.headers.get("Accept", ""):
        lines = [f"{request.method} {request.path_qs} HTTP/{shown['http_version']}"]
        lines += [f"{name}: {value}" for name, value in request.headers.items()]
        return web.Response(text="\n".join(lines) + f"\n\n({len(body)} body bytes)\n")
    return web.json_response(shown, dumps=partial(json.dumps, indent=2))


async def _echo_websocket(request: web.Request) -> web.WebSocketResponse:
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    async for message in socket:
        if message.type == aiohttp.WSMsgType.TEXT:
            await socket.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await socket.send_bytes(message.data)
    return socket


class _GrpcEcho:
    """Every method of every service, with raw bytes (no generated code): each request message
    comes back unchanged, and the trailing metadata names the method that was called."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return grpc.stream_stream_rpc_method_handler(partial(self._echo, details.method))

    async def _echo(self, method: str, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for message in requests:
            yield message
        context.set_trailing_metadata((("echo-method", method),))


class DemoUpstreams:
    """The HTTP app and the gRPC echo server the embedded default config routes to."""

    def __init__(self, http_port: int, grpc_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.http_port = http_port
        self.grpc_port = grpc_port
        self._runner: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None

    async def start(self) -> None:
        """Raises OSError when a port is taken (nothing is left running then)."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", _show_request)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.http_port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.http_port = int(runner.addresses[0][1])
        server = grpc.aio.server(handlers=(_GrpcEcho(),))
        try:
            port = server.add_insecure_port(f"{self.host}:{self.grpc_port}")
        except RuntimeError as e:  # how grpcio reports a port it cannot bind
            await self.stop()
            raise OSError(f"the demo gRPC upstream cannot listen on {self.host}:{self.grpc_port}: {e}") from e
        await server.start()
        self._grpc = server
        self.grpc_port = port

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(0)
            self._grpc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# --- running the demo -------------------------------------------------------------------------


def demo_config(workdir: Path) -> Config:
    """The embedded default config with its relative paths (certs/, state/) under `workdir`."""
    return parse_config(EMBEDDED_DEFAULT, source="<embedded default>", base_dir=workdir)


def _upstream_ports(config: Config) -> tuple[int, int]:
    http = next(route.upstream.port for cfg in config.listeners if cfg.protocol == "https" for route in cfg.routes)
    grpc_upstreams = [cfg.upstream for cfg in config.listeners if cfg.protocol == "grpc"]
    grpc_upstreams += [cfg.grpc_upstream for cfg in config.listeners if cfg.protocol == "https" and cfg.grpc_upstream is not None]
    return http, grpc_upstreams[0].address.port


async def run_demo(config: Config, *, announce: Callable[[str], None] = print) -> int:
    """Start the upstreams, then the edge exactly as `edge-proxy run` does (signals included);
    print the banner once the admin API reports healthy. Returns the exit code."""
    http_port, grpc_port = _upstream_ports(config)
    # The watched directory exists from the start, so the drop command has a place to write.
    config.tls.cert_dir.mkdir(parents=True, exist_ok=True)
    upstreams = DemoUpstreams(http_port, grpc_port)
    try:
        await upstreams.start()
    except OSError as e:
        log.error("cannot start the demo upstreams: %s (is another demo running?)", e.strerror or e)
        return 1
    tasks = TaskSet()
    tasks.spawn(_announce_when_ready(config, announce), "announce")
    try:
        return await serve(config)
    finally:
        await tasks.close()
        await upstreams.stop()


async def _announce_when_ready(config: Config, announce: Callable[[str], None]) -> None:
    url = f"http://{config.admin.listen}/healthz"
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
    async with aiohttp.ClientSession() as session:
        while asyncio.get_running_loop().time() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        announce(banner(config))
                        return
            except aiohttp.ClientError:
                pass  # not listening yet
            await asyncio.sleep(0.1)
    log.warning("the edge did not report healthy within %.0f s; see the log above", READY_TIMEOUT)


def _shown(path: Path) -> str:
    """A path as short as it can be while still working from the current directory."""
    try:
        text = str(path.relative_to(Path.cwd()))
    except ValueError:
        text = str(path)
    return shlex.quote(text)


def banner(config: Config) -> str:
    """The URLs and the three copy-paste commands, for this config."""
    listen = {cfg.protocol: cfg.listen for cfg in config.listeners}
    http_port, grpc_port = _upstream_ports(config)
    https, admin = listen["https"], config.admin.listen
    grpc_listen = listen.get("grpc", https)  # one port: gRPC clients (ALPN h2) reach the echo on the HTTPS port
    rows = [
        ("HTTPS", f"https://{https}/", f"-> demo HTTP app on 127.0.0.1:{http_port}, which answers with the request it got"),
        ("gRPC", str(grpc_listen), f"-> demo gRPC echo on 127.0.0.1:{grpc_port}: any method, raw bytes"),
    ]
    if "http-redirect" in listen:
        rows.append(("redirect", f"http://{listen['http-redirect']}/", "-> HTTPS"))
    rows += [
        ("admin", f"http://{admin}/", "the admin page; also /api/v1/certificate, /metrics, /healthz"),
        ("token", _shown(config.admin.token_file), "paste it into the admin page"),
        ("watching", _shown(config.tls.cert_dir) + "/", "for tls.crt, tls.key and ca.crt"),
    ]
    width = max(len(row[1]) for row in rows)
    new_cert = f"{_shown(Path(sys.executable))} -m proxy.demo new-cert --workdir {_shown(config.tls.cert_dir.parent)}"
    ca = _shown(config.tls.state_dir / "demo-ca" / "ca.crt")
    auth = f'-H "Authorization: Bearer $(cat {_shown(config.admin.token_file)})"'
    return "\n".join(
        [
            "",
            "edge-proxy demo is running. Ctrl-C stops it.",
            "",
            *(f"  {label:<9} {where:<{width}}  {what}" for label, where, what in rows),
            "",
            "Try, in another terminal in this directory:",
            "",
            "  # 1. a request through the HTTPS listener (-k: the self-signed default serves until you bring a certificate)",
            f"  curl -sk 'https://{https}/hello?from=demo'",
            "",
            "  # 2. drop a certificate into the watched directory, then connect trusting only its CA",
            f"  {new_cert} && sleep 2 && curl -s --cacert {ca} https://{https}/hello",
            "",
            "  # 3. upload a certificate with somebody else's key: refused with 422, the serving one stays",
            f"  {new_cert} --json --wrong-key | curl -s -w '\\nHTTP %{{http_code}}\\n' {auth}"
            f" -H 'Content-Type: application/json' --data-binary @- http://{admin}/api/v1/certificate",
            "",
        ]
    )


# --- demo material ------------------------------------------------------------------------------


def _demo_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The demo CA in `directory`, made on first use so curl or a browser can keep trusting it."""
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _sign("edge-proxy demo CA", key.public_key(), key, ca=True, days=365, names=())
    write_private(key_path, _key_pem(key))
    write_private(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return certificate, key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _sign(
    subject: str, public_key: ec.EllipticCurvePublicKey, ca_key: ec.EllipticCurvePrivateKey, *, ca: bool, days: int, names: Sequence[str]
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-proxy demo CA")]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # tolerate a little clock skew
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def new_material(config: Config, *, wrong_key: bool = False) -> Material:
    """A fresh leaf for the config's names, signed by the demo CA; `wrong_key` pairs it with an
    unrelated key, the mistake the edge must refuse."""
    ca_cert, ca_key = _demo_ca(config.tls.state_dir / "demo-ca")
    key = ec.generate_private_key(ec.SECP256R1())
    names = [name for name in (config.tls.server_name, *config.tls.ip_addresses) if name]
    leaf = _sign(names[0], key.public_key(), ca_key, ca=False, days=90, names=names)
    if wrong_key:
        key = ec.generate_private_key(ec.SECP256R1())
    return Material(
        cert_pem=leaf.public_bytes(serialization.Encoding.PEM),
        key_pem=_key_pem(key),
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
    )


def drop_material(cert_dir: Path, material: Material) -> None:
    """Copy the files in as an operator would, each replaced whole (key first, like most tools)."""
    write_private(cert_dir / "tls.key", material.key_pem)
    write_private(cert_dir / "tls.crt", material.cert_pem, 0o644)
    if material.ca_pem is not None:
        write_private(cert_dir / "ca.crt", material.ca_pem, 0o644)


def _new_cert(args: argparse.Namespace) -> int:
    config = demo_config(args.workdir.resolve())
    material = new_material(config, wrong_key=args.wrong_key)
    if args.json:
        assert material.ca_pem is not None
        body = {"certificate": material.cert_pem.decode(), "key": material.key_pem.decode(), "ca": material.ca_pem.decode()}
        print(json.dumps(body))
        return 0
    drop_material(config.tls.cert_dir, material)
    print(f"wrote tls.crt, tls.key and ca.crt into {config.tls.cert_dir}", file=sys.stderr)
    return 0


# --- command line ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m proxy.demo", description="Run the edge with demo upstreams on 127.0.0.1.")
    parser.add_argument("--workdir", type=Path, default=Path("."), help="where certs/ and state/ live (default: here)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command")
    new_cert = commands.add_parser("new-cert", help="make demo material signed by the demo CA and drop it into certs/")
    new_cert.add_argument("--workdir", type=Path, default=argparse.SUPPRESS, help="where certs/ and state/ live")
    new_cert.add_argument("--json", action="store_true", help="print an admin API upload body instead of writing files")
    new_cert.add_argument("--wrong-key", action="store_true", help="pair the certificate with an unrelated key")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "new-cert":
        return _new_cert(args)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    config = demo_config(args.workdir.resolve())
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(run_demo(config, announce=lambda text: print(text, flush=True)))
    except ProxyError as e:
        log.error("%s", e)
        return 1
    except KeyboardInterrupt:  # a Ctrl-C before the edge's own signal handlers are in place
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
