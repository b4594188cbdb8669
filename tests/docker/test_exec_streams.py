"""A command's input and live output (protocol 1.2), end to end: a hub process, provider
processes, real containers. Output comes while the command runs, input reaches it as it
reads, both with flow control: a requestor that stops reading stops the command."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import kiln
from tests.conftest import IMAGE, Cluster

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

SMALL = kiln.Demand(cpus=0.5, memory="128MiB")


@pytest.fixture
def one_provider(cluster: Cluster) -> Cluster:
    cluster.start_provider("p1", cpus=2, memory="2GiB")
    return cluster


async def test_output_arrives_while_the_command_runs(one_provider: Cluster) -> None:
    async with kiln.connect(one_provider.url) as requestor, requestor.rent(IMAGE, SMALL) as act:
        seen: list[tuple[str, bytes, float]] = []
        async for event in act.stream(["sh", "-c", "echo first; sleep 3; echo second >&2; exit 3"]):
            seen.append((event.kind, event.data, time.monotonic()))
            if event.kind == "exit":
                assert event.result is not None
                assert (event.result.exit_code, event.result.stdout, event.result.stderr) == (3, "", "")
        expected = [("stdout", b"first\n"), ("stderr", b"second\n"), ("exit", b"")]
        assert [(kind, data) for kind, data, _ in seen] == expected
        first, _, end = (at for _, _, at in seen)
        assert end - first > 2.0, "the first line came only when the command ended"


async def test_stdin_reaches_the_command(one_provider: Cluster, tmp_path: Path) -> None:
    local = tmp_path / "input.bin"
    local.write_bytes(bytes(range(256)) * 12_345)  # 3 MiB and more: many chunks, many agent windows
    async with kiln.connect(one_provider.url) as requestor, requestor.rent(IMAGE, SMALL) as act:
        counted = await act.run(["wc", "-c"], stdin=b"x" * 1_000_001)
        assert counted.stdout.strip() == "1000001"
        hashed = await act.run(["sha256sum"], stdin=local)
        assert hashed.stdout.split()[0] == hashlib.sha256(local.read_bytes()).hexdigest()
        assert (await act.run(["cat"], stdin="text, as UTF-8: é")).stdout == "text, as UTF-8: é"
        assert (await act.run(["cat"])).stdout == ""  # no stdin: an empty one
        # A command that does not read its input ends; the input's rest is dropped.
        assert (await act.run(["echo", "done"], stdin=b"y" * 5_000_000)).stdout == "done\n"


async def test_input_and_output_stream_both_ways_at_once(one_provider: Cluster) -> None:
    lines = asyncio.Queue[bytes]()

    async def typed() -> AsyncIterator[bytes]:
        while (line := await lines.get()) != b"":
            yield line

    async with kiln.connect(one_provider.url) as requestor, requestor.rent(IMAGE, SMALL) as act:
        echoed = b""
        async with contextlib.aclosing(act.stream(["cat"], stdin=typed())) as events:
            await lines.put(b"one\n")
            async for event in events:
                echoed += event.data
                # Each line comes back before the next is typed: a conversation, not a batch.
                if echoed == b"one\n":
                    await lines.put(b"two\n")
                elif echoed == b"one\ntwo\n":
                    await lines.put(b"")  # the end of the input: cat ends
        assert echoed == b"one\ntwo\n"


async def test_a_requestor_that_does_not_read_stops_the_command(one_provider: Cluster) -> None:
    script = "yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 100000000; touch /golem/work/finished"
    async with kiln.connect(one_provider.url) as requestor, requestor.rent(IMAGE, SMALL) as act:
        total = 0
        async with contextlib.aclosing(act.stream(["sh", "-c", script])) as events:
            async for event in events:
                if total == 0:
                    await asyncio.sleep(3)  # not reading: the command must wait, not run on
                    check = await act.run(["ls", "/golem/work"])
                    assert "finished" not in check.stdout
                total += len(event.data)
        assert total == 100_000_000
        assert "finished" in (await act.run(["ls", "/golem/work"])).stdout


async def test_leaving_the_loop_kills_the_command(one_provider: Cluster) -> None:
    async with kiln.connect(one_provider.url) as requestor, requestor.rent(IMAGE, SMALL) as act:
        async with contextlib.aclosing(act.stream(["sh", "-c", "echo up; exec sleep 300"])) as events:
            async for event in events:
                assert event.data == b"up\n"
                break
        deadline = time.monotonic() + 10
        while "sleep 300" in (await act.run(["ps", "-o", "args"])).stdout:
            assert time.monotonic() < deadline, "the command outlived its stream"
            await asyncio.sleep(0.2)
        got: list[bytes] = []

        async def until_timeout() -> None:
            async for event in act.stream(["sh", "-c", "echo before; sleep 30"], timeout=1):
                got.append(event.data)

        with pytest.raises(kiln.CommandTimeout) as caught:
            await until_timeout()
        assert got == [b"before\n"] and caught.value.result.timed_out


async def test_root_only_by_consent(cluster: Cluster) -> None:
    await asyncio.to_thread(cluster.start_provider, "plain", cpus=1, memory="1GiB")
    async with kiln.connect(cluster.url) as requestor:
        with pytest.raises(kiln.NoMatch, match="--allow-root"):
            await requestor.rent(IMAGE, SMALL, user="root")
        await asyncio.to_thread(cluster.start_provider, "rooted", "--allow-root", cpus=1, memory="1GiB")
        async with requestor.rent(IMAGE, SMALL, user="root") as act:
            assert act.provider.startswith("rooted")
            result = await act.run(["sh", "-c", "id -u; grep CapEff /proc/self/status"])
            assert result.stdout.split()[0] == "0"
            assert result.stdout.split()[-1] == "0000000000000000", "root, but without capabilities"
        async with requestor.rent(IMAGE, SMALL, exclude=["plain" + cluster.suffix]) as act:
            assert (await act.run(["id", "-u"])).stdout == "65534\n", "without asking: nobody, on any provider"


async def test_kiln_run_prints_output_as_it_comes_and_passes_stdin_on(one_provider: Cluster) -> None:
    script = "echo started; wc -c; echo oops >&2; exit 4"
    command = [
        sys.executable,
        "-m",
        "kiln.cli",
        "run",
        "--hub",
        one_provider.url,
        "-i",
        IMAGE,
        "--",
        "sh",
        "-c",
        script,
    ]
    done = await asyncio.to_thread(subprocess.run, command, input=b"z" * 300_000, capture_output=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (4, b"started\n300000\n", b"oops\n")


async def test_kiln_run_exits_124_on_its_timeout_and_127_with_a_message_for_a_missing_program(
    one_provider: Cluster,
) -> None:
    def kiln_run(*args: str) -> subprocess.CompletedProcess[bytes]:
        command = [sys.executable, "-m", "kiln.cli", "run", "--hub", one_provider.url, "--memory", "64MiB", *args]
        return subprocess.run(command, capture_output=True, timeout=60, check=False)

    missing = await asyncio.to_thread(kiln_run, IMAGE, "--", "no-such-program", "x")
    assert (missing.returncode, missing.stdout) == (127, b"")
    assert missing.stderr == b"cannot run 'no-such-program': exec failed: No such file or directory\n"
    timed_out = await asyncio.to_thread(kiln_run, "--timeout", "1", IMAGE, "--", "sh", "-c", "echo before; sleep 30")
    assert (timed_out.returncode, timed_out.stdout) == (124, b"before\n")
    assert timed_out.stderr == b"kiln: 'sh' ran past its timeout of 1 s and was killed [timeout]\n"
    unknown = await asyncio.to_thread(kiln_run, "no-such-image:1", "--", "true")
    assert unknown.returncode == 1 and unknown.stderr.endswith(b"[image_not_found]\n"), unknown.stderr
    assert unknown.stderr.count(b"\n") == 1 and b"Traceback" not in unknown.stderr
    # Streamed in Python too: why the program did not start comes as its stderr.
    async with kiln.connect(one_provider.url) as requestor, requestor.rent(IMAGE, SMALL) as act:
        events = [event async for event in act.stream(["no-such-program"])]
        why = b"cannot run 'no-such-program': exec failed: No such file or directory\n"
        assert [(e.kind, e.data) for e in events[:-1]] == [("stderr", why)]
        assert events[-1].result is not None and events[-1].result.exit_code == 127


async def test_input_that_fails_is_what_the_command_raises(one_provider: Cluster, tmp_path: Path) -> None:
    class Broken(Exception):
        pass

    async def failing() -> AsyncIterator[bytes]:
        yield b"some input\n"
        await asyncio.sleep(0.2)
        raise Broken("the source broke")

    async with kiln.connect(one_provider.url) as requestor, requestor.rent(IMAGE, SMALL) as act:
        with pytest.raises(Broken):
            await act.run(["sh", "-c", "cat; sleep 30"], stdin=failing(), timeout=20)
        with pytest.raises(kiln.FileNotFound):
            await act.run(["cat"], stdin=tmp_path / "missing.txt")
        assert "sleep 30" not in (await act.run(["ps", "-o", "args"])).stdout, "the command was killed"


async def test_text_is_decoded_along_each_stream(one_provider: Cluster) -> None:
    async with kiln.connect(one_provider.url) as requestor, requestor.rent(IMAGE, SMALL) as act:
        events = [e async for e in act.stream(["sh", "-c", r"printf 'caf\303'; sleep 0.5; printf '\251!'"])]
        expected = [("stdout", b"caf\xc3", "caf"), ("stdout", b"\xa9!", "é!")]
        assert [(e.kind, e.data, e.text) for e in events[:2]] == expected
