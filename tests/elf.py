"""What an ELF binary is built for, read from its header as ``file`` would (the tests' own
reading, apart from the provider's check in ``find_agent``): the class, the machine, and
whether it asks for a program interpreter (a dynamic loader) or is static."""

from __future__ import annotations

import struct
from dataclasses import dataclass

EM_X86_64 = 62
EM_AARCH64 = 183
MACHINES = {"x86_64": EM_X86_64, "aarch64": EM_AARCH64}
PT_INTERP = 3


@dataclass(frozen=True)
class Elf:
    bits: int
    """32 or 64 (EI_CLASS)."""
    machine: int
    """e_machine: 62 for x86_64, 183 for aarch64."""
    segments: tuple[int, ...]
    """p_type of every program header."""

    @property
    def static(self) -> bool:
        """No program interpreter: the kernel runs it as it is, with no libc beside it."""
        return PT_INTERP not in self.segments


def read_elf(data: bytes) -> Elf:
    """Parse the header and program headers of a 64-bit ELF; ValueError for anything else."""
    if data[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    ei_class, ei_data = data[4], data[5]
    if ei_class != 2:
        raise ValueError(f"not a 64-bit ELF (EI_CLASS {ei_class})")
    order = {1: "<", 2: ">"}[ei_data]
    (machine,) = struct.unpack_from(order + "H", data, 18)
    (phoff,) = struct.unpack_from(order + "Q", data, 32)
    phentsize, phnum = struct.unpack_from(order + "HH", data, 54)
    segments = tuple(struct.unpack_from(order + "I", data, phoff + i * phentsize)[0] for i in range(phnum))
    return Elf(bits=64, machine=machine, segments=segments)
