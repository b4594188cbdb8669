"""End to end: a hub process, provider processes, the real Docker engine, real containers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect

import kiln
from tests.conftest import IMAGE, Cluster, containers_of, peak_rss

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

MiB = 2**20
SMALL = kiln.Demand(cpus=0.5, memory="128MiB")


def inspect(activity: str) -> dict[str, Any]:
    argv = ["docker", "ps", "-q", "--filter", f"label=kiln.activity={activity}"]
    ids = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
    assert len(ids) == 1, ids
    data = json.loads(subprocess.run(["docker", "inspect", ids[0]], capture_output=True, check=True).stdout)
    assert isinstance(data, list)
    return dict(data[0])


async def wait_until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def one_provider(cluster: Cluster) -> Cluster:
    cluster.start_provider("p1", cpus=2, memory="2GiB")
    return cluster


async def test_the_three_actions_end_to_end(one_provider: Cluster, tmp_path: Path) -> None:
    local = tmp_path / "data.txt"
    local.write_text("one two three\nfour five\n")
    async with (
        kiln.connect(one_provider.url) as requestor,
        requestor.rent(IMAGE, kiln.Demand(cpus=1, memory="256MiB")) as act,
    ):
        await act.send_bytes(b"hello", "/golem/input/a.txt")
        await act.send_file(local, "/golem/input/data.txt")
        await act.send_json({"n": 3}, "/golem/input/deep/er/params.json")

        result = await act.run(["sh", "-c", "wc -c < /golem/input/a.txt"], timeout=30)
        assert (result.exit_code, result.stdout.strip(), result.stderr) == (0, "5", "")
        words = await act.run(["wc", "-w", "/golem/input/data.txt"])
        assert words.stdout.split()[0] == "5"
        env = await act.run(
            ["sh", "-c", "echo $GREETING $PWD; echo oops >&2; exit 7"], env={"GREETING": "hi"}, workdir="/golem/input"
        )
        assert (env.exit_code, env.stdout, env.stderr) == (7, "hi /golem/input\n", "oops\n")
        with pytest.raises(kiln.CommandFailed, match=r"^'sh' exited with code 7: oops$") as failed:
            await act.run(["sh", "-c", "echo out; echo oops >&2; exit 7"], check=True)
        assert isinstance(failed.value, kiln.ActivityError) and failed.value.code == "command_failed"
        assert (failed.value.result.exit_code, failed.value.result.stdout) == (7, "out\n")
        assert (await act.run(["true"], check=True)).ok
        missing = await act.run(["no-such-program"])
        assert missing.exit_code in (126, 127)
        with pytest.raises(kiln.CommandTimeout) as hung:
            await act.run(["sh", "-c", "echo started; sleep 100; echo never"], timeout=1)
        assert hung.value.result.timed_out
        assert hung.value.result.stdout == "started\n"

        script = (
            "mkdir -p /golem/output/sub && cat /golem/input/a.txt /golem/input/data.txt > /golem/output/out.txt"
            " && cat /golem/input/deep/er/params.json > /golem/output/result.json && echo x > /golem/output/sub/y"
        )
        assert (await act.run(["sh", "-c", script])).ok
        path = await act.download_file("/golem/output/out.txt", tmp_path / "out" / "out.txt")
        assert path.read_text() == "hello" + local.read_text()
        assert await act.download_bytes("/golem/output/out.txt") == path.read_bytes()
        assert await act.download_json("/golem/output/result.json") == {"n": 3}
        folder = await act.download_file("/golem/output", tmp_path / "folder")
        names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
        assert names == ["out.txt", "result.json", "sub", "sub/y"]

        with pytest.raises(kiln.FileNotFound, match="/golem/output/none"):
            await act.download_bytes("/golem/output/none")
        with pytest.raises(kiln.FileNotFound) as not_file:
            await act.download_bytes("/golem/output")
        assert not_file.value.code == kiln.ErrorCode.NOT_A_FILE
        with pytest.raises(kiln.InvalidPath):
            await act.send_bytes(b"x", "/golem/../etc/passwd")
        with pytest.raises(kiln.InvalidPath):
            await act.run(["ls"], workdir="relative")
        with pytest.raises(kiln.FileNotFound):
            await act.send_file(tmp_path / "absent", "/golem/input/x")
        # The activity still works after every refusal.
        assert (await act.run(["cat", "/golem/input/a.txt"])).stdout == "hello"
    assert containers_of(next(iter(one_provider.providers))) == []


async def test_folder_download_never_writes_outside_the_destination(one_provider: Cluster, tmp_path: Path) -> None:
    async with kiln.connect(one_provider.url) as requestor, requestor.rent(IMAGE) as act:
        await act.run(["sh", "-c", "mkdir -p /golem/output && ln -s /etc/passwd /golem/output/evil"])
        with pytest.raises(kiln.TransferFailed, match="outside"):
            await act.download_file("/golem/output", tmp_path / "dest")
    assert not (tmp_path / "passwd").exists()
    assert not (tmp_path / "dest" / "evil").exists()
    async with kiln.connect(one_provider.url) as requestor, requestor.rent(IMAGE) as act:
        # Each link alone looks harmless; together they would point above the destination.
        await act.run(["sh", "-c", "mkdir -p /golem/output && ln -s . /golem/output/l && ln -s l/../s /golem/output/e"])
        with pytest.raises(kiln.TransferFailed, match="outside"):
            await act.download_file("/golem/output", tmp_path / "dest2" / "deeper")
    assert not (tmp_path / "dest2" / "deeper" / "e").exists()


async def test_a_container_writes_only_the_storage_it_rented(one_provider: Cluster) -> None:
    volumes = one_provider.logs / f"{next(iter(one_provider.providers))}.data" / "volumes"
    dd = ["dd", "if=/dev/zero", "bs=1M"]
    async with kiln.connect(one_provider.url) as requestor:
        async with requestor.rent(IMAGE, kiln.Demand(cpus=0.5, memory="128MiB", storage="64MiB")) as act:
            assert act.resources.storage == 64 * MiB
            past = await act.run([*dd, "of=/golem/work/big", "count=100"])
            assert past.exit_code != 0 and "No space left on device" in past.stderr
            assert (await act.run(["rm", "/golem/work/big"])).ok
            assert (await act.run([*dd, "of=/tmp/half", "count=32"])).ok, "/tmp shares the budget"
            for path in ("/x", "/etc/x"):
                refused = await act.run(["sh", "-c", f"echo x > {path}"])
                assert refused.exit_code != 0 and "Read-only file system" in refused.stderr
            await act.send_bytes(b"in", "/golem/input/a.txt")
            assert (await act.run(["sh", "-c", "cp /golem/input/a.txt /golem/output/b.txt"])).ok
            assert await act.download_bytes("/golem/output/b.txt") == b"in"
            with pytest.raises(kiln.TransferFailed, match="no space left"):
                await act.send_bytes(bytes(48 * MiB), "/golem/input/too-big")  # 32 MiB are in /tmp
            with pytest.raises(kiln.InvalidPath, match="read-only"):
                await act.send_bytes(b"x", "/etc/x")
            assert len(list(volumes.glob("*.img"))) == 1
        async with requestor.rent(IMAGE, SMALL) as act:  # no storage named: the provider's 256 MiB
            df = await act.run(["df", "-k", "/golem"])
            assert 240 * 1024 < int(df.stdout.splitlines()[1].split()[1]) <= 256 * 1024

    def volumes_gone() -> bool:
        return list(volumes.iterdir()) == [] and str(volumes) not in Path("/proc/self/mountinfo").read_text()

    await wait_until(volumes_gone)


async def test_a_provider_stopped_by_sigterm_takes_its_containers_and_volumes(one_provider: Cluster) -> None:
    name, process = next(iter(one_provider.providers.items()))
    volumes = one_provider.logs / f"{name}.data" / "volumes"
    async with kiln.connect(one_provider.url) as requestor:
        activities = [await requestor.rent(IMAGE, SMALL) for _ in range(2)]
        assert len(list(volumes.glob("*.img"))) == 2
        await asyncio.to_thread(process.stop, signal.SIGTERM)
        for act in activities:
            await act.release()  # the provider is lost: nothing left to release
    assert process.popen.returncode == 0, "a clean stop, as systemd counts it"
    # Said as what it is, not as a grace period that ran out: no warning on a clean stop.
    said = process.output()
    assert "stopping: removing 2 containers" in said and " WARNING " not in said, said
    assert containers_of(name) == []
    assert list(volumes.iterdir()) == []
    assert str(volumes) not in await asyncio.to_thread(Path("/proc/self/mountinfo").read_text)


async def test_containers_are_hardened(one_provider: Cluster) -> None:
    async with (
        kiln.connect(one_provider.url) as requestor,
        requestor.rent(IMAGE, kiln.Demand(cpus=0.5, memory="128MiB")) as act,
    ):
        config = inspect(act.id)
        host = config["HostConfig"]
        assert host["NetworkMode"] == "none"
        assert host["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in host["SecurityOpt"]
        assert host["PidsLimit"] == 256
        assert host["Memory"] == 128 * MiB
        assert host["NanoCpus"] == 500_000_000
        assert config["Config"]["Labels"]["kiln.activity"] == act.id
        # ...and from inside: no network interface but lo, no capabilities.
        net = await act.run(["cat", "/proc/net/dev"])
        assert [line.split(":")[0].strip() for line in net.stdout.splitlines()[2:]] == ["lo"]
        caps = await act.run(["grep", "CapEff", "/proc/self/status"])
        assert caps.stdout.split()[1] == "0000000000000000"
        bomb = await act.run(["sh", "-c", "for i in $(seq 400); do sleep 5 & done; wait"], timeout=20)
        assert "can't fork" in bomb.stderr or "Resource temporarily unavailable" in bomb.stderr


async def test_capacity_is_never_sold_twice(cluster: Cluster) -> None:
    names = [cluster.start_provider(n, cpus=2, memory="1GiB", wait=False) for n in ("p1", "p2")]
    await asyncio.to_thread(cluster.wait_for_providers, set(names))
    demand = kiln.Demand(cpus=1, memory="512MiB")

    refusals: list[str] = []

    async def greedy(requestor: kiln.Requestor) -> list[kiln.Activity]:
        got: list[kiln.Activity] = []
        for _ in range(3):
            try:
                got.append(await requestor.rent(IMAGE, demand))
            except kiln.NoMatch as e:
                refusals.append(e.message)
        return got

    async with contextlib.AsyncExitStack() as stack:
        requestors = [await stack.enter_async_context(kiln.connect(cluster.url, name=f"r{i}")) for i in range(3)]
        held = await asyncio.gather(*(greedy(r) for r in requestors))
        activities = [a for group in held for a in group]
        assert len(activities) == 4  # 2 providers x (1 GiB / 512 MiB)
        assert len(refusals) == 5
        assert all("busy" in r for r in refusals)
        per_provider = {n: sum(1 for a in activities if a.provider == n) for n in names}
        assert per_provider == dict.fromkeys(names, 2)
        for name in names:
            assert len(containers_of(name)) == 2
        # Releasing one frees exactly one slot, for whoever asks next.
        await activities[0].release()
        late = await stack.enter_async_context(kiln.connect(cluster.url))
        extra = await late.rent(IMAGE, demand)
        assert extra.provider == activities[0].provider
        with pytest.raises(kiln.NoMatch):
            await late.rent(IMAGE, demand)
    for name in names:
        await wait_until(lambda n=name: containers_of(n) == [])


async def test_provider_killed_mid_command_is_reported_fast(cluster: Cluster) -> None:
    name = await asyncio.to_thread(cluster.start_provider, "p1")
    async with kiln.connect(cluster.url) as requestor:
        act = await requestor.rent(IMAGE)
        running = asyncio.create_task(act.run(["sleep", "60"]))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        cluster.providers[name].stop(signal.SIGKILL)
        with pytest.raises(kiln.ProviderLost, match="disconnected"):
            await asyncio.wait_for(running, 10)
        elapsed = time.monotonic() - started
        print(f"\nprovider loss reported after {elapsed * 1000:.0f} ms")
        assert elapsed < 10
        with pytest.raises(kiln.ProviderLost):
            await act.run(["true"])
        assert await requestor.market() == []
    # No container outlives its provider: its agent saw the channel close, ended everything
    # and exited, and Docker removed the container, with no provider restart.
    await wait_until(lambda: containers_of(name) == [], timeout=10)


@pytest.mark.hub_args("--grace", "3")
async def test_a_vanished_requestor_leaves_no_container(one_provider: Cluster, tmp_path: Path) -> None:
    name = next(iter(one_provider.providers))
    script = tmp_path / "holder.py"
    script.write_text(
        "import asyncio, sys, kiln\n"
        "async def main():\n"
        f"    async with kiln.connect({one_provider.url!r}) as r:\n"
        f"        act = await r.rent({IMAGE!r})\n"
        "        await act.send_bytes(b'x' * 1000, '/golem/input/x')\n"
        "        print('rented', flush=True)\n"
        "        await act.run(['sleep', '600'])\n"
        "asyncio.run(main())\n"
    )
    holder = await asyncio.create_subprocess_exec(sys.executable, str(script), stdout=subprocess.PIPE)
    assert holder.stdout is not None
    assert (await holder.stdout.readline()).strip() == b"rented"
    assert len(containers_of(name)) == 1
    holder.kill()
    await holder.wait()
    # Held for the grace period (the requestor might come back), then destroyed.
    await asyncio.sleep(2)
    assert len(containers_of(name)) == 1
    await wait_until(lambda: containers_of(name) == [])
    async with kiln.connect(one_provider.url) as requestor:
        [offer] = await requestor.market()
        assert offer.free == offer.offered
        assert offer.activities == 0


def vandal_frames(mine: str, theirs: str) -> dict[str, str]:
    """Bad frames from a raw requestor connection, by label: ``mine`` is an activity of its
    SDK connection's, ``theirs`` an id no one holds."""
    return {
        "malformed": "{{{",
        "unknown": json.dumps({"type": "nuke", "id": 1}),
        "wrong_type": json.dumps({"type": "exec", "id": 2, "activity": mine, "argv": "ls"}),
        "dotdot": json.dumps({"type": "upload", "id": 3, "activity": mine, "path": "/a/../b", "size": 1}),
        "not_mine": json.dumps({"type": "exec", "id": 4, "activity": mine, "argv": ["true"]}),
        "unknown_activity": json.dumps({"type": "exec", "id": 5, "activity": theirs, "argv": ["true"]}),
        "oversized": json.dumps({"type": "market", "id": 6, "x": "y" * (2 * MiB)}),
        "out_of_order": json.dumps({"type": "offer", "id": 7, "resources": {"cpus": 1, "memory": 1}, "arch": "amd64"}),
    }


