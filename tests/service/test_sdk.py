"""The requestor SDK's surface: the two ways to connect, how a worker's failures are told,
workers refused before anything is rented, and every name the docs use resolving in ``kiln``.
Against a real hub process and simulated providers (no Docker)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest

import kiln
from kiln.hub.io.state import HubState
from kiln.protocol import errors as kiln_errors
from kiln.requestor import activity as kiln_activity
from kiln.requestor import executor as kiln_executor
from kiln.testing import LocalCluster
from kiln.testing.simulated import simulated_providers

pytestmark = pytest.mark.timeout(60)

IMAGE = "kiln-busybox:latest"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[str]:
    with LocalCluster(tmp_path) as cluster:
        yield cluster.start_hub("--data-dir", str(tmp_path / "hub-data"))


def rented_ever(tmp_path: Path) -> int:
    """The activities the hub has ended, from its own records (``kiln usage``): what was ever rented."""
    with HubState.in_dir(tmp_path / "hub-data") as state:
        return len(state.usage())


async def held(url: str) -> int:
    """The activities every provider of the hub holds now (from a fresh requestor's market)."""
    async with kiln.connect(url, name="watcher") as watcher:
        return sum(seller.activities for seller in await watcher.market())


def readers() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("kiln-reader-") and not t.done()]


async def test_await_connect_gives_a_connected_requestor_that_close_releases(hub: str) -> None:
    async with simulated_providers(hub, 1):
        requestor = await kiln.connect(hub, name="awaited")
        assert isinstance(requestor, kiln.Requestor)
        assert [t.get_name() for t in readers()] == ["kiln-reader-awaited"]
        act = await requestor.rent(IMAGE)
        assert (await act.run(["true"])).exit_code == 0
        assert await held(hub) == 1
        await requestor.close()
        assert readers() == [], "close() stops the reader"
        assert isinstance(requestor.gone, kiln.ConnectionClosed)
        assert act.released and requestor.activities == []
        assert await held(hub) == 0, "released at once, not held for the grace period"
        await requestor.close()  # a second close is harmless
        with pytest.raises(kiln.ConnectionClosed):
            await requestor.market()


async def test_async_with_connect_takes_the_same_path(hub: str) -> None:
    async with simulated_providers(hub, 1):
        async with kiln.connect(hub, name="block") as requestor:
            assert [t.get_name() for t in readers()] == ["kiln-reader-block"]
            await requestor.rent(IMAGE)
            assert await held(hub) == 1
        assert readers() == []
        assert isinstance(requestor.gone, kiln.ConnectionClosed)
        assert await held(hub) == 0


# --- map's workers ---------------------------------------------------------------------------


class Oops(Exception):
    pass


async def test_a_worker_exception_is_the_task_failed_cause_never_internal(hub: str) -> None:
    async def worker(act: kiln.Activity, n: int) -> int:
        if n == 1:
            raise Oops("one is odd")
        return n

    async with simulated_providers(hub, 1), kiln.connect(hub) as requestor:
        with pytest.raises(kiln.TaskFailed) as failed:
            await requestor.map(worker, range(3), image=IMAGE, progress=False)
        mixed: list[object] = list(
            await requestor.map(worker, range(3), image=IMAGE, progress=False, return_exceptions=True)
        )
    error = failed.value
    assert error.code == "task_failed"
    assert isinstance(error.__cause__, Oops) and str(error.__cause__) == "one is odd"
    assert error.message.endswith("failed after 1 attempt: Oops: one is odd"), error.message
    assert (error.index, error.item, error.attempts) == (1, 1, [error.__cause__])
    assert isinstance(mixed[1], kiln.TaskFailed) and isinstance(mixed[1].__cause__, Oops)
    assert mixed[1].code == kiln.ErrorCode.TASK_FAILED


class SyncCall:
    def __call__(self, act: kiln.Activity, n: int) -> int:
        return n


class AsyncCall:
    async def __call__(self, act: kiln.Activity, n: int, scale: int = 1) -> int:
        return n * scale


def plain(act: kiln.Activity, n: int) -> int:
    return n


async def asynchronous(act: kiln.Activity, n: int, scale: int = 1) -> int:
    return n * scale


