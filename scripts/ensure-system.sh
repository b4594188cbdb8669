#!/usr/bin/env bash
# What only the tests need from the system besides Python packages: Debian's chromium for the
# browser test, docker-registry for the provider's --pull test, openssl for the TLS tests (they
# make their own CA), sqlite3 for the docs' backup commands (run on a live hub.db). Docker, the
# provider's volumes and Node.js have scripts of their own (ensure-docker.sh, ensure-volumes.sh,
# ensure-node.sh); the agent's compiler comes from PyPI.
set -euo pipefail

need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
