"""What the canary and the start-up policy proof cost: `tls_preparer` (the per-version TLS
objects) with and without the canary's handshakes, and `prove_policy` for one HTTPS and one gRPC
listener, per policy and key type. In memory only: no socket. Bounded: 50 rounds each.

    .venv/bin/python bench/tls_canary.py
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from proxy.app import check_policy
from proxy.certstore.store import Snapshot
from proxy.certstore.validate import _valid
from proxy.tlsmaterial import ALPN_LISTS, TlsObjects, material_context, tls_preparer
from tests.support.pki import Issuer, new_key
from tests.support.policy import policy_config

ROUNDS = 50


def per_round(action: object) -> float:
    assert callable(action)
    start = time.perf_counter()
    for _ in range(ROUNDS):
        action()
    return (time.perf_counter() - start) / ROUNDS * 1000


def objects_only(snapshot: Snapshot, policy: str) -> TlsObjects:
    return TlsObjects({alpn: material_context(snapshot, "1.2", alpn, policy) for alpn in ALPN_LISTS})


def main() -> None:
    root = Issuer("Bench Root CA")
    for kind in ("ec", "rsa"):
        leaf = root.leaf("edge.example", key=new_key(kind))
        snapshot = Snapshot(1, "directory", _valid([leaf.certificate], leaf.key, (), None), datetime.now(UTC))
        for policy in ("default", "fips"):
            with_canary = per_round(lambda p=policy, s=snapshot: tls_preparer("1.2", p)(s))
            without = per_round(lambda p=policy, s=snapshot: objects_only(s, p))
            extra = with_canary - without
            print(f"{kind:3} {policy:7}: TLS objects {without:5.1f} ms, with the canary {with_canary:5.1f} ms (+{extra:.1f} ms)")
    for policy in ("default", "fips"):
        config = policy_config(policy, Path("."))
        print(f"check-config's policy proof, {policy}, 2 listeners: {per_round(lambda c=config: check_policy(c)):.1f} ms")


if __name__ == "__main__":
    main()
