"""Real Kiln processes on this machine for tests, demos and benchmarks (not part of the SDK).

- ``cluster``: a local hub and providers as real processes (:class:`LocalCluster`)
- ``simulated``: many simulated providers in one process, for scale tests and benchmarks of the hub
"""

from kiln.testing.cluster import DEFAULT_IMAGE, LocalCluster, Process

__all__ = ["DEFAULT_IMAGE", "LocalCluster", "Process"]
