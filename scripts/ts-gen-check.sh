#!/usr/bin/env bash
# clients/ts/src/gen is generated from proto/ (buf + protoc-gen-es, `npm run gen`
# in clients/ts); fail if the committed code differs from what it produces.
set -euo pipefail
cd "$(dirname "$0")/../clients/ts"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r src/gen "$tmp/committed"
npm run --silent gen
if ! diff -r "$tmp/committed" src/gen >/dev/null; then
  diff -r "$tmp/committed" src/gen | head -40
  rm -rf src/gen && cp -r "$tmp/committed" src/gen
  echo "clients/ts/src/gen is out of date: run 'npm run gen' in clients/ts and commit the result" >&2
  exit 1
fi
