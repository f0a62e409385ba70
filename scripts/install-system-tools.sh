#!/usr/bin/env bash
# System tools the checks need that PyPI does not ship: promtool (Debian
# package `prometheus`). Installed with apt when missing and possible;
# otherwise `make deploy-check` names what to install.
set -euo pipefail
command -v promtool >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing promtool (Debian package prometheus)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package may start a Prometheus server; the checks only need promtool.
  pkill -x prometheus 2>/dev/null || true
else
  echo "note: promtool not found; install Debian's 'prometheus' package for 'make deploy-check'" >&2
fi
