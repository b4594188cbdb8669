#!/usr/bin/env bash
# Debian's PostgreSQL server, for the tests of the hub's state on PostgreSQL: they start servers of
# their own (kiln.testing.postgres: initdb and pg_ctl in a temporary folder, on a loopback port), so
# the cluster the package makes and starts is not used, only the binaries in /usr/lib/postgresql/*/bin.
set -euo pipefail

if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
