"""Kiln: run work in containers on other people's machines.

::

    async with kiln.connect("ws://127.0.0.1:7465") as requestor:
        async with requestor.rent("kiln-busybox:latest", kiln.Demand(cpus=1, memory="256MiB")) as act:
            await act.send_bytes(b"hello", "/golem/input/a.txt")
            result = await act.run(["sh", "-c", "wc -c < /golem/input/a.txt"], timeout=30)
"""

__version__ = "0.1.0"

from kiln.activity import Activity, Result
from kiln.demand import Demand
from kiln.errors import (
    ActivityError,
    Cancelled,
    CommandTimeout,
    ConnectionClosed,
    ContainerFailed,
    FileNotFound,
    ImageNotFound,
    InvalidPath,
    KilnError,
    NoMatch,
    ProtocolError,
    ProviderLost,
    RemoteError,
    TransferFailed,
    Unauthorized,
    UnsupportedVersion,
    UsageError,
)
from kiln.executor import Job, JobEvent, JobSummary, RetryTask, TaskFailed
from kiln.progress import ProgressView
from kiln.protocol.codes import ErrorCode
from kiln.requestor import Requestor, connect

__all__ = [
    "Activity",
    "ActivityError",
    "Cancelled",
    "CommandTimeout",
    "ConnectionClosed",
    "ContainerFailed",
    "Demand",
    "ErrorCode",
    "FileNotFound",
    "ImageNotFound",
    "InvalidPath",
    "Job",
    "JobEvent",
    "JobSummary",
    "KilnError",
    "NoMatch",
    "ProgressView",
    "ProtocolError",
    "ProviderLost",
    "RemoteError",
    "Requestor",
    "Result",
    "RetryTask",
    "TaskFailed",
    "TransferFailed",
    "Unauthorized",
    "UnsupportedVersion",
    "UsageError",
    "__version__",
    "connect",
]
