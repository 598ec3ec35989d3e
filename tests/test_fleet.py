"""A fleet converging on one certificate: three real `edge-proxy run` processes, one per
simulated replica, each with its own Secret volume that the "kubelet" updates a few hundred ms
after the previous one's, as a Secret update reaches the pods of a Deployment one by one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.fleet import kubelet_update, seconds_until_served, secret_files
from tests.support.load import spread_requests
from tests.support.pki import SERVER_IP, SERVER_NAME, Issuer
from tests.support.probes import handshake_fingerprint, metric
from tests.support.process import EdgeProcess
from tests.support.web import upstream

pytestmark = pytest.mark.slow

REPLICAS = 3
STAGGER_SECONDS = 0.3  # between two replicas' volume updates
PROMISED_SECONDS = 2.0  # issue 8: every replica serves the new fingerprint within 2 s of its own update


def replica_process(directory: Path, http_upstream: int) -> EdgeProcess:
    """One pod: `admin.uploads` left at "auto" and a short drain, so stopping is quick."""
    return EdgeProcess(directory, http_upstream, uploads="auto", drain_seconds=2.0)


async def test_every_replica_serves_the_new_secret_within_2_s_and_no_request_fails(tmp_path: Path, root: Issuer) -> None:
    old, new = (root.leaf(SERVER_NAME, ips=(SERVER_IP,)) for _ in range(2))
    async with upstream() as http_upstream:
        replicas = [replica_process(tmp_path / f"pod-{i}", http_upstream.port) for i in range(REPLICAS)]
        for replica in replicas:
            replica.directory.mkdir()
            kubelet_update(replica.cert_dir, secret_files(old, root))
        try:
            await asyncio.gather(*(replica.start() for replica in replicas))
            ports = [replica.https_port for replica in replicas]
            assert [await handshake_fingerprint(port) for port in ports] == [old.fingerprint] * REPLICAS

            stop = asyncio.Event()
            clients = [asyncio.create_task(spread_requests(ports, root, stop, fresh=fresh)) for fresh in (True, False)]
            await asyncio.sleep(0.5)  # traffic on the old certificate first
            probes = []
            for replica in replicas:
                renamed_at = await asyncio.to_thread(kubelet_update, replica.cert_dir, secret_files(new, root))
                probe = asyncio.to_thread(seconds_until_served, replica.https_port, new.fingerprint, renamed_at)
                probes.append(asyncio.ensure_future(probe))
                await asyncio.sleep(STAGGER_SECONDS)
            delays = await asyncio.gather(*probes)
            await asyncio.sleep(0.5)  # and on the new one after the rollout
            stop.set()
            fresh_connections, kept_alive = await asyncio.gather(*clients)

            assert all(delay <= PROMISED_SECONDS for delay in delays), f"seconds from ..data rename to serving: {delays}"
            assert fresh_connections.failures == [] and kept_alive.failures == []
            for tally in (fresh_connections, kept_alive):
                assert set(tally.ok_by_port) == set(ports), "the client did not reach every replica"
            for replica in replicas:
                await _assert_converged(replica, new.fingerprint)
        finally:
            await asyncio.gather(*(replica.stop() for replica in replicas))


async def _assert_converged(replica: EdgeProcess, fingerprint: str) -> None:
    for _ in range(5):  # fresh handshakes only: a resumed session would show no certificate
        assert await handshake_fingerprint(replica.https_port) == fingerprint
    status, certificate = await replica.admin("GET", "/api/v1/certificate")
    assert status == 200
    assert (certificate["version"], certificate["source"], certificate["fingerprint_sha256"]) == (2, "directory", fingerprint)
    assert certificate["last_error"] is None  # the atomic swap was never seen half-done
    _, metrics = await replica.admin("GET", "/metrics")
    assert metric(metrics, "edge_certificate_rejections_total", source="directory") == 0


async def test_an_upload_to_one_replica_is_refused_and_points_to_the_secret(tmp_path: Path, root: Issuer) -> None:
    """With the default `admin.uploads = "auto"` a replica on a Secret volume refuses uploads,
    so no replica can drift from the others."""
    serving, uploaded = (root.leaf(SERVER_NAME, ips=(SERVER_IP,)) for _ in range(2))
    async with upstream() as http_upstream:
        replica = replica_process(tmp_path, http_upstream.port)
        kubelet_update(replica.cert_dir, secret_files(serving, root))
        try:
            await replica.start()
            body = {"certificate": uploaded.cert_pem.decode(), "key": uploaded.key_pem.decode()}
            status, answer = await replica.admin("POST", "/api/v1/certificate", json=body)
            assert status == 405
            assert "Kubernetes Secret mounted at" in answer["error"] and str(replica.cert_dir) in answer["error"]
            assert await handshake_fingerprint(replica.https_port) == serving.fingerprint
        finally:
            await replica.stop()
