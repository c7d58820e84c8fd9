"""This machine's CPU as a runtime sees it: the cores this process may use (what a thread count of 0 means) and
the CPU's feature flags (whether its int8 dot products are exact). The one home of both ideas.

Standard library only and no edgekit imports: bundles carry this file as ``edgekit_cpu.py`` beside the session
modules that use it, so a device resolves "0 threads" and reads its flags exactly as edgekit does."""
from __future__ import annotations

import functools
import os
from collections.abc import Collection

X86 = ("x86_64", "amd64", "i386", "i686", "x86")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")  # x86 instructions that accumulate int8 products in 32 bits

# How a CPU adds int8 products (int8_dot_products): what each runtime's session decides its int8 kernels by
NOT_X86 = "not x86"  # arm64's dot products accumulate in 32 bits
VNNI = "x86 with VNNI"
NO_VNNI = "x86 without VNNI"  # pairs of u8 x s8 products add in saturating 16-bit lanes (255 * 127 * 2 > 32767)
UNKNOWN = "x86, flags unreadable"


def usable_cores() -> list[int]:
    """The ids of the cores this process may run on: its affinity mask where the OS has one (a container or a
    pinned sweep cell may get fewer cores than the machine has), else every core."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def resolve_threads(threads: int | None) -> int:
    """A thread count as a runtime takes it: 0 or None means all cores the process may use."""
    return threads if threads is not None and threads > 0 else len(usable_cores())


def share_cores(sessions: int) -> int:
    """Threads for each of ``sessions`` sessions that run at once (a pipeline's stages): the usable cores shared
    out, at least one each."""
    return max(1, resolve_threads(None) // max(1, sessions))


@functools.cache
def cpu_features() -> frozenset[str] | None:
    """This CPU's feature flags (Linux /proc/cpuinfo, read once per process), or None where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def int8_dot_products(machine: str, flags: Collection[str] | None) -> str:
    """How a CPU of architecture ``machine`` (platform.machine()) with feature ``flags`` (None: unreadable) adds
    int8 products: NOT_X86 or VNNI (exactly, in 32 bits), NO_VNNI (saturating 16-bit lanes), UNKNOWN."""
    if machine.lower() not in X86:
        return NOT_X86
    if flags is None:
        return UNKNOWN
    return VNNI if any(f in flags for f in VNNI_FLAGS) else NO_VNNI
