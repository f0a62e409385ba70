#!/usr/bin/env bash
# Regenerate libs/khala-proto from proto/ (pb2, pyi, grpc). Deterministic: same
# proto + same locked grpcio-tools => same bytes, which `make proto-check` relies on.
set -euo pipefail
cd "$(dirname "$0")/.."
out=libs/khala-proto/src
rm -rf "$out/openagents"
mkdir -p "$out"
mapfile -t files < <(cd proto && find openagents -name '*.proto' | LC_ALL=C sort)
(cd proto && uv run --no-sync python -m grpc_tools.protoc -I . \
  --python_out="../$out" --pyi_out="../$out" --grpc_python_out="../$out" "${files[@]}")
# Make every generated directory a regular package.
find "$out/openagents" -type d -exec sh -c 'for d; do : > "$d/__init__.py"; done' sh {} +
: > "$out/openagents/py.typed"
