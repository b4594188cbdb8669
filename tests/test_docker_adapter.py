"""The Docker adapter against the real engine: no mocks, every container removed in teardown."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from kiln.protocol.codes import ErrorCode
from kiln_provider.docker_adapter import (
    LABEL_ACTIVITY,
    LABEL_PROVIDER,
    ContainerSpec,
    DockerAdapter,
    ExecOutcome,
)
from kiln_provider.errors import DockerFailed, ImageMissing, NotAFile, PathMissing, TransferBroken

pytestmark = [pytest.mark.docker, pytest.mark.timeout(30)]

PROVIDER = f"test-{os.getpid()}"
TAG = "kiln-busybox:latest"
MIB = 1024 * 1024

MakeContainer = Callable[..., str]


@pytest.fixture(scope="module")
def adapter() -> DockerAdapter:
    return DockerAdapter(PROVIDER)


@pytest.fixture(scope="module")
def image(adapter: DockerAdapter) -> str:
    adapter.build_busybox_image(TAG)
    return TAG


@pytest.fixture
def containers(adapter: DockerAdapter) -> Iterator[list[str]]:
    """Every container a test creates; all removed afterwards, whatever happened."""
    created: list[str] = []
    yield created
    for container_id in created:
        adapter.remove(container_id)


@pytest.fixture
def make_container(adapter: DockerAdapter, image: str, containers: list[str]) -> MakeContainer:
    def make(on: DockerAdapter = adapter, **spec: object) -> str:
        fields: dict[str, object] = {
            "activity": uuid.uuid4().hex[:12],
            "image": image,
            "cpus": 1.0,
            "memory": 256 * MIB,
        }
        container_id = on.create(ContainerSpec(**(fields | spec)))  # type: ignore[arg-type]
        containers.append(container_id)
        return container_id

    return make


@pytest.fixture
def box(make_container: MakeContainer) -> str:
    return make_container()


def run(
    adapter: DockerAdapter,
    container_id: str,
    *argv: str,
    env: dict[str, str] | None = None,
    workdir: str | None = None,
    max_output: int = MIB,
    timeout: float = 10,
) -> ExecOutcome:
    return adapter.start_exec(container_id, list(argv), env or {}, workdir, max_output).wait(timeout)


def sh(adapter: DockerAdapter, container_id: str, script: str) -> str:
    outcome = run(adapter, container_id, "sh", "-c", script)
    assert outcome.exit_code == 0, outcome
    return outcome.stdout.decode()


def docker_inspect(container_id: str) -> dict[str, object]:
    out = subprocess.run(["docker", "inspect", container_id], capture_output=True, check=True).stdout
    result: dict[str, object] = json.loads(out)[0]
    return result


# -- images and host --------------------------------------------------------------------


def test_build_busybox_image_is_idempotent(adapter: DockerAdapter, image: str) -> None:
    first = adapter.build_busybox_image(TAG)
    started = time.monotonic()
    assert adapter.build_busybox_image(TAG) == first
    assert time.monotonic() - started < 1.0  # found by its label, not rebuilt


def test_images_lists_the_busybox_tag(adapter: DockerAdapter, image: str) -> None:
    assert TAG in adapter.images()


def test_host_info_and_storage(adapter: DockerAdapter) -> None:
    info = adapter.host_info()
    assert info.cpus >= 1
    assert info.memory > 0
    assert info.arch in ("amd64", "arm64")
    assert adapter.storage_free() > 0


def test_missing_image_is_image_not_found(make_container: MakeContainer) -> None:
    with pytest.raises(ImageMissing, match="kiln-nope:latest"):
        make_container(image="kiln-nope:latest")


# -- containers ---------------------------------------------------------------------------


def test_create_is_hardened(adapter: DockerAdapter, make_container: MakeContainer) -> None:
    container_id = make_container(activity="act/1", cpus=0.5, memory=128 * MIB, pids_limit=64)
    inspected = docker_inspect(container_id)
    host = inspected["HostConfig"]
    assert isinstance(host, dict)
    assert host["NetworkMode"] == "none"
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["PidsLimit"] == 64
    assert host["Memory"] == host["MemorySwap"] == 128 * MIB
    assert host["NanoCpus"] == 500_000_000
    assert host["Init"] is True
    assert host["AutoRemove"] is False
    config = inspected["Config"]
    assert isinstance(config, dict)
    labels = config["Labels"]
    assert isinstance(labels, dict)
    assert labels[LABEL_PROVIDER] == PROVIDER
    assert labels[LABEL_ACTIVITY] == "act/1"
    assert inspected["Name"] == f"/kiln-{PROVIDER}-act-1"
    state = inspected["State"]
    assert isinstance(state, dict)
    assert state["Running"] is True
    # And from the inside: no capabilities, no network but loopback.
    assert "CapEff:\t0000000000000000" in sh(adapter, container_id, "cat /proc/self/status")
    assert sh(adapter, container_id, "ls /sys/class/net").split() == ["lo"]


def test_remove_twice_is_fine(adapter: DockerAdapter, box: str) -> None:
    adapter.remove(box)
    adapter.remove(box)


def test_remove_stale_removes_only_this_providers_containers(
    adapter: DockerAdapter, make_container: MakeContainer, box: str
) -> None:
    other = DockerAdapter(f"stale-{uuid.uuid4().hex[:8]}")
    make_container(on=other)
    make_container(on=other)
    assert other.remove_stale() == 2
    assert other.remove_stale() == 0
    assert sh(adapter, box, "echo alive") == "alive\n"


def test_cpu_seconds_grows(adapter: DockerAdapter, box: str) -> None:
    before = adapter.cpu_seconds(box)
    sh(adapter, box, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
    assert adapter.cpu_seconds(box) > before


# -- uploads --------------------------------------------------------------------------------


def test_put_file_then_cat(adapter: DockerAdapter, box: str) -> None:
    assert adapter.put_file(box, "/golem/input/a.txt", 5, 0o640, iter([b"he", b"llo"])) == 5
    assert run(adapter, box, "cat", "/golem/input/a.txt").stdout == b"hello"
    assert sh(adapter, box, "stat -c %a /golem/input/a.txt") == "640\n"


def test_put_file_creates_parent_folders(adapter: DockerAdapter, box: str) -> None:
    adapter.put_file(box, "/golem/input/x/y/z/c.txt", 5, 0o644, iter([b"deep!"]))
    assert run(adapter, box, "cat", "/golem/input/x/y/z/c.txt").stdout == b"deep!"
    assert sh(adapter, box, "stat -c %a /golem/input/x /golem/input/x/y/z") == "755\n755\n"
    assert sh(adapter, box, "stat -c %a /tmp") == "1777\n"  # existing folders keep their mode


def test_put_file_short_stream_fails(adapter: DockerAdapter, box: str) -> None:
    with pytest.raises(TransferBroken, match="3 of 10"):
        adapter.put_file(box, "/golem/input/short.txt", 10, 0o644, iter([b"abc"]))


def test_put_file_long_stream_fails(adapter: DockerAdapter, box: str) -> None:
    with pytest.raises(TransferBroken):
        adapter.put_file(box, "/golem/input/long.txt", 2, 0o644, iter([b"abc"]))


def test_put_file_does_not_replace_a_folder(adapter: DockerAdapter, box: str) -> None:
    adapter.put_file(box, "/golem/work/keep/me.txt", 2, 0o644, iter([b"ok"]))
    with pytest.raises(NotAFile) as caught:
        adapter.put_file(box, "/golem/work/keep", 2, 0o644, iter([b"no"]))
    assert caught.value.code == ErrorCode.NOT_A_FILE
    assert run(adapter, box, "cat", "/golem/work/keep/me.txt").stdout == b"ok"


def test_put_and_get_20_mib(adapter: DockerAdapter, box: str) -> None:
    size = 20 * MIB
    piece = os.urandom(MIB)
    expected = hashlib.sha256(piece * 20).hexdigest()
    assert adapter.put_file(box, "/golem/input/big.bin", size, 0o644, (piece for _ in range(20))) == size
    assert sh(adapter, box, "sha256sum /golem/input/big.bin").split()[0] == expected
    stream = adapter.open_download(box, "/golem/input/big.bin")
    digest, total = hashlib.sha256(), 0
    try:
        for chunk in stream.chunks:
            assert len(chunk) <= 256 * 1024
            digest.update(chunk)
            total += len(chunk)
    finally:
        stream.close()
    assert (stream.kind, stream.size, total) == ("file", size, size)
    assert digest.hexdigest() == expected


# -- downloads ------------------------------------------------------------------------------


def read_all(adapter: DockerAdapter, box: str, path: str) -> bytes:
    stream = adapter.open_download(box, path)
    try:
        return b"".join(stream.chunks)
    finally:
        stream.close()


def test_download_file_returns_its_bytes(adapter: DockerAdapter, box: str) -> None:
    sh(adapter, box, "printf 'result 42' > /golem/output/r.txt; chmod 600 /golem/output/r.txt")
    stream = adapter.open_download(box, "/golem/output/r.txt")
    assert (stream.kind, stream.size, stream.mode) == ("file", 9, 0o600)
    assert b"".join(stream.chunks) == b"result 42"
    stream.close()
    stream.close()


def test_download_empty_file(adapter: DockerAdapter, box: str) -> None:
    sh(adapter, box, ": > /golem/output/empty")
    assert read_all(adapter, box, "/golem/output/empty") == b""


def test_download_file_made_in_container(adapter: DockerAdapter, box: str) -> None:
    sh(adapter, box, "head -c 20971520 /dev/urandom > /golem/output/r.bin")
    expected = sh(adapter, box, "sha256sum /golem/output/r.bin").split()[0]
    data = read_all(adapter, box, "/golem/output/r.bin")
    assert len(data) == 20 * MIB
    assert hashlib.sha256(data).hexdigest() == expected


def test_download_closed_early_leaves_the_container_usable(adapter: DockerAdapter, box: str) -> None:
    sh(adapter, box, "head -c 8388608 /dev/zero > /golem/output/z.bin")
    stream = adapter.open_download(box, "/golem/output/z.bin")
    assert next(stream.chunks)
    stream.close()
    assert read_all(adapter, box, "/golem/output/z.bin") == bytes(8 * MIB)


def test_download_symlink_to_file_follows_it(adapter: DockerAdapter, box: str) -> None:
    sh(adapter, box, "echo target > /golem/output/t.txt; ln -s t.txt /golem/output/link")
    assert read_all(adapter, box, "/golem/output/link") == b"target\n"


def test_download_folder_is_a_tar_stream(adapter: DockerAdapter, box: str) -> None:
    sh(adapter, box, "mkdir -p /golem/output/d/sub; echo a > /golem/output/d/a; echo b > /golem/output/d/sub/b")
    stream = adapter.open_download(box, "/golem/output/d")
    assert (stream.kind, stream.size) == ("dir", None)
    data = b"".join(stream.chunks)
    stream.close()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}  # type: ignore[union-attr]
    assert files == {"d/a": b"a\n", "d/sub/b": b"b\n"}


def test_download_dangling_link_is_file_not_found(adapter: DockerAdapter, box: str) -> None:
    sh(adapter, box, "ln -s /nowhere /golem/output/dangling")
    with pytest.raises(PathMissing, match="/golem/output/dangling"):
        adapter.open_download(box, "/golem/output/dangling")


def test_download_missing_path_is_file_not_found(adapter: DockerAdapter, box: str) -> None:
    with pytest.raises(PathMissing, match="/golem/output/nope") as caught:
        adapter.open_download(box, "/golem/output/nope")
    assert caught.value.code == ErrorCode.FILE_NOT_FOUND


# -- commands -------------------------------------------------------------------------------


def test_exec_exit_codes(adapter: DockerAdapter, box: str) -> None:
    assert run(adapter, box, "true").exit_code == 0
    assert run(adapter, box, "sh", "-c", "exit 3").exit_code == 3


def test_exec_env_and_workdir(adapter: DockerAdapter, box: str) -> None:
    outcome = run(adapter, box, "sh", "-c", 'echo "$GREETING"; pwd', env={"GREETING": "hi there"}, workdir="/tmp")
    assert outcome.stdout == b"hi there\n/tmp\n"
    assert run(adapter, box, "pwd").stdout == b"/golem/work\n"  # the image's WORKDIR


def test_exec_separates_stdout_and_stderr(adapter: DockerAdapter, box: str) -> None:
    outcome = run(adapter, box, "sh", "-c", "echo out; echo err >&2; echo out2")
    assert (outcome.stdout, outcome.stderr) == (b"out\nout2\n", b"err\n")
    assert not (outcome.timed_out or outcome.killed or outcome.stdout_truncated or outcome.stderr_truncated)
    assert outcome.duration > 0


def test_exec_output_is_capped(adapter: DockerAdapter, box: str) -> None:
    outcome = run(adapter, box, "sh", "-c", "head -c 300000 /dev/zero; echo small >&2", max_output=1000)
    assert outcome.exit_code == 0
    assert (outcome.stdout, outcome.stdout_truncated) == (bytes(1000), True)
    assert (outcome.stderr, outcome.stderr_truncated) == (b"small\n", False)


def test_exec_missing_program_is_an_outcome(adapter: DockerAdapter, box: str) -> None:
    outcome = run(adapter, box, "no-such-program")
    assert outcome.exit_code in (126, 127)
    assert b"no-such-program" in outcome.stderr
    assert outcome.stdout == b""


def test_exec_timeout_kills_the_whole_tree(adapter: DockerAdapter, box: str) -> None:
    started = time.monotonic()
    outcome = run(adapter, box, "sh", "-c", "echo begun; sleep 100; echo x", timeout=1)
    assert time.monotonic() - started < 2.5  # ended by the kill, not by the 2 s fallback
    assert outcome.timed_out
    assert not outcome.killed
    assert outcome.exit_code == 137
    assert outcome.stdout == b"begun\n"
    assert "sleep 100" not in sh(adapter, box, "ps -o args")


def test_exec_kill_from_another_thread(adapter: DockerAdapter, box: str) -> None:
    process = adapter.start_exec(box, ["sh", "-c", "sleep 100 & sleep 100; echo x"], {}, None, MIB)
    timer = threading.Timer(0.5, process.kill)
    timer.start()
    started = time.monotonic()
    outcome = process.wait(30)
    timer.join()
    process.kill()  # idempotent, and harmless once finished
    assert time.monotonic() - started < 2.4  # ended by the kill, not by the 2 s fallback
    assert outcome.killed
    assert not outcome.timed_out
    assert outcome.stdout == b""
    assert "sleep 100" not in sh(adapter, box, "ps -o args")
    assert process.wait(30) is outcome


def test_exec_timeout_cuts_a_stream_held_by_an_escaped_process(adapter: DockerAdapter, box: str) -> None:
    # The double fork leaves a new session under the container's init, beyond the tree.
    started = time.monotonic()
    outcome = run(adapter, box, "sh", "-c", "(setsid sleep 100 &); sleep 100", timeout=1)
    assert outcome.timed_out
    assert time.monotonic() - started < 6


def test_kill_after_the_container_is_gone(adapter: DockerAdapter, box: str) -> None:
    process = adapter.start_exec(box, ["sleep", "100"], {}, None, MIB)
    adapter.remove(box)
    process.kill()
    process.kill()


def test_exec_in_parallel_on_several_containers(adapter: DockerAdapter, make_container: MakeContainer) -> None:
    boxes = [make_container() for _ in range(3)]
    results: dict[str, bytes] = {}

    def work(container_id: str) -> None:
        results[container_id] = run(adapter, container_id, "sh", "-c", "sleep 0.5; hostname").stdout

    threads = [threading.Thread(target=work, args=(b,)) for b in boxes]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started < 3
    assert sorted(results) == sorted(boxes)
    assert all(results[b].strip() and b.startswith(results[b].strip().decode()) for b in boxes)


def test_limits_docker_would_read_as_none_are_refused(adapter: DockerAdapter, image: str) -> None:
    for cpus, memory in ((1.0, 0), (1e-12, 256 * MIB)):
        with pytest.raises(DockerFailed, match="treat as none"):
            adapter.create(ContainerSpec(activity="nolimit", image=image, cpus=cpus, memory=memory))
