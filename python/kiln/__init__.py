"""Kiln: run work in containers on other people's machines.

::

    async with kiln.connect("ws://127.0.0.1:7465") as requestor:
        async with requestor.rent("kiln-busybox:latest", kiln.Demand(cpus=1, memory="256MiB")) as act:
            await act.send_bytes(b"hello", "/golem/input/a.txt")
            result = await act.run(["sh", "-c", "wc -c < /golem/input/a.txt"], timeout=30)

The names here are the requestor SDK's (:mod:`kiln.requestor`) and the protocol's errors
(:mod:`kiln.protocol.errors`). They are imported on first use, so that ``import kiln.hub``
or ``import kiln_provider`` never loads the SDK (the way ``websockets`` exports lazily).

Its packages, by role (each ``__init__`` names its modules; the provider is ``kiln_provider``):

- ``protocol``: protocol kiln.v1, pure (messages, frames, codes, limits, errors, the session core)
- ``connection``: a peer's connection to the hub, websockets pumping a session
- ``requestor``: the requestor SDK; ``hub``: the hub's pure core, its I/O in ``hub.io``
- ``testing``: real processes, simulated providers and an in-memory loopback, for tests
- ``cli``: the ``kiln`` command
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kiln.__about__ import __version__

if TYPE_CHECKING:
    from kiln.protocol.codes import ErrorCode
    from kiln.protocol.errors import (
        ActivityError,
        BudgetExceeded,
        Cancelled,
        ConnectionClosed,
        ConnectionLost,
        ConnectionRefused,
        ContainerFailed,
        FileNotFound,
        ImageCorrupt,
        ImageError,
        ImageNotFound,
        ImageTooLarge,
        InsufficientFunds,
        InvalidPath,
        KilnError,
        LocalProtocolError,
        NoMatch,
        ProtocolError,
        ProviderLost,
        RemoteError,
        RemoteProtocolError,
        StoreFull,
        TransferFailed,
        Unauthorized,
        UnsupportedVersion,
        UsageError,
    )
    from kiln.protocol.messages import (
        ActivityInfo,
        Demand,
        Entry,
        ImageInfo,
        ImageList,
        LedgerList,
        Price,
        ProviderInfo,
        Resources,
        Transaction,
    )
    from kiln.requestor.activity import (
        Activity,
        CommandFailed,
        CommandTimeout,
        DownloadTooLarge,
        Result,
        StreamEvent,
    )
    from kiln.requestor.client import Balance, Rental, Requestor, connect
    from kiln.requestor.executor import Disputed, Job, JobEvent, JobSummary, RetryTask, TaskFailed, TaskTimeout
    from kiln.requestor.images import PushedImage
    from kiln.requestor.ports import Forward, Publication
    from kiln.requestor.progress import ProgressView
    from kiln.requestor.report import Attempt
    from kiln.requestor.scheduling import Redundant, SpotCheck
    from kiln.requestor.service import Http, Service, ServiceEvent, ServiceFailed, Tcp

_HOMES = {
    "kiln.protocol.codes": ["ErrorCode"],
    "kiln.protocol.errors": [
        "ActivityError",
        "BudgetExceeded",
        "Cancelled",
        "ConnectionClosed",
        "ConnectionLost",
        "ConnectionRefused",
        "ContainerFailed",
        "FileNotFound",
        "ImageCorrupt",
        "ImageError",
        "ImageNotFound",
        "ImageTooLarge",
        "InsufficientFunds",
        "InvalidPath",
        "KilnError",
        "LocalProtocolError",
        "NoMatch",
        "ProtocolError",
        "ProviderLost",
        "RemoteError",
        "RemoteProtocolError",
        "StoreFull",
        "TransferFailed",
        "Unauthorized",
        "UnsupportedVersion",
        "UsageError",
    ],
    "kiln.protocol.messages": [
        "ActivityInfo",
        "Demand",
        "Entry",
        "ImageInfo",
        "ImageList",
        "LedgerList",
        "Price",
        "ProviderInfo",
        "Resources",
        "Transaction",
    ],
    "kiln.requestor.activity": [
        "Activity",
        "CommandFailed",
        "CommandTimeout",
        "DownloadTooLarge",
        "Result",
        "StreamEvent",
    ],
    "kiln.requestor.client": ["Balance", "Rental", "Requestor", "connect"],
    "kiln.requestor.executor": ["Disputed", "Job", "JobEvent", "JobSummary", "RetryTask", "TaskFailed", "TaskTimeout"],
    "kiln.requestor.images": ["PushedImage"],
    "kiln.requestor.ports": ["Forward", "Publication"],
    "kiln.requestor.progress": ["ProgressView"],
    "kiln.requestor.report": ["Attempt"],
    "kiln.requestor.scheduling": ["Redundant", "SpotCheck"],
    "kiln.requestor.service": ["Http", "Service", "ServiceEvent", "ServiceFailed", "Tcp"],
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "Activity",
    "ActivityError",
    "ActivityInfo",
    "Attempt",
    "Balance",
    "BudgetExceeded",
    "Cancelled",
    "CommandFailed",
    "CommandTimeout",
    "ConnectionClosed",
    "ConnectionLost",
    "ConnectionRefused",
    "ContainerFailed",
    "Demand",
    "Disputed",
    "DownloadTooLarge",
    "Entry",
    "ErrorCode",
    "FileNotFound",
    "Forward",
    "Http",
    "ImageCorrupt",
    "ImageError",
    "ImageInfo",
    "ImageList",
    "ImageNotFound",
    "ImageTooLarge",
    "InsufficientFunds",
    "InvalidPath",
    "Job",
    "JobEvent",
    "JobSummary",
    "KilnError",
    "LedgerList",
    "LocalProtocolError",
    "NoMatch",
    "Price",
    "ProgressView",
    "ProtocolError",
    "ProviderInfo",
    "ProviderLost",
    "Publication",
    "PushedImage",
    "Redundant",
    "RemoteError",
    "RemoteProtocolError",
    "Rental",
    "Requestor",
    "Resources",
    "Result",
    "RetryTask",
    "Service",
    "ServiceEvent",
    "ServiceFailed",
    "SpotCheck",
    "StoreFull",
    "StreamEvent",
    "TaskFailed",
    "TaskTimeout",
    "Tcp",
    "Transaction",
    "TransferFailed",
    "Unauthorized",
    "UnsupportedVersion",
    "UsageError",
    "__version__",
    "connect",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'kiln' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain one
    return value


def __dir__() -> list[str]:
    return __all__
