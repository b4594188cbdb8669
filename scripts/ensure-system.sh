#!/usr/bin/env bash
# What the tests need from the system besides Python packages: Debian's chromium for the
# browser test, docker-registry for the provider's --pull test, musl-tools for the agent (make agent), Node.js >= 20 for js-client,
# openssl for the TLS tests (they make their own CA), sqlite3 for the docs' backup commands (run on a live hub.db), e2fsprogs and loop devices for the provider's
# volumes (the storage a container rents). Installs what apt can give; says what it cannot.
set -euo pipefail

if ! command -v mkfs.ext4 >/dev/null 2>&1 || ! command -v mount >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq e2fsprogs mount >/dev/null
fi

if [ ! -e /dev/loop-control ]; then
    modprobe loop 2>/dev/null || true
fi
if [ ! -e /dev/loop-control ]; then
    echo "ensure-system: no /dev/loop-control: the provider mounts a volume per container (modprobe loop, as root)" >&2
    exit 1
fi

if [ ! -x /usr/bin/chromium ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

if ! command -v docker-registry >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null
fi

if ! command -v musl-gcc >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null
fi

if ! command -v openssl >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi

if ! command -v sqlite3 >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sqlite3 >/dev/null
fi

if ! command -v node >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
    echo "ensure-system: js-client needs Node.js >= 20, found $(node --version)" >&2
    exit 1
fi
