#!/usr/bin/env bash
# clients/ts/src/gen is generated from proto/ (buf + protoc-gen-es, `npm run gen`
# in clients/ts), and the dashboard's clients/web/dashboard/lib/khala-sdk.js is the
# SDK bundled by esbuild (`npm run bundle`); fail if either committed file differs
# from what those commands produce.
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
bundle=../web/dashboard/lib/khala-sdk.js
cp "$bundle" "$tmp/bundle.js"
npm run --silent bundle >/dev/null 2>&1
if ! cmp -s "$tmp/bundle.js" "$bundle"; then
  cp "$tmp/bundle.js" "$bundle"
  echo "clients/web/dashboard/lib/khala-sdk.js is out of date: run 'npm run bundle' in clients/ts and commit it" >&2
  exit 1
fi
