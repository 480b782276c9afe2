"""Regenerate worker_pb2.py / worker_pb2_grpc.py from worker.proto (needs grpcio-tools)."""
from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc


def main() -> int:
    repo = Path(__file__).resolve().parents[2]
    return protoc.main([
        "grpc_tools.protoc", f"-I{repo}", f"--python_out={repo}", f"--grpc_python_out={repo}",
        "qengine/proto/worker.proto",
    ])


if __name__ == "__main__":
    sys.exit(main())
