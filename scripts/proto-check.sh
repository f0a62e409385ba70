#!/usr/bin/env bash
# proto/ is the schema authority: lint it, refuse breaking changes against
# main's proto/ (when main has one), and fail if the committed generated code
# differs from what `make proto` produces.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF="uv run --frozen --no-sync buf"
(cd proto && $BUF lint)
if git rev-parse --verify --quiet main:proto >/dev/null; then
  (cd proto && $BUF breaking --against "../.git#branch=main,subdir=proto")
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r libs/khala-proto/src/openagents "$tmp/committed"
./scripts/gen-proto.sh
if ! diff -r "$tmp/committed" libs/khala-proto/src/openagents >/dev/null; then
  diff -r "$tmp/committed" libs/khala-proto/src/openagents | head -40
  rm -rf libs/khala-proto/src/openagents && cp -r "$tmp/committed" libs/khala-proto/src/openagents
  echo "generated code is out of date: run 'make proto' and commit the result" >&2
  exit 1
fi
# The browser client's payload tables are generated from the same descriptors.
uv run --frozen --no-sync python clients/web/tools/gen_schemas.py --check
echo "proto-check: lint, breaking and generated code OK"
