#!/usr/bin/env bash
# System tools the checks need that PyPI does not ship: promtool (Debian
# package `prometheus`) and Chromium (the dashboard e2e test drives Debian's
# /usr/bin/chromium with Playwright; never `playwright install`). Installed
# with apt when missing and possible; otherwise this names what to install.
set -euo pipefail
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# Node.js and npm: the browser client's and the TypeScript SDK's tests (make test-web, test-ts).
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The prometheus package may start a server; the checks only need promtool.
  pkill -x prometheus 2>/dev/null || true
else
  echo "note: missing ${missing[*]} (Debian packages): promtool for 'make deploy-check'," \
    "chromium for the browser e2e tests, nodejs/npm for make test-web and test-ts" >&2
fi
