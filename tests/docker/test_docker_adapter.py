"""The Docker adapter against the real engine: no mocks, every container removed in teardown.

Commands in its containers run through their agent (tests/docker/test_agent_channel.py); here a
plain ``docker exec`` looks inside them, as a neighbour the adapter does not use.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kiln.protocol.codes import ErrorCode
from kiln_provider.docker_adapter import (
    AGENT_IN_CONTAINER,
    LABEL_ACTIVITY,
    LABEL_PROVIDER,
    ContainerSpec,
    DockerAdapter,
    Started,
)
from kiln_provider.errors import BadPath, DockerFailed, ImageMissing, NotAFile, PathMissing, TransferBroken
from kiln_provider.offering import OFFER_LABEL
from kiln_provider.volume import Volume, put_file, volume_name

pytestmark = [pytest.mark.docker, pytest.mark.timeout(30)]

PROVIDER = f"test-{os.getpid()}"
TAG = "kiln-busybox:latest"
MIB = 1024 * 1024
NOBODY = (65534, 65534)  # who commands in these containers run as (the image names no USER)

MakeContainer = Callable[..., str]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> DockerAdapter:
    return DockerAdapter(PROVIDER, volumes=tmp_path_factory.mktemp("volumes"))


@pytest.fixture(scope="module")
def image(adapter: DockerAdapter) -> str:
    adapter.build_busybox_image(TAG)
    return TAG


@pytest.fixture
def containers(adapter: DockerAdapter) -> Iterator[list[Started]]:
    """Every container a test creates; all removed afterwards, whatever happened."""
    created: list[Started] = []
    yield created
    for started in created:
        started.channel.close()
        adapter.remove(started.id)


@pytest.fixture
def make_container(adapter: DockerAdapter, image: str, containers: list[Started]) -> MakeContainer:
    def make(on: DockerAdapter = adapter, **spec: object) -> str:
        fields: dict[str, object] = {
            "activity": uuid.uuid4().hex[:12],
            "image": image,
            "cpus": 1.0,
            "memory": 256 * MIB,
            "storage": 64 * MIB,
        }
        started = on.create(ContainerSpec(**(fields | spec)))  # type: ignore[arg-type]
        containers.append(started)
        return started.id

    return make


@pytest.fixture
def box(make_container: MakeContainer) -> str:
    return make_container()


def run(container_id: str, *argv: str) -> subprocess.CompletedProcess[bytes]:
    """``docker exec``: a look inside the container that does not go through the adapter."""
    return subprocess.run(["docker", "exec", container_id, *argv], capture_output=True, timeout=20)


def sh(adapter: DockerAdapter, container_id: str, script: str) -> str:
    done = run(container_id, "sh", "-c", script)
    assert done.returncode == 0, done
    return done.stdout.decode()


def volume(adapter: DockerAdapter, container_id: str) -> Volume:
    """The volume of a container the adapter made (where uploads go: ``volume.put_file``)."""
    found = adapter.volume(container_id)
    assert found is not None
    return found


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


def test_images_lists_the_busybox_tag_and_its_offer_label(adapter: DockerAdapter, image: str) -> None:
    [busybox] = [local for local in adapter.images() if TAG in local.tags]
    assert busybox.labels[OFFER_LABEL] == "kiln-busybox"


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
    assert not host.get("Init"), "the agent is PID 1"
    assert host["AutoRemove"] is True, "the container goes when its agent exits"
    assert host["ReadonlyRootfs"] is True, "what it writes goes to its volume"
    assert host["LogConfig"]["Type"] == "none", "the agent's channel (all output) is not copied to a log on the host"
    volume = adapter.volumes.root / volume_name("act/1")
    assert sorted(host["Binds"]) == sorted(
        [f"{adapter.agent}:{AGENT_IN_CONTAINER}:ro", f"{volume}/golem:/golem:rw", f"{volume}/tmp:/tmp:rw"]
    )
    config = inspected["Config"]
    assert isinstance(config, dict)
    labels = config["Labels"]
    assert isinstance(labels, dict)
    assert labels[LABEL_PROVIDER] == PROVIDER
    assert labels[LABEL_ACTIVITY] == "act/1"
    assert config["Entrypoint"] == [AGENT_IN_CONTAINER]
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
    assert put_file(volume(adapter, box), "/golem/input/a.txt", 5, 0o640, iter([b"he", b"llo"]), owner=NOBODY) == 5
    assert run(box, "cat", "/golem/input/a.txt").stdout == b"hello"
    assert sh(adapter, box, "stat -c %a /golem/input/a.txt") == "640\n"


def test_put_file_gives_the_file_and_its_work_folders_to_the_owner(adapter: DockerAdapter, box: str) -> None:
    put_file(volume(adapter, box), "/golem/input/deep/er/f.txt", 3, 0o600, iter([b"abc"]), owner=(65534, 65534))
    owners = sh(adapter, box, "stat -c %u:%g /golem /golem/input /golem/input/deep /golem/input/deep/er/f.txt")
    assert owners.split() == ["65534:65534"] * 4
    put_file(volume(adapter, box), "/tmp/elsewhere/g.txt", 1, 0o644, iter([b"x"]), owner=(65534, 65534))
    assert sh(adapter, box, "stat -c %u /tmp/elsewhere /tmp/elsewhere/g.txt").split() == ["0", "65534"]


def test_put_file_creates_parent_folders(adapter: DockerAdapter, box: str) -> None:
    put_file(volume(adapter, box), "/golem/input/x/y/z/c.txt", 5, 0o644, iter([b"deep!"]), owner=NOBODY)
    assert run(box, "cat", "/golem/input/x/y/z/c.txt").stdout == b"deep!"
    assert sh(adapter, box, "stat -c %a /golem/input/x /golem/input/x/y/z") == "755\n755\n"
    assert sh(adapter, box, "stat -c %a /tmp") == "1777\n"  # existing folders keep their mode


def test_put_file_short_stream_fails(adapter: DockerAdapter, box: str) -> None:
    with pytest.raises(TransferBroken, match="3 of 10"):
        put_file(volume(adapter, box), "/golem/input/short.txt", 10, 0o644, iter([b"abc"]), owner=NOBODY)


def test_put_file_long_stream_fails(adapter: DockerAdapter, box: str) -> None:
    with pytest.raises(TransferBroken):
        put_file(volume(adapter, box), "/golem/input/long.txt", 2, 0o644, iter([b"abc"]), owner=NOBODY)


def test_put_file_does_not_replace_a_folder(adapter: DockerAdapter, box: str) -> None:
    put_file(volume(adapter, box), "/golem/work/keep/me.txt", 2, 0o644, iter([b"ok"]), owner=NOBODY)
    with pytest.raises(NotAFile) as caught:
        put_file(volume(adapter, box), "/golem/work/keep", 2, 0o644, iter([b"no"]), owner=NOBODY)
    assert caught.value.code == ErrorCode.NOT_A_FILE
    assert run(box, "cat", "/golem/work/keep/me.txt").stdout == b"ok"


def test_put_and_get_20_mib(adapter: DockerAdapter, box: str) -> None:
    size = 20 * MIB
    piece = os.urandom(MIB)
    expected = hashlib.sha256(piece * 20).hexdigest()
    assert (
        put_file(volume(adapter, box), "/golem/input/big.bin", size, 0o644, (piece for _ in range(20)), owner=NOBODY)
        == size
    )
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


def test_limits_docker_would_read_as_none_are_refused(adapter: DockerAdapter, image: str) -> None:
    for cpus, memory in ((1.0, 0), (1e-12, 256 * MIB)):
        with pytest.raises(DockerFailed, match="treat as none"):
            adapter.create(ContainerSpec(activity="nolimit", image=image, cpus=cpus, memory=memory, storage=MIB))


# -- storage: what a container writes goes to its volume, of the size it rented -------------


def write(container_id: str, path: str, mib: int) -> subprocess.CompletedProcess[bytes]:
    return run(container_id, "dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}")


def test_writing_past_the_rented_storage_fails_inside(make_container: MakeContainer) -> None:
    box = make_container(storage=64 * MIB)
    past = write(box, "/golem/work/big", 100)
    assert past.returncode != 0
    assert b"No space left on device" in past.stderr
    run(box, "rm", "/golem/work/big")
    assert write(box, "/golem/work/half", 32).returncode == 0


def test_tmp_and_golem_share_the_one_budget(adapter: DockerAdapter, make_container: MakeContainer) -> None:
    box = make_container(storage=64 * MIB)
    assert write(box, "/golem/output/a", 40).returncode == 0
    past = write(box, "/tmp/b", 40)
    assert past.returncode != 0 and b"No space left on device" in past.stderr
    run(box, "rm", "/tmp/b")  # what it wrote up to the end took the rest
    assert write(box, "/tmp/c", 8).returncode == 0
    assert sh(adapter, box, "stat -c %a /tmp") == "1777\n"


def test_the_rest_of_the_root_filesystem_is_read_only(make_container: MakeContainer) -> None:
    for user_box in (make_container(), make_container(root=True)):
        for path in ("/x", "/etc/x", "/bin/x", "/.kiln-agent"):
            done = run(user_box, "sh", "-c", f"echo x > {path}")
            assert done.returncode != 0, path
            assert b"Read-only file system" in done.stderr or b"Permission denied" in done.stderr, done
        assert b"Read-only file system" in run(user_box, "sh", "-c", "echo x > /etc/passwd").stderr


def test_commands_write_their_folders_and_tmp(adapter: DockerAdapter, make_container: MakeContainer) -> None:
    box = make_container()
    script = "for d in /golem /golem/input /golem/output /golem/work /tmp; do echo hi > $d/f && cat $d/f; done"
    assert sh(adapter, box, script) == "hi\n" * 5
    assert sh(adapter, box, "id -u; stat -c %u /golem/work/f /tmp/f") == "65534\n65534\n65534\n"


def test_uploads_fill_the_volume_and_no_more(adapter: DockerAdapter, make_container: MakeContainer) -> None:
    box = make_container(storage=16 * MIB)
    piece = bytes(MIB)
    with pytest.raises(TransferBroken, match="no space left"):
        put_file(volume(adapter, box), "/golem/input/big", 32 * MIB, 0o644, iter([piece] * 32), owner=NOBODY)
    assert sh(adapter, box, "ls /golem/input") == ""
    put_file(volume(adapter, box), "/golem/input/fits", 8 * MIB, 0o644, iter([piece] * 8), owner=NOBODY)
    assert read_all(adapter, box, "/golem/input/fits") == bytes(8 * MIB)


def test_uploads_go_only_to_the_volume(adapter: DockerAdapter, box: str) -> None:
    with pytest.raises(BadPath, match="read-only") as caught:
        put_file(volume(adapter, box), "/etc/x", 1, 0o644, iter([b"x"]), owner=NOBODY)
    assert caught.value.code == ErrorCode.BAD_PATH
    # Docker's archive API followed this link into the root filesystem; uploads here never do.
    sh(adapter, box, "ln -s /etc /golem/work/link")
    with pytest.raises(BadPath, match="do not follow links"):
        put_file(volume(adapter, box), "/golem/work/link/escaped", 1, 0o644, iter([b"x"]), owner=NOBODY)
    changed = subprocess.run(["docker", "diff", box], capture_output=True, check=True, text=True).stdout
    assert "escaped" not in changed
    put_file(volume(adapter, box), "/tmp/t.txt", 2, 0o600, iter([b"ok"]), owner=NOBODY)
    assert run(box, "cat", "/tmp/t.txt").stdout == b"ok"


def volume_of(adapter: DockerAdapter, activity: str) -> tuple[Path, Path]:
    name = volume_name(activity)
    return adapter.volumes.root / name, adapter.volumes.root / f"{name}.img"


def test_remove_takes_the_volume(adapter: DockerAdapter, make_container: MakeContainer) -> None:
    box = make_container(activity="with-volume")
    mount, file = volume_of(adapter, "with-volume")
    assert os.path.ismount(mount) and file.exists()
    adapter.remove(box)
    assert not mount.exists() and not file.exists()
    assert str(mount) not in Path("/proc/self/mountinfo").read_text()


def test_a_volume_the_container_outlived_goes_too(adapter: DockerAdapter, make_container: MakeContainer) -> None:
    box = make_container(activity="self-removed")
    subprocess.run(["docker", "rm", "-f", box], capture_output=True, check=True)  # gone behind our back
    adapter.remove(box)
    mount, file = volume_of(adapter, "self-removed")
    assert not mount.exists() and not file.exists()


def test_remove_stale_takes_an_earlier_runs_volumes(
    adapter: DockerAdapter, make_container: MakeContainer, tmp_path: Path
) -> None:
    name = f"stale-{uuid.uuid4().hex[:8]}"
    earlier = DockerAdapter(name, volumes=tmp_path / "volumes")
    make_container(on=earlier, activity="a")
    make_container(on=earlier, activity="b")
    earlier.volumes.make("orphan", MIB)  # a volume whose container never came
    restarted = DockerAdapter(name, volumes=tmp_path / "volumes")
    assert restarted.remove_stale() == 2
    assert list((tmp_path / "volumes").iterdir()) == []
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()


def test_a_failed_create_leaves_no_volume(adapter: DockerAdapter, image: str, tmp_path: Path) -> None:
    broken = DockerAdapter(PROVIDER, agent="/nonexistent/agent", volumes=tmp_path / "volumes")
    with pytest.raises(DockerFailed):
        broken.create(ContainerSpec(activity="broken", image=image, cpus=1.0, memory=64 * MIB, storage=MIB))
    assert list((tmp_path / "volumes").iterdir()) == []


def test_an_images_workdir_on_the_volume_exists(
    adapter: DockerAdapter, make_container: MakeContainer, image: str, images: list[str]
) -> None:
    tag = f"kiln-workdir-{uuid.uuid4().hex[:8]}:1"
    dockerfile = f"FROM {image}\nWORKDIR /golem/work/deep/er\n".encode()
    subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, capture_output=True, check=True)
    images.append(tag)
    box = make_container(image=tag)
    assert sh(adapter, box, "pwd; stat -c %u /golem/work/deep/er") == "/golem/work/deep/er\n65534\n"