async def test_bad_input_is_answered_while_another_job_goes_on(one_provider: Cluster) -> None:
    async def honest_job() -> list[str]:
        outputs = []
        async with kiln.connect(one_provider.url, name="honest") as requestor, requestor.rent(IMAGE, SMALL) as act:
            for i in range(20):
                await act.send_bytes(str(i).encode() * 1000, f"/golem/input/{i}")
                r = await act.run(["sh", "-c", f"wc -c < /golem/input/{i}"])
                outputs.append(r.stdout.strip())
        return outputs

    async def vandal() -> dict[str, str]:
        codes: dict[str, str] = {}
        async with kiln.connect(one_provider.url, name="vandal") as requestor, requestor.rent(IMAGE, SMALL) as mine:
            theirs = "0123456789abcdef"
            async with ws_connect(one_provider.url, subprotocols=["kiln.v1"]) as ws:  # type: ignore[list-item]
                await ws.send(json.dumps({"type": "hello", "version": "1.0", "role": "requestor", "name": "raw"}))
                await ws.recv()
                for label, frame in vandal_frames(mine.id, theirs).items():
                    await ws.send(frame)
                    codes[label] = json.loads(await ws.recv())["code"]
            with pytest.raises(kiln.ImageNotFound, match="kiln-none:latest") as missing:
                await requestor.rent("kiln-none:latest", SMALL)
            # What the requestor can do, not only what the provider's operator could (--pull).
            assert "push it there (kiln image push kiln-none:latest, or push_image" in missing.value.message
            assert "--pull" in missing.value.message
            assert (await mine.run(["echo", "still here"])).stdout == "still here\n"
        return codes

    outputs, codes = await asyncio.gather(honest_job(), vandal())
    assert outputs == [str(len(str(i)) * 1000) for i in range(20)]
    assert codes == {
        "malformed": "bad_json",
        "unknown": "unknown_type",
        "wrong_type": "bad_message",
        "dotdot": "bad_path",
        "not_mine": "unknown_activity",
        "unknown_activity": "unknown_activity",
        "oversized": "message_too_large",
        "out_of_order": "out_of_order",
    }


