#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine: install Debian's docker.io
# and busybox-static when missing, then start dockerd (no bridge: task
# containers run with network none and files move through the Docker API).
set -euo pipefail

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
    exit 0
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
    # A killed dockerd leaves its pid file behind and the next one refuses to start.
    rm -f /var/run/docker.pid
    nohup dockerd --bridge=none --iptables=false >/var/log/kiln-dockerd.log 2>&1 &
fi

for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        exit 0
    fi
    sleep 0.5
done
echo "ensure-docker: dockerd did not come up; see /var/log/kiln-dockerd.log" >&2
tail -n 20 /var/log/kiln-dockerd.log >&2 || true
exit 1
