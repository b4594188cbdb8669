"""Kiln for tests, demos and benchmarks (not part of the SDK): real Kiln processes on this machine
(:mod:`~kiln.testing.cluster`), many simulated providers in one process (:mod:`~kiln.testing.simulated`),
sessions joined through the hub's core in memory (:mod:`~kiln.testing.loopback`), and a wait for a
container's server to listen (:func:`~kiln.testing.ports.listening`)."""

from kiln.testing.cluster import DEFAULT_IMAGE, LocalCluster, Process
from kiln.testing.loopback import FakeClock, Loopback
from kiln.testing.ports import listening

__all__ = ["DEFAULT_IMAGE", "FakeClock", "LocalCluster", "Loopback", "Process", "listening"]
