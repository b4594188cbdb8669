"""Real Kiln processes on this machine for tests, demos and benchmarks (not part of the SDK)."""

from kiln.testing.cluster import DEFAULT_IMAGE, LocalCluster, Process

__all__ = ["DEFAULT_IMAGE", "LocalCluster", "Process"]