async def test_a_worker_that_is_not_async_is_refused_before_anything_is_rented(hub: str, tmp_path: Path) -> None:
    not_async: list[Any] = [plain, lambda act, n: asynchronous(act, n), functools.partial(plain), SyncCall()]
    async with simulated_providers(hub, 1), kiln.connect(hub) as requestor:
        for worker in not_async:
            with pytest.raises(kiln.UsageError, match="the worker must be an async function"):
                await requestor.map(worker, range(3), image=IMAGE, progress=False)
            with pytest.raises(kiln.UsageError, match="the worker must be an async function"):
                requestor.job(worker, range(3), image=IMAGE)
        with pytest.raises(kiln.UsageError, match="the setup must be an async function"):
            await requestor.map(asynchronous, range(3), image=IMAGE, setup=plain, progress=False)  # type: ignore[arg-type]
        assert requestor.activities == []
        assert rented_ever(tmp_path) == 0, "nothing was rented"
        # What is async is taken: a partial of an async function, an object with an async __call__.
        for worker in (asynchronous, functools.partial(asynchronous, scale=2), AsyncCall()):
            results = await requestor.map(worker, range(3), image=IMAGE, progress=False, max_providers=1)
            assert results in ([0, 1, 2], [0, 2, 4])
    assert rented_ever(tmp_path) == 3, "one activity per map"


# --- the names the docs use ---------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
INTERNAL = {"Connection"}
"""Kiln types a public method returns that are the connection layer's, not the SDK's."""


def test_every_name_in_all_resolves() -> None:
    assert len(kiln.__all__) == len(set(kiln.__all__))
    assert sorted(dir(kiln)) == sorted(kiln.__all__)
    for name in kiln.__all__:
        assert getattr(kiln, name) is not None, name
    with pytest.raises(AttributeError):
        _ = kiln.NoSuchName


def test_every_kiln_name_the_docs_mention_resolves() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    mentioned = {name for doc in docs for name in re.findall(r"\bkiln\.([A-Z]\w+)", doc.read_text())}
    assert {"ActivityInfo", "CommandFailed", "TaskFailed", "Demand"} <= mentioned, "the names are read"
    missing = sorted(name for name in mentioned if not hasattr(kiln, name))
    assert missing == [], f"the docs name kiln.{missing[0] if missing else ''}, which does not exist"


def test_every_error_class_of_the_sdk_is_exported() -> None:
    for module in (kiln_errors, kiln_activity, kiln_executor):
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, kiln.KilnError) and value.__module__ == module.__name__:
                assert getattr(kiln, name, None) is value, f"kiln does not export {module.__name__}.{name}"


def _kiln_types(annotation: object, into: set[type]) -> None:
    if isinstance(annotation, type) and annotation.__module__.startswith("kiln") and annotation not in into:
        into.add(annotation)
        fields: dict[str, Any] = {}
        if issubclass(annotation, pydantic.BaseModel):
            fields = {name: f.annotation for name, f in annotation.model_fields.items()}
        elif dataclasses.is_dataclass(annotation):
            fields = typing.get_type_hints(annotation)
        for field in fields.values():
            _kiln_types(field, into)
    for argument in typing.get_args(annotation):
        _kiln_types(argument, into)


def test_every_record_a_user_receives_is_exported() -> None:
    """What a public method of the SDK's objects returns (and what those records hold) is named in ``kiln``."""
    received: set[type] = set()
    for owner in (kiln.Requestor, kiln.Activity, kiln.Job, kiln.Rental, kiln.connect):
        for name, member in vars(owner).items():
            function = member.fget if isinstance(member, property) else member
            if name.startswith("_") or not callable(function) or "return" not in function.__annotations__:
                continue
            returned = function.__annotations__["return"]
            if isinstance(returned, str):  # postponed: our own annotation, read in its module
                returned = eval(returned, vars(sys.modules[function.__module__]))
            _kiln_types(returned, received)
    assert {kiln.ProviderInfo, kiln.ImageList, kiln.ImageInfo, kiln.Resources, kiln.ActivityInfo} <= received
    unexported = sorted(
        t.__name__ for t in received if t.__name__ not in INTERNAL and getattr(kiln, t.__name__, None) is not t
    )
    assert unexported == [], f"kiln does not export {unexported}"


def test_every_error_class_of_the_sdk_is_on_the_errors_page() -> None:
    page = (ROOT / "docs" / "reference" / "errors.md").read_text()
    shown = set(re.findall(r"^::: (\S+)", page, re.MULTILINE))
    assert "kiln.protocol.errors" in shown, "the page's directives are read"
    for name in kiln.__all__:
        error = getattr(kiln, name)
        if isinstance(error, type) and issubclass(error, kiln.KilnError):
            assert {error.__module__, f"{error.__module__}.{name}"} & shown, f"docs/reference/errors.md lacks {name}"
