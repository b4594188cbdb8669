"""The tar meter (kiln.protocol.layers): Python's tarfile in every format, base-256 sizes, hostile
headers, and chunks cut anywhere. GNU tar's sparse formats: tests/service/test_layers_gnu_tar.py."""

from __future__ import annotations

import io
import random
import tarfile
from collections.abc import Iterable
from typing import Literal

import pytest

from kiln.protocol.errors import ImageCorrupt
from kiln.protocol.layers import BLOCK, DISK_BLOCK, MAX_SPECIAL, TarMeter, disk_size


def meter(data: bytes, cuts: Iterable[int] = ()) -> int:
    """The expanded size of ``data`` fed in pieces cut at ``cuts``."""
    m = TarMeter()
    start = 0
    for cut in sorted(cuts):
        m.feed(data[start:cut])
        start = cut
    m.feed(data[start:])
    return m.finish()


def expected(data: bytes) -> int:
    """What Python's tarfile says the entries' real sizes are, weighed as the meter weighs them."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return sum(disk_size(member.size if member.isfile() else 0) for member in tar.getmembers())


def test_a_base_256_size_of_a_regular_file() -> None:
    """A header whose size field is base-256 (tarfile's GNU format past 8 GiB), its data fed in big pieces."""
    info = tarfile.TarInfo("huge")
    info.size = 9 * 2**30
    header = info.tobuf(tarfile.GNU_FORMAT)
    assert header[124] & 0x80  # base-256
    m = TarMeter()
    m.feed(header)
    zeros = bytes(2**24)
    for _ in range(info.size // len(zeros)):
        m.feed(zeros)
    m.feed(bytes(2 * BLOCK))
    assert m.finish() == 9 * 2**30


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_python_tarfiles_in_every_format(fmt: int) -> None:
    data = io.BytesIO()
    rng = random.Random(fmt)
    with tarfile.open(fileobj=data, mode="w", format=fmt) as tar:
        for n in range(40):
            kind = n % 4
            name = f"d{n}/" + ("long-" * 30 if fmt != tarfile.USTAR_FORMAT and n % 7 == 0 else "") + f"f{n}"
            info = tarfile.TarInfo(name)
            if kind == 0:
                info.type = tarfile.DIRTYPE
            elif kind == 1:
                info.type, info.linkname = tarfile.SYMTYPE, "elsewhere"
            else:
                body = rng.randbytes(rng.choice([0, 1, 511, 512, 513, 5000]))
                info.size = len(body)
                if fmt == tarfile.PAX_FORMAT and n % 5 == 0:
                    info.pax_headers = {"comment": "x" * 300}
                tar.addfile(info, io.BytesIO(body))
                continue
            tar.addfile(info)
    raw = data.getvalue()
    size = expected(raw)
    assert meter(raw) == size
    for cut in range(0, len(raw), 97):  # two pieces, cut at many places
        assert meter(raw, [cut]) == size
    m = TarMeter()
    for byte in range(len(raw)):  # one byte at a time
        m.feed(raw[byte : byte + 1])
    assert m.finish() == size


def test_an_entry_weighs_whole_blocks_and_a_layer_may_end_without_its_zero_blocks() -> None:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo("empty"), io.BytesIO())
        info = tarfile.TarInfo("five")
        info.size = 5 * DISK_BLOCK + 1
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    raw = data.getvalue()
    assert meter(raw) == DISK_BLOCK + 6 * DISK_BLOCK
    end_of_data = raw.index(b"five") + BLOCK + 5 * DISK_BLOCK + 1  # its header, then its data
    assert meter(raw[: end_of_data + 3]) == 7 * DISK_BLOCK  # cut in the padding: Go's reader ends there too
    with pytest.raises(ImageCorrupt):
        meter(raw[: end_of_data - 1])
    assert meter(b"") == 0


def _one_file(size: int = 10, fmt: int = tarfile.USTAR_FORMAT, pax: dict[str, str] | None = None) -> bytearray:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=fmt) as tar:
        info = tarfile.TarInfo("f")
        info.size = size
        if pax:
            info.pax_headers = pax
        tar.addfile(info, io.BytesIO(bytes(size)))
    return bytearray(data.getvalue())


def test_a_bad_checksum_is_corrupt() -> None:
    raw = _one_file()
    raw[0] ^= 1
    with pytest.raises(ImageCorrupt, match="checksum") as e:
        meter(bytes(raw))
    assert e.value.code == "image_corrupt"


def test_an_absurd_size_is_corrupt() -> None:
    info = tarfile.TarInfo("absurd")
    info.size = 2**60
    with pytest.raises(ImageCorrupt, match="absurd"):
        meter(info.tobuf(tarfile.GNU_FORMAT))
    with pytest.raises(ImageCorrupt, match="absurd"):
        meter(bytes(_one_file(fmt=tarfile.PAX_FORMAT, pax={"GNU.sparse.realsize": str(2**60)})))


def test_a_huge_pax_header_is_corrupt_before_its_data() -> None:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = MAX_SPECIAL + 1
    m = TarMeter()
    with pytest.raises(ImageCorrupt, match="PAX header"):
        m.feed(info.tobuf(tarfile.USTAR_FORMAT))


