"""The ``kiln`` command: run a hub or a provider, look at the market, run one command, check a machine.

::

    kiln hub --host 127.0.0.1 --port 7465                              # or: --config /etc/kiln/hub.toml
    kiln provider --hub ws://127.0.0.1:7465 --name p1 --cpus 2 --memory 2GiB --image-cache 20GiB
    kiln provider --config /etc/kiln/provider.toml --token-file /etc/kiln/provider.token
    kiln hub --tls-cert hub.pem --tls-key hub.key                      # serves wss://
    kiln provider --hub wss://hub.example:7465 --ca ca.pem --name p1   # --ca on every command that dials
    export KILN_HUB=ws://127.0.0.1:7465 KILN_TOKEN=T                   # or KILN_CA: for every command that dials
    kiln market --json
    kiln activities --all --token-file admin.token                     # every requestor's activities (an admin's)
    kiln run kiln-busybox:latest -- sh -c 'echo hi'                    # exits with the command's code
    kiln image busybox
    kiln image push wordcount:1                                        # or: --file wordcount.tar
    kiln image ls
    kiln image rm wordcount:1
    kiln token create --role provider --name p1      # prints the token; ls and revoke manage them
    kiln doctor --hub ws://127.0.0.1:7465            # what a provider needs here, one line per check
    kiln service print-unit provider                 # a systemd unit

The parts: :mod:`~kiln.cli.parser` (the flags), :mod:`~kiln.cli.settings` (flags, the
``--config`` file, the environment), :mod:`~kiln.cli.app` (``main``: dispatch and exit codes),
:mod:`~kiln.cli.commands`, :mod:`~kiln.cli.serve` (hub and provider), :mod:`~kiln.cli.doctor`,
:mod:`~kiln.cli.units` (systemd) and :mod:`~kiln.cli.output` (tables and ``--json``).
"""

from kiln.cli.app import main
from kiln.cli.parser import build_parser

__all__ = ["build_parser", "main"]
