"""``kiln service print-unit hub|provider``: systemd units that run the hub and a provider.

Each runs ``kiln ROLE --config /etc/kiln/ROLE.toml`` with the ``kiln`` of the interpreter
that prints it (a virtual environment's too), restarts it on failure but not on a usage
error (exit 2: the config needs fixing first), and stops it with SIGTERM, which both take
as a clean stop (exit 0). The provider's token comes from a file through systemd's
``LoadCredential=``, so it shows neither in ``ps`` nor in the unit; the provider runs as
root beside Docker, in the host's mount namespace (its volumes' loop mounts must be seen
by dockerd, so no ``PrivateTmp=`` or ``ProtectSystem=`` there).
"""

from __future__ import annotations

import os
import shlex
import sys
import sysconfig
from pathlib import Path
from typing import Final, Literal

Role = Literal["hub", "provider"]
CONFIG: Final = "/etc/kiln/{role}.toml"

HUB: Final = """\
# kiln-hub.service: the Kiln hub (the market, the relay, the image store).
#   kiln service print-unit hub > /etc/systemd/system/kiln-hub.service
#   systemctl daemon-reload && systemctl enable --now kiln-hub
# It reads every flag from {config}, e.g.:
#   host = "0.0.0.0"
#   port = 7465
#   data-dir = "/var/lib/kiln/hub"          # hub.db (credentials, activities, usage) and the image store
#   tls-cert = "/etc/kiln/hub.pem"          # serve wss:// (both, or neither)
#   tls-key = "/etc/kiln/hub.key"
# Credentials: kiln token create --role provider --name p1 --data-dir /var/lib/kiln/hub
# (a shared token instead: token-file = "/etc/kiln/hub.token" in the config, mode 0600).
[Unit]
Description=Kiln hub: the market, the relay and the image store
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
ExecStart={kiln} hub --config {config}
Environment=PYTHONUNBUFFERED=1
StateDirectory=kiln
Restart=on-failure
RestartSec=2
RestartPreventExitStatus=2
KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec=30
LimitNOFILE=65536
NoNewPrivileges=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""

PROVIDER: Final = """\
# kiln-provider.service: a Kiln provider, sharing this machine's Docker engine through a hub.
#   kiln service print-unit provider > /etc/systemd/system/kiln-provider.service
#   kiln token create --role provider --name p1 --data-dir /var/lib/kiln/hub   # on the hub: prints the token
#   install -m 600 /dev/null /etc/kiln/provider.token   # then write the token in it
#   kiln doctor --config {config} --token-file /etc/kiln/provider.token   # what it needs, checked
#   systemctl daemon-reload && systemctl enable --now kiln-provider
# It reads every flag from {config}, e.g.:
#   hub = "wss://hub.example:7465"
#   name = "p1"
#   ca = "/etc/kiln/ca.pem"                 # the CA that signed the hub's certificate, if not a public one
#   cpus = 4
#   memory = "8GiB"
#   storage = "50GiB"
#   image-cache = "20GiB"
#   data-dir = "/var/lib/kiln/provider"
#   label = {{ zone = "eu" }}
#   price = "start=0.01,cpu-hour=0.20,env-hour=0.05"   # credits; absent: free
# and its token from /etc/kiln/provider.token (LoadCredential: no other user reads it, no process list shows it).
# No PrivateTmp=, ProtectSystem= or other mount namespace: dockerd must see the volumes it loop-mounts.
[Unit]
Description=Kiln provider: shares this machine's Docker engine through a hub
After=docker.service network-online.target
Requires=docker.service
Wants=network-online.target

[Service]
Type=exec
LoadCredential=token:/etc/kiln/provider.token
ExecStart={kiln} provider --config {config} --token-file ${{CREDENTIALS_DIRECTORY}}/token
Environment=PYTHONUNBUFFERED=1
StateDirectory=kiln
Restart=on-failure
RestartSec=5
RestartPreventExitStatus=2
KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec=90

[Install]
WantedBy=multi-user.target
"""


def kiln_command() -> list[str]:
    """How this installation runs ``kiln``: the script beside the running interpreter (a venv's
    ``bin/kiln``), else the interpreter with ``-m kiln.cli``."""
    script = Path(sysconfig.get_path("scripts")) / "kiln"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "kiln.cli"]


def unit(role: Role) -> str:
    """The unit file of ``role``, running this installation's ``kiln``."""
    template = HUB if role == "hub" else PROVIDER
    return template.format(kiln=shlex.join(kiln_command()), config=CONFIG.format(role=role))
