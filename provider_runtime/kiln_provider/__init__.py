"""The Kiln provider: a hub session that runs activities as hardened Docker containers.

Its modules, by job:

- ``runtime``: :class:`~kiln_provider.runtime.ProviderRuntime`, the session with the hub (dial,
  offer, serve, report usage, dial again; containers kept for a restarted hub within a grace period);
- ``config``: :class:`~kiln_provider.config.ProviderConfig`, the settings the process takes;
- ``handlers``: the hub's requests (create, exec, connect, upload, download, destroy) and the containers;
- ``netns``: sockets made in a container's network namespace (its loopback, reached from the host);
- ``ports``: a ``connect``, carried both ways between the hub's streams and a port of the container;
- ``outbound``: the operator's outbound policy and the proxy's rules (pure); ``proxy``: a
  container's outbound proxy, served inside its namespace;
- ``image_supply``: the images creates run (loaded from the hub's store, pulled), evicted past a budget;
- ``image_cache``: the record of the images loaded, and which to evict (no Docker);
- ``image_archive``: an image's blobs as the tar ``docker load`` takes (no Docker);
- ``offering``: which local images are offered (pure rules);
- ``threads``: the threads of Docker's blocking calls, and the one bridge for chunks to and from them;
- ``docker_adapter``: Docker, wrapped (the only module that imports ``docker``);
- ``download``: a download's stream out of Docker's tar archive of a path;
- ``volume``: a container's storage, a filesystem of the rented size, and uploads written into it;
- ``procfs``: what ``/proc`` and the cgroup files say of a container's processes (CPU time, memory, user);
- ``metrics``: the provider's counts, its Prometheus metrics (``--metrics-port``) and what the hub's
  ``usage`` (1.6) reports of its containers;
- ``agent`` and ``agent_protocol``: the channel to the agent in every container, and its wire format;
- ``agent_binary``: which ``kiln-agent`` binary containers run, checked to be a static ELF;
- ``busybox``: the build context of the ``kiln-busybox`` test image;
- ``errors``: the provider's failures, and the one place they become ``error`` replies.
"""
