"""The requestor SDK: connect to a hub, rent activities, send files, run commands, fetch results.

Its public names are re-exported by :mod:`kiln` (``kiln.connect``, ``kiln.Activity``, ...).
It builds on :mod:`kiln.protocol` and the shared :mod:`kiln.connection`, never on the hub
or the provider.
"""
