"""How much disk an image layer takes once extracted, read from its tar headers as it streams.

A layer is an uncompressed tar. Its bytes say little about what it becomes on a disk: a
sparse file of 1 GiB is a few KiB of tar (PAX ``GNU.sparse.realsize``, GNU's old ``S``
headers), and Docker writes it out whole. :class:`TarMeter` is fed the layer's bytes as they
come, in chunks cut anywhere, and adds up its **expanded size**: for every entry its real
size (sparse files at their full size) rounded up to whole 4 KiB blocks, and at least one
block (an inode, a directory, a link). It keeps only a header (512 bytes) or a PAX/long-name
record (at most :data:`MAX_SPECIAL` bytes) at a time and skips file data without holding it.

It reads the stream exactly as Go's ``archive/tar`` (which Docker extracts layers with) does:
the same entry sizes, header-only types, PAX ``size`` overrides and old GNU sparse extension
blocks, so a layer cannot hide headers from the meter in what it takes for file data. Where a
size could be read two ways (PAX ``size``, ``GNU.sparse.size``, ``GNU.sparse.realsize``, the
``S`` header's realsize), it counts the largest. A header it cannot trust (bad checksum, a
size no layer has, a PAX record past 1 MiB, a stream cut inside an entry) is
:class:`~kiln.protocol.errors.ImageCorrupt`::

    meter = TarMeter()
    for chunk in chunks:
        meter.feed(chunk)
        if meter.expanded > limit: ...refuse
    meter.finish()  # ImageCorrupt if the stream stopped inside an entry
    meter.expanded

No I/O here; the hub meters each layer of a push, and a provider each layer it loads.
"""

from __future__ import annotations

import re
from enum import Enum, auto
from typing import Final

from kiln.protocol.errors import ImageCorrupt

BLOCK: Final = 512
"""A tar block: headers are one, data is padded to whole blocks."""
DISK_BLOCK: Final = 4096
"""What one entry weighs at least once extracted, and the unit its size is rounded up to."""
MAX_SPECIAL: Final = 2**20
"""The longest PAX header or GNU long name (Go's ``archive/tar`` refuses longer ones too)."""
MAX_ENTRY_SIZE: Final = 2**50
"""No entry of a layer is larger (1 PiB): a bigger size is a hostile header."""

_HEADER_ONLY: Final = frozenset(b"123456")  # hard link, symlink, char, block, dir, fifo: no data follows
_ZERO: Final = bytes(BLOCK)
_HIGH: Final = bytes(range(0x80, 0x100))
_OCTAL: Final = re.compile(rb"^[0-7]+$")
_DECIMAL: Final = re.compile(r"^[0-9]+$")
_USTAR: Final = b"ustar\x0000"
_GNU: Final = b"ustar  \x00"
_SPARSE_KEYS: Final = ("GNU.sparse.size", "GNU.sparse.realsize")


class _State(Enum):
    HEADER = auto()  # collecting a 512-byte header
    SPECIAL = auto()  # collecting a PAX header's records or a GNU long name
    EXTENSION = auto()  # collecting an old GNU sparse extension block
    SKIP = auto()  # passing over file data and padding
    END = auto()  # after the end-of-archive blocks: the rest is ignored (as Docker does)


