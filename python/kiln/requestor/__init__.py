"""The requestor SDK: connect to a hub, rent activities, send files, run commands, fetch results.

Its public names are re-exported by :mod:`kiln` (``kiln.connect``, ``kiln.Activity``, ...).
It builds on :mod:`kiln.protocol` and the shared :mod:`kiln.connection`, never on the hub
or the provider.

- ``client``: the requestor connected to a hub (rent, release, the market); ``activity``: one rented container
- ``ports``: a connection to a port of a container as asyncio streams, local forwards, published URLs
- ``executor``: split, run, combine: a worker farmed over many inputs, by the rules of ``scheduling``
  (the job scheduler, pure: tasks, slots, attempts, blame, bans); ``progress``: a job's live progress bar;
  ``report``: a job's attempts and its HTML timeline (pure)
- ``folders``: a folder's tar stream from a container, extracted safely; ``images``: ``docker save`` archives read
"""
