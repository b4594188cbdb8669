"""``kiln hub`` and ``kiln provider``: the two commands that run until they are stopped.

SIGTERM (what systemd sends) and SIGINT (Ctrl-C) are a clean stop for both, and a clean
stop exits 0: the hub saves its store and closes its peers (going away, 1001); the provider
says goodbye to the hub (1001: the hub logs it at INFO), then removes its containers.
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import logging
import signal

from kiln.cli.settings import HubSettings, ProviderSettings, fee_ppm, listen_address
from kiln.protocol.errors import UsageError

log = logging.getLogger("kiln.provider")


async def hub(settings: HubSettings) -> int:
    from kiln.hub.io.server import run as run_hub
    from kiln.hub.io.tls import server_context

    publish_host: str | None = None
    publish_port: int | None = None
    if settings.publish_listen is not None:
        publish_host, publish_port = listen_address(settings.publish_listen)
    tls = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        tls = server_context(settings.tls_cert, settings.tls_key)
    try:
        await run_hub(
            settings.host,
            settings.port,
            token=settings.token,
            data_dir=settings.data_dir,
            db=settings.db,
            advertise=settings.advertise,
            store_limit=settings.store_limit,
            max_image_size=settings.max_image_size,
            max_expansion=settings.max_expansion,
            create_timeout=settings.create_timeout,
            destroy_timeout=settings.destroy_timeout,
            credit_timeout=settings.credit_timeout,
            max_activities=settings.max_activities,
            grace=settings.grace,
            ssl=tls,
            per_address=settings.max_connections_per_address,
            waiting_per_address=settings.max_waiting_per_address,
            per_credential=settings.max_connections_per_credential,
            failed_hellos=settings.max_failed_hellos,
            usage_retention=settings.usage_retention,
            fee_ppm=fee_ppm(settings.fee),
            capture_interval=settings.capture_interval,
            public_metrics=settings.public_metrics,
            publish_host=publish_host,
            publish_port=publish_port,
        )
    except OSError as e:
        # The port is taken, the address is not this machine's, the data folder cannot be made: a sentence.
        if e.filename is not None:
            raise UsageError(f"the hub cannot use {e.filename}: {e.strerror or e}") from e
        why = {
            errno.EADDRINUSE: "the port is taken (by another hub?): give another --port",
            errno.EADDRNOTAVAIL: "the address is not one of this machine's: give another --host",
            errno.EACCES: "a port below 1024 needs root: give another --port",
        }.get(e.errno or 0, str(e.strerror or e))
        raise UsageError(f"the hub cannot listen on {settings.host}:{settings.port}: {why}") from e
    return 0


def require_provider_extra() -> None:
    """The provider's commands need docker-py, which only ``kiln[provider]`` installs."""
    try:
        importlib.import_module("docker")
    except ModuleNotFoundError as e:
        raise UsageError("this command needs the provider's dependencies: pip install 'kiln[provider]'") from e


async def provider(settings: ProviderSettings) -> int:
    require_provider_extra()
    from kiln_provider.config import ProviderConfig
    from kiln_provider.docker_adapter import DockerAdapter
    from kiln_provider.image_cache import default_data_dir
    from kiln_provider.outbound import PolicyError, load_policy
    from kiln_provider.runtime import ProviderRuntime

    try:
        outbound = load_policy(settings.outbound, settings.outbound_private, settings.hosts)
    except (PolicyError, OSError) as e:  # a file changed since the settings read it
        raise UsageError(f"cannot read the outbound policy: {e}") from e
    config = ProviderConfig(
        hubs=settings.hub,
        name=settings.name,
        cpus=settings.cpus,
        memory=settings.memory,
        storage=settings.storage,
        labels=dict(settings.label),
        token=settings.token,
        pids_limit=settings.pids_limit,
        stream_idle_timeout=settings.stream_idle_timeout,
        name_wait=settings.name_wait,
        image_cache=settings.image_cache,
        data_dir=settings.data_dir,
        pull=settings.pull,
        allow_root=settings.allow_root,
        ca=settings.ca,
        grace=settings.grace,
        max_containers=settings.max_containers,
        images=tuple(settings.images),
        price=settings.price if settings.price is not None and not settings.price.free else None,
        metrics_port=settings.metrics_port,
        metrics_host=settings.metrics_host,
        outbound=outbound,
    )
    main = asyncio.current_task()
    assert main is not None
    stopping: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        if not stopping:
            log.info("stopping (%s): leaving the hub, removing this provider's containers", sig.name)
        stopping.append(sig)
        main.cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    try:
        volumes = (settings.data_dir or default_data_dir(settings.name)) / "volumes"
        adapter = await asyncio.to_thread(DockerAdapter, settings.name, volumes=volumes)
        # No agent binary, or no way to bound what containers write, is a clear error now, not at the first rent.
        log.info("task containers run the agent %s", adapter.agent)
        await asyncio.to_thread(adapter.volumes.check)
        await ProviderRuntime(config, adapter).run()
    except asyncio.CancelledError:
        if not stopping:
            raise
        main.uncancel()
    log.info("stopped")
    return 0
