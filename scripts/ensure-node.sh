#!/usr/bin/env bash
# Node.js >= 20 and npm, for js-client (its tests, its tarball). Installs Debian's when missing.
set -euo pipefail

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
    echo "ensure-node: js-client needs Node.js >= 20, found $(node --version)" >&2
    exit 1
fi
