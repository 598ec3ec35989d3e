"""One real gRPC unary call through a TLS endpoint, to prove a benchmark path answers gRPC OK
before h2load counts it (h2load counts HTTP 200s and cannot see grpc-status).

Usage: grpc_check.py PORT CA_FILE METHOD PAYLOAD_HEX. Exits 0 and prints the status, or exits 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc


def main() -> int:
    port, ca_file, method, payload = sys.argv[1], Path(sys.argv[2]), sys.argv[3], bytes.fromhex(sys.argv[4])
    credentials = grpc.ssl_channel_credentials(ca_file.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        try:
            reply = channel.unary_unary(method)(payload, timeout=10)
        except grpc.RpcError as e:
            print(f"127.0.0.1:{port}: {e.code().name} {e.details()}")
            return 1
    print(f"127.0.0.1:{port}: OK, {len(reply)} bytes back")
    return 0


if __name__ == "__main__":
    sys.exit(main())