def test_malformed_pax_records_are_corrupt() -> None:
    raw = _one_file(fmt=tarfile.PAX_FORMAT, pax={"comment": "hello"})
    at = raw.index(b"comment=")
    raw[at - 3 : at - 1] = b"99"  # the record's length
    with pytest.raises(ImageCorrupt, match="PAX record"):
        meter(bytes(raw))
    with pytest.raises(ImageCorrupt, match="PAX size"):
        meter(bytes(_one_file(fmt=tarfile.PAX_FORMAT, pax={"abcd": "7"})).replace(b"9 abcd=7\n", b"9 size=z\n"))


def test_a_stream_cut_inside_an_entry_is_corrupt() -> None:
    raw = bytes(_one_file(size=5000))
    with pytest.raises(ImageCorrupt, match="ends inside"):
        meter(raw[: BLOCK + 100])
    with pytest.raises(ImageCorrupt, match="ends inside"):
        meter(raw[:100])


def test_a_header_after_a_zero_block_is_corrupt_and_data_after_the_end_is_ignored() -> None:
    raw = bytes(_one_file())
    entry = raw[: 2 * BLOCK]  # its header and its one block of data
    with pytest.raises(ImageCorrupt, match="zero block"):
        meter(entry + bytes(BLOCK) + entry)
    assert meter(raw + b"anything at all, after the end") == DISK_BLOCK


def test_an_old_regular_type_named_with_a_slash_is_a_directory_with_no_data() -> None:
    """Go reads a type '\\0' entry named ``x/`` as a directory: its size field brings no data."""
    info = tarfile.TarInfo("x/")
    info.type = tarfile.AREGTYPE
    info.size = 10 * DISK_BLOCK
    header = info.tobuf(tarfile.USTAR_FORMAT)
    assert meter(header + bytes(2 * BLOCK)) == DISK_BLOCK


def test_a_reader_of_a_file_may_seek_past_the_data() -> None:
    raw = bytes(_one_file(size=100_000))
    m = TarMeter()
    at = 0
    while at < len(raw):
        if m.skippable:
            count = min(m.skippable, len(raw) - at)
            m.skip(count)
            at += count
        else:
            m.feed(raw[at : at + 700])
            at += 700
    assert m.finish() == meter(raw) == disk_size(100_000)
    with pytest.raises(ValueError, match="cannot skip"):
        TarMeter().skip(1)


def _header(fmt: Literal[0, 1, 2] = tarfile.GNU_FORMAT, **fields: object) -> bytearray:
    info = tarfile.TarInfo("h")
    for key, value in fields.items():
        setattr(info, key, value)
    return bytearray(info.tobuf(fmt)[:BLOCK])


def _resum(block: bytearray, signed: bool = False) -> bytes:
    """``block`` with its checksum written again (as the signed sum some old tars wrote)."""
    block[148:156] = b" " * 8
    total = sum((b - 256 if signed and b >= 0x80 else b) for b in block)
    block[148:156] = b"%06o\x00 " % total
    return bytes(block)


def test_numbers_in_headers() -> None:
    negative = _header()
    negative[124:136] = b"\xff" * 12  # base-256, the sign bit set
    with pytest.raises(ImageCorrupt, match="negative size"):
        meter(_resum(negative))
    garbage = _header()
    garbage[124:136] = b"12x4\x00" + bytes(7)
    with pytest.raises(ImageCorrupt, match="not a number"):
        meter(_resum(garbage))
    named = _header(name="caf\xe9-\xff")  # bytes past 0x7f: a checksum written signed is still right
    assert meter(_resum(named, signed=True) + bytes(2 * BLOCK)) == DISK_BLOCK


def test_special_headers() -> None:
    not_gnu = _header(tarfile.USTAR_FORMAT)
    not_gnu[156] = ord("S")
    with pytest.raises(ImageCorrupt, match="not in GNU format"):
        meter(_resum(not_gnu))
    long_link = tarfile.TarInfo("l")
    long_link.type, long_link.linkname = tarfile.SYMTYPE, "x" * 300  # a GNU 'K' header before it
    data = long_link.tobuf(tarfile.GNU_FORMAT)
    assert b"././@LongLink" in data
    assert meter(data + bytes(2 * BLOCK)) == DISK_BLOCK
    empty_pax = _header(tarfile.USTAR_FORMAT)
    empty_pax[156] = ord("x")  # a PAX header with no records
    assert meter(_resum(empty_pax) + bytes(_one_file())) == DISK_BLOCK
    glob = io.BytesIO()
    with tarfile.open(fileobj=glob, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "all"}) as tar:
        tar.addfile(tarfile.TarInfo("after-a-global-header"))
    assert meter(glob.getvalue()) == DISK_BLOCK, "a global header is no file"
    for broken in (b"x comment=a\n", b"99 comment=a\n", b"13 commentxa\n", b"12 comment=a!"):
        block = _header(tarfile.USTAR_FORMAT, size=len(broken))
        block[156] = ord("x")
        with pytest.raises(ImageCorrupt, match="PAX record"):
            meter(_resum(block) + broken + bytes(-len(broken) % BLOCK))


def test_a_ustar_prefix_names_a_directory() -> None:
    """A type '\\0' entry whose name is only its ustar prefix (``prefix/``) is a directory to Go."""
    block = _header(tarfile.USTAR_FORMAT, size=10 * DISK_BLOCK)
    block[156] = 0
    block[0:100] = bytes(100)
    block[345:351] = b"folder"
    assert meter(_resum(block) + bytes(2 * BLOCK)) == DISK_BLOCK