async def test_200_mib_round_trip_with_bounded_hub_memory(one_provider: Cluster, tmp_path: Path) -> None:
    assert one_provider.hub is not None
    size = 200 * MiB
    source = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with source.open("wb") as f:
        for i in range(size // MiB):
            block = (i.to_bytes(4, "big") + os.urandom(60)) * (MiB // 64)
            digest.update(block)
            f.write(block)
    before = peak_rss(one_provider.hub.pid)
    async with (
        kiln.connect(one_provider.url) as requestor,
        requestor.rent(IMAGE, kiln.Demand(memory="512MiB")) as act,
    ):
        started = time.monotonic()
        await act.send_file(source, "/golem/input/big.bin")
        up = time.monotonic() - started
        check = await act.run(["sha256sum", "/golem/input/big.bin"])
        assert check.stdout.split()[0] == digest.hexdigest()
        started = time.monotonic()
        back = await act.download_file("/golem/input/big.bin", tmp_path / "back.bin")
        down = time.monotonic() - started
    with back.open("rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == digest.hexdigest()
    peak = peak_rss(one_provider.hub.pid)
    print(
        f"\n200 MiB up {size / up / MiB:.0f} MiB/s, down {size / down / MiB:.0f} MiB/s; "
        f"hub peak RSS {before / MiB:.0f} MiB before, {peak / MiB:.0f} MiB after"
    )
    assert peak < before + 64 * MiB, "the hub buffered far more than its stream windows"


async def test_providers_dial_again_when_the_hub_comes_back(one_provider: Cluster) -> None:
    assert one_provider.hub is not None
    port = one_provider.url.rsplit(":", 1)[1]
    one_provider.hub.stop(signal.SIGKILL)
    assert await asyncio.to_thread(one_provider.start_hub, port=int(port)) == one_provider.url
    await asyncio.to_thread(one_provider.wait_for_providers, set(one_provider.providers))
    async with kiln.connect(one_provider.url) as requestor, requestor.rent(IMAGE, SMALL) as act:
        assert (await act.run(["echo", "back"])).stdout == "back\n"


async def test_transfers_cancelled_midway_leave_the_activity_working(one_provider: Cluster, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        f.truncate(150 * MiB)
    async with (
        kiln.connect(one_provider.url) as requestor,
        requestor.rent(IMAGE, kiln.Demand(memory="512MiB")) as act,
    ):
        await act.run(["sh", "-c", "mkdir -p /golem/output && head -c 100000000 /dev/zero > /golem/output/big"])
        for _ in range(3):
            download = asyncio.create_task(act.download_file("/golem/output/big", tmp_path / "part.bin"))
            await asyncio.sleep(0.2)
            download.cancel()
            with pytest.raises(asyncio.CancelledError):
                await download
            upload = asyncio.create_task(act.send_file(big, "/golem/input/big.bin"))
            await asyncio.sleep(0.2)
            upload.cancel()
            with pytest.raises(asyncio.CancelledError):
                await upload
            assert (await asyncio.wait_for(act.run(["echo", "alive"]), 20)).stdout == "alive\n"
        assert not (tmp_path / "part.bin").exists(), "a cancelled download leaves no partial file"
        assert len(await asyncio.wait_for(act.download_bytes("/golem/output/big"), 30)) == 100_000_000
        await asyncio.wait_for(act.send_file(big, "/golem/input/big.bin"), 30)
        size = await act.run(["sh", "-c", "wc -c < /golem/input/big.bin"])
        assert size.stdout.strip() == str(150 * MiB)


async def test_one_activity_cannot_hog_its_provider(one_provider: Cluster) -> None:
    async with kiln.connect(one_provider.url) as requestor, requestor.rent(IMAGE, SMALL) as act:
        hogs = [asyncio.create_task(act.run(["sleep", "60"])) for _ in range(32)]
        await asyncio.sleep(1.0)
        with pytest.raises(kiln.KilnError) as refused:
            await act.run(["true"])
        assert refused.value.code == kiln.ErrorCode.TOO_MANY
        for hog in hogs:
            hog.cancel()
        await asyncio.gather(*hogs, return_exceptions=True)
        deadline = time.monotonic() + 15
        while True:  # the provider ends the cancelled commands a moment after we stop waiting
            try:
                assert (await act.run(["echo", "free again"])).stdout == "free again\n"
                break
            except kiln.KilnError as e:
                if e.code != kiln.ErrorCode.TOO_MANY or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


async def test_an_image_without_a_shell_runs(cluster: Cluster, shell_less_image: str) -> None:
    await asyncio.to_thread(cluster.start_provider, "p1")
    async with kiln.connect(cluster.url) as requestor, requestor.rent(shell_less_image) as act:
        result = await act.run(["/busybox", "echo", "no shell, no sleep"])
        assert (result.exit_code, result.stdout) == (0, "no shell, no sleep\n")
        script = "/busybox sleep 100 & (/busybox setsid /busybox sleep 100 &); /busybox sleep 100"
        with pytest.raises(kiln.CommandTimeout):
            await act.run(["/busybox", "sh", "-c", script], timeout=1)
        left = await act.run(["/busybox", "ps", "-o", "args"])
        assert "sleep 100" not in left.stdout, left.stdout


async def test_commands_run_as_nobody_and_own_what_was_uploaded(one_provider: Cluster) -> None:
    async with kiln.connect(one_provider.url) as requestor, requestor.rent(IMAGE) as act:
        await act.send_bytes(b"data", "/golem/input/sub/a.txt")
        result = await act.run(["sh", "-c", "id -u; stat -c %u /golem/input/sub/a.txt; echo ok > /golem/input/sub/b"])
        assert (result.exit_code, result.stdout) == (0, "65534\n65534\n"), result


async def test_a_command_that_ends_the_agent_fails_only_its_activity(one_provider: Cluster) -> None:
    async with kiln.connect(one_provider.url) as requestor:
        victim, bystander = await asyncio.gather(requestor.rent(IMAGE), requestor.rent(IMAGE))
        with contextlib.suppress(kiln.ActivityError):
            await victim.run(["kill", "-TERM", "1"])  # the agent runs as the same user: it may be signalled
        with pytest.raises(kiln.ActivityError, match="ended"):
            await victim.run(["true"])
        assert (await bystander.run(["echo", "unharmed"])).stdout == "unharmed\n"
        await bystander.release()