def disk_size(size: int) -> int:
    """What an entry of ``size`` real bytes weighs: whole 4 KiB blocks, at least one."""
    return max(DISK_BLOCK, -(-size // DISK_BLOCK) * DISK_BLOCK)


class TarMeter:
    """The expanded size of one tar layer, fed as it streams (see the module's docstring)."""

    def __init__(self) -> None:
        self.expanded = 0
        """What the entries seen so far take once extracted (bytes, counted at each header)."""
        self.entries = 0
        self.offset = 0
        """Bytes fed so far."""
        self._state = _State.HEADER
        self._buf = bytearray()
        self._want = BLOCK  # bytes to collect in HEADER, SPECIAL, EXTENSION
        self._skip = 0  # bytes to pass in SKIP
        self._padding = 0  # of which the last are padding (the data before them is whole)
        self._after = 0  # bytes (data and padding) to skip once the EXTENSION blocks are read
        self._special = 0  # the typeflag of the SPECIAL being collected
        self._zero = False  # the last header block was all zeros
        self._pax: dict[str, str] = {}  # the PAX records for the next entry
        self._long_name: str | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Take the next bytes of the layer (any number); ImageCorrupt on a header that cannot be trusted."""
        view = memoryview(data).cast("B")
        pos, end = 0, len(view)
        self.offset += end
        while pos < end:
            state = self._state
            if state is _State.END:
                return
            if state is _State.SKIP:
                taken = min(self._skip, end - pos)
                self._skip -= taken
                pos += taken
                if self._skip == 0:
                    self._state = _State.HEADER
                    self._want = BLOCK
                continue
            taken = min(self._want - len(self._buf), end - pos)
            self._buf += view[pos : pos + taken]
            pos += taken
            if len(self._buf) < self._want:
                continue
            collected = bytes(self._buf)
            self._buf.clear()
            if state is _State.HEADER:
                self._header(collected)
            elif state is _State.SPECIAL:
                self._special_done(collected)
            else:
                self._extension(collected)

    @property
    def skippable(self) -> int:
        """Bytes of file data the meter would pass over unread now: a reader of a file may seek past
        them and call :meth:`skip` instead of feeding them."""
        return self._skip if self._state is _State.SKIP else 0

    def skip(self, count: int) -> None:
        """``count`` bytes (at most :attr:`skippable`) were passed over without being fed."""
        if not 0 <= count <= self.skippable:
            raise ValueError(f"cannot skip {count} bytes: {self.skippable} are skippable")
        self.offset += count
        self._skip -= count
        if self._skip == 0 and self._state is _State.SKIP:
            self._state, self._want = _State.HEADER, BLOCK

    def finish(self) -> int:
        """The layer ended: its expanded size; ImageCorrupt if it stopped inside a header or an entry's data."""
        if self._state is _State.END or (self._state is _State.HEADER and not self._buf):
            return self.expanded
        if self._state is _State.SKIP and self._skip <= self._padding:
            return self.expanded  # cut in the padding after an entry: Go's reader takes that as the end
        raise ImageCorrupt(f"the layer's tar ends inside an entry (after {self.offset} bytes)")

    # --- what the blocks say ----------------------------------------------------------------

    def _skip_to(self, size: int, pad: int | None = None) -> None:
        """Pass over ``size`` bytes of data and their padding (or only ``pad`` bytes), then read a header."""
        pad = -size % BLOCK if pad is None else pad
        if size + pad == 0:
            self._state, self._want = _State.HEADER, BLOCK
        else:
            self._state, self._skip, self._padding = _State.SKIP, size + pad, pad

    def _header(self, block: bytes) -> None:
        if block == _ZERO:
            if self._zero:
                self._state = _State.END
            self._zero = True
            return
        if self._zero:
            raise ImageCorrupt(f"the layer's tar has a header after a zero block (at byte {self.offset})")
        _check_sum(block, self.offset)
        kind = block[156]
        size = _number(block[124:136], "size")
        if kind in b"xgLK":
            if size > MAX_SPECIAL:
                what = "PAX header" if kind in b"xg" else "GNU long name"
                raise ImageCorrupt(f"the layer's tar has a {what} of {size} bytes (at most {MAX_SPECIAL})")
            self._special = kind
            if size == 0:
                self._special_done(b"")
            else:
                self._state, self._want = _State.SPECIAL, size
            return
        self._entry(block, kind, size)

    def _special_done(self, data: bytes) -> None:
        kind, size = self._special, len(data)
        if kind == ord("x"):
            self._pax = pax_records(data)
        elif kind == ord("g"):
            pax_records(data)  # checked as Go does, then dropped: a global header is no file
            self._pax, self._long_name = {}, None
        elif kind == ord("L"):
            self._long_name = data.split(b"\x00", 1)[0].decode("utf-8", "replace")
        self._skip_to(0, -size % BLOCK)

    def _entry(self, block: bytes, kind: int, size: int) -> None:
        pax, self._pax = self._pax, {}
        long_name, self._long_name = self._long_name, None
        if "size" in pax:
            size = _decimal(pax["size"], "PAX size")
        header_only = kind in _HEADER_ONLY
        if kind == 0:  # the old "regular file" type: a directory when its name ends in a slash
            name = long_name or pax.get("path") or _header_name(block)
            header_only = name.endswith("/")
        real = 0 if header_only else size
        for key in _SPARSE_KEYS:
            if key in pax:
                real = max(real, _decimal(pax[key], key))
        extended = False
        if kind == ord("S"):
            if block[257:265] != _GNU:
                raise ImageCorrupt(f"the layer's tar has a GNU sparse header not in GNU format (at byte {self.offset})")
            real = max(real, _number(block[483:495], "sparse real size"))
            extended = block[482] != 0
        self.entries += 1
        self.expanded += disk_size(real)
        data = 0 if header_only else size
        if extended:
            self._state, self._want, self._after = _State.EXTENSION, BLOCK, data
        else:
            self._skip_to(data)

    def _extension(self, block: bytes) -> None:
        """An old GNU sparse extension block (21 more map entries): another follows while its flag is set."""
        if block[504] == 0:
            self._skip_to(self._after)


def _check_sum(block: bytes, offset: int) -> None:
    """ImageCorrupt unless the header's checksum field holds its unsigned or signed sum (Go takes either)."""
    field = block[148:156]
    stored = _number(field, "checksum")
    unsigned = sum(block) - sum(field) + 8 * 32
    if stored == unsigned:
        return
    high = len(block) - len(block.translate(None, _HIGH)) - (len(field) - len(field.translate(None, _HIGH)))
    if stored != unsigned - 256 * high:
        raise ImageCorrupt(f"the layer's tar has a header with a bad checksum (at byte {offset})")


def _number(field: bytes, what: str) -> int:
    """A numeric header field as Go reads it: base-256 when its top bit is set, else octal."""
    if field and field[0] & 0x80:
        if field[0] & 0x40:
            raise ImageCorrupt(f"the layer's tar has a negative {what}")
        value = int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    else:
        text = field.strip(b" \x00").split(b"\x00", 1)[0]
        if not text:
            return 0
        if not _OCTAL.match(text):
            raise ImageCorrupt(f"the layer's tar has a {what} that is not a number: {text[:16]!r}")
        value = int(text, 8)
    if value > MAX_ENTRY_SIZE and what != "checksum":
        raise ImageCorrupt(f"the layer's tar has an absurd {what} ({value} bytes)")
    return value


def _decimal(text: str, what: str) -> int:
    if not _DECIMAL.match(text) or len(text) > 20:
        raise ImageCorrupt(f"the layer's tar has a {what} that is not a number: {text[:32]!r}")
    value = int(text)
    if value > MAX_ENTRY_SIZE:
        raise ImageCorrupt(f"the layer's tar has an absurd {what} ({value} bytes)")
    return value


def _header_name(block: bytes) -> str:
    """The entry's name from its header: ustar's prefix joined to its name."""
    name = block[0:100].split(b"\x00", 1)[0]
    if block[257:265] == _USTAR:
        # star's variant keeps times at the prefix's end (Go reads a shorter prefix then)
        end = 476 if block[508:512] == b"tar\x00" else 500
        prefix = block[345:end].split(b"\x00", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "replace")


def pax_records(data: bytes) -> dict[str, str]:
    """The records of a PAX header (``"<length> <key>=<value>\\n"`` each), as Go parses them."""
    records: dict[str, str] = {}
    rest = data
    while rest:
        length_text, space, _ = rest[:24].partition(b" ")
        if not space or not length_text.isdigit():
            raise ImageCorrupt("the layer's tar has a PAX record without its length")
        length = int(length_text)
        if length < 5 or length > len(rest) or length <= len(length_text) + 1:
            raise ImageCorrupt("the layer's tar has a PAX record whose length is wrong")
        record, rest = rest[len(length_text) + 1 : length], rest[length:]
        if not record.endswith(b"\n") or b"=" not in record:
            raise ImageCorrupt("the layer's tar has a malformed PAX record")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return records
