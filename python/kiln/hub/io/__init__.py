"""The hub's I/O: what does sockets, files, SQLite and threads around the pure core (:mod:`kiln.hub`).

- ``server``: the websockets server that pumps every frame through the core and carries out its actions
- ``connections``: per connection, its gate count, bounded outbox, and the log's rate limit
- ``state``: credentials, sessions, leases and usage in SQLite
- ``blobs``: the image store's files (verified blobs, image records)
- ``store``: the image store's service: pushes taken in, blobs served, images listed, removed, shared
- ``tls``: the server's TLS context
"""
