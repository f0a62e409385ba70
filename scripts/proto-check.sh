#!/usr/bin/env bash
# proto/ is the schema authority: lint it, refuse breaking changes against the
# last released proto image (proto/released/khala-v1.binpb, made with
# `buf build -o` when a version ships), and fail if the committed generated
# code or the generated tables of docs/protocol.md differ from proto/.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF="uv run --frozen --no-sync buf"
(cd proto && $BUF lint)
(cd proto && $BUF breaking --against released/khala-v1.binpb)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r libs/khala-proto/src/openagents "$tmp/committed"
./scripts/gen-proto.sh
if ! diff -r -x __pycache__ "$tmp/committed" libs/khala-proto/src/openagents >/dev/null; then
  diff -r -x __pycache__ "$tmp/committed" libs/khala-proto/src/openagents | head -40
  rm -rf libs/khala-proto/src/openagents && cp -r "$tmp/committed" libs/khala-proto/src/openagents
  echo "generated code is out of date: run 'make proto' and commit the result" >&2
  exit 1
fi
# The browser client's payload tables are generated from the same descriptors.
uv run --frozen --no-sync python clients/web/tools/gen_schemas.py --check
# The error-code and close-code tables of docs/protocol.md come from the enums.
uv run --frozen --no-sync python scripts/gen_protocol_docs.py --check
# The golden WebSocket messages of proto/fixtures/ come from scripts/gen_fixtures.py.
uv run --frozen --no-sync python scripts/gen_fixtures.py --check
echo "proto-check: lint, breaking and generated code OK"
