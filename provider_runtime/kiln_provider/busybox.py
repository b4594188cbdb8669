"""The build context of ``kiln-busybox``: a ``FROM scratch`` image holding a static busybox.

No registry can be reached where Kiln is tested, so its test image is built from the host's
static busybox (Debian's ``busybox-static``): the program, a link per applet, the work
folders, and a ``passwd`` that knows ``nobody``. Nothing here calls Docker:
:meth:`~kiln_provider.docker_adapter.DockerAdapter.build_busybox_image` builds it.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from typing import Final

DOCKERFILE: Final = b'FROM scratch\nCOPY rootfs/ /\nWORKDIR /golem/work\nCMD ["sh"]\n'
_PASSWD: Final = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
_GROUP: Final = b"root:x:0:\nnogroup:x:65534:\n"


def applets_of(busybox: str) -> list[str]:
    """The applets the busybox program at ``busybox`` has (``busybox --list``)."""
    return subprocess.run([busybox, "--list"], capture_output=True, check=True, text=True).stdout.split()


def busybox_context(program: bytes, applets: list[str]) -> io.BytesIO:
    """The build context (a tar, read from its start) of an image holding ``program`` as
    ``/bin/busybox`` and a link to it for each of ``applets``."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:

        def add(name: str, data: bytes | None = None, mode: int = 0o755, link: str | None = None) -> None:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
            elif data is None:
                info.type = tarfile.DIRTYPE
            else:
                info.size = len(data)
            tar.addfile(info, None if data is None else io.BytesIO(data))

        add("Dockerfile", DOCKERFILE, 0o644)
        for folder in ("rootfs", "rootfs/bin", "rootfs/etc", "rootfs/golem"):
            add(folder)
        for folder in ("input", "output", "work"):
            add(f"rootfs/golem/{folder}")
        add("rootfs/tmp", mode=0o1777)
        add("rootfs/bin/busybox", program)
        for applet in applets:
            if applet != "busybox":
                add(f"rootfs/bin/{applet}", link="busybox")
        add("rootfs/etc/passwd", _PASSWD, 0o644)
        add("rootfs/etc/group", _GROUP, 0o644)
    context.seek(0)
    return context
