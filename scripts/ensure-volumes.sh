#!/usr/bin/env bash
# What a provider needs beside Docker (scripts/ensure-docker.sh): it makes a volume per container,
# a sparse ext4 file loop-mounted, so e2fsprogs (mkfs.ext4), mount and loop devices (/dev/loop-control).
# Installs what apt can give; says what it cannot.
set -euo pipefail

if ! command -v mkfs.ext4 >/dev/null 2>&1 || ! command -v mount >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq e2fsprogs mount >/dev/null
fi

if [ ! -e /dev/loop-control ]; then
    modprobe loop 2>/dev/null || true
fi
if [ ! -e /dev/loop-control ]; then
    echo "ensure-volumes: no /dev/loop-control: the provider mounts a volume per container (modprobe loop, as root)" >&2
    exit 1
fi
