"""sslyze, the TLS scanner operators are audited with, finds the HTTPS and the gRPC port compliant
with Mozilla's "intermediate" configuration under `tls.policy = "default"`.

sslyze pins an older cryptography than the edge uses, so it runs from a venv of its own,
`.venv-sslyze`, that `make test` creates (`make sslyze-venv`); without it this test is skipped.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from proxy.certstore.pem import Material
from tests.support.pki import SERVER_IP, SERVER_NAME, Issuer, pem
from tests.support.policy import running_edge
from tests.support.process import REPO

SSLYZE = REPO / ".venv-sslyze" / "bin" / "sslyze"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SSLYZE.exists(), reason="run `make sslyze-venv` (part of `make test`)")]


def scannable_material() -> tuple[Material, bytes]:
    """A root, an intermediate and a leaf as public CAs issue them (key identifiers, which
    sslyze's path validation needs as browsers do, and a lifetime within Mozilla's 366 days),
    and the root."""
    root = Issuer("Scan Root CA")
    leaf = root.intermediate("Scan Issuing CA").leaf(SERVER_NAME, ips=(SERVER_IP,))
    return Material(leaf.cert_pem, leaf.key_pem, pem(root.cert)), pem(root.cert)


async def sslyze(target: str, ca_file: Path, out: Path) -> tuple[int, str, dict[str, object]]:
    process = await asyncio.create_subprocess_exec(
        str(SSLYZE),
        "--mozilla_config=intermediate",
        f"--certinfo_ca_file={ca_file}",
        f"--json_out={out}",
        target,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    text, _ = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode is not None
    return process.returncode, text.decode(errors="replace"), json.loads(out.read_text())


@pytest.mark.timeout(600)
async def test_sslyze_finds_https_and_grpc_ports_compliant_with_mozilla_intermediate(tmp_path: Path) -> None:
    material, root = scannable_material()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(root)
    async with running_edge(tmp_path, "default", material=material) as running:
        for name, port in running.ports.items():
            code, text, report = await sslyze(f"{SERVER_NAME}:{port}{{{SERVER_IP}}}", ca_file, tmp_path / f"{name}.json")
            assert code == 0, f"{name}:\n{text}"
            assert f"{SERVER_NAME}:{port}: OK - Compliant." in text, text
            results = report["server_scan_results"]
            assert isinstance(results, list) and results[0]["scan_status"] == "COMPLETED", text
