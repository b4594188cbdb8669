"""The hub: the market and the relay between requestors and providers.

Its pure modules (no sockets, no files, no clock reads, no threads) are here; its I/O is in
:mod:`kiln.hub.io`.

- ``core``: :class:`~kiln.hub.core.HubCore`, the hub as a state machine (frames in, actions out):
  entry points and dispatch, built in layers: ``base`` (shared state and output), ``leases``
  (rent, market, destroy), ``relay`` (requests, replies and stream frames under translated ids),
  ``store_link`` (the image store's requests, pushes and blobs), ``sessions`` (hello, resume, restart)
- ``flow``: the one flow-control mechanism (per-receiver budgets, stream credit, batched grants)
- ``deadlines``: when the hub gives up waiting (unanswered requests, stalled streams)
- ``peers``: what it knows of each connection, lease and request
- ``actions``: what it asks the I/O layer to do; ``records``: what a restart must not lose
- ``access``: who may join as what; ``gate``: caps on connections per address
- ``market``: offers, prices, placement (strategies, caps, allow/deny), reservations;
  ``reputation``: what the hub observed of each provider, and its score
- ``catalog``: the image store's contents and rules; ``images``: one stored image, its owners, tenants
"""
