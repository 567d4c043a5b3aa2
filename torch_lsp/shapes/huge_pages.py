"""The warm worker's heap on 2 MB pages, so that forking it and ending a fork cost less.

Every shape job is a fork of the warm worker (~550 MB resident, ~370 MB of it anonymous: the
Python heap and torch's own allocations). `fork()` copies one page-table entry per 4 KB page of
anonymous memory and takes a reference on each page; the fork's exit drops them all again.
Measured in a warm process here: `fork()` 7.6 ms in the worker, an empty fork's exit 9.2 ms of
system time, a seed job's fork 26 ms of system time against 26 ms of Python. While 30
documents were typed into, system time was half of the two cores (docs/benchmarks.md, "Forks
on huge pages").

On 2 MB transparent huge pages one entry covers 512 pages: `fork()` 1.8 ms, the empty fork's
exit 3.1 ms, the seed job's fork 16-20 ms of system time. Linux puts anonymous memory on huge
pages only where asked (`enabled` is `madvise` on most distributions), and memory that is
already resident moves only with `MADV_COLLAPSE` (Linux 6.1): it copies each 2 MB range into a
huge page, 2.5-5 ms per range here, so the worker does it a few ranges at a time between jobs
(`Collapser.step`; when: `scheduling.huge_page_step_in`).

Only 2 MB ranges already resident (at most MAX_HOLES pages missing, read from
/proc/self/pagemap) are collapsed, so the resident memory stays as it was (+0.1 MB for 240 MB
collapsed); the flag that would make later allocations huge (`MADV_HUGEPAGE`) is not set. A
page the worker writes while a fork shares it splits its 2 MB range back into 4 KB entries
(the kernel copies the 4 KB written): over 40 s of typing into 30 documents the worker's huge
share did not move, so a new pass runs only after the warm-up and after imports (`dirty`).

Where the kernel cannot (THP `never`, before 6.1, not Linux), the first call fails and nothing
else is tried: jobs fork as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from dataclasses import dataclass
from typing import Callable, Iterable

HUGE_PAGE = 2 << 20
MADV_COLLAPSE = 25  # linux/mman.h
MIN_MAPPING = 4 * HUGE_PAGE  # smaller mappings: few entries to save
MIN_DENSITY = 0.5  # resident anonymous share of a mapping worth reading its pages' map for
MAX_HOLES = 4  # pages of a 2 MB range not resident (that collapsing would make resident)
PAGE = 4096
_ENTRY = 8  # bytes per page in /proc/self/pagemap
_TOP_BIT = bytes(byte >> 7 for byte in range(256))  # a byte's bit 7 (the entry's bit 63: present)
STEP_BYTES = 4 * HUGE_PAGE  # one idle step: ~10-20 ms here (what a job arriving then waits)


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    writable_private: bool
    path: str  # "" for anonymous memory; "[heap]", "[stack]", a file
    anonymous_kb: int


def parse_smaps(lines: Iterable[str]) -> list[Mapping]:
    """The mappings of `/proc/PID/smaps` (its lines) with their anonymous resident size."""
    mappings: list[Mapping] = []
    head = None
    anonymous = 0
    for line in lines:
        fields = line.split()
        if not fields:
            continue
        if not fields[0].endswith(":"):  # "start-end perms offset dev inode [path]"
            if head is not None:
                mappings.append(Mapping(*head, anonymous_kb=anonymous))
            start, _, end = fields[0].partition("-")
            try:
                head = (int(start, 16), int(end, 16), fields[1] == "rw-p", fields[5] if len(fields) > 5 else "")
            except (ValueError, IndexError):
                head = None
            anonymous = 0
        elif fields[0] == "Anonymous:" and len(fields) > 1 and fields[1].isdigit():
            anonymous = int(fields[1])
    if head is not None:
        mappings.append(Mapping(*head, anonymous_kb=anonymous))
    return mappings


def collapsible_ranges(mappings: list[Mapping]) -> list[tuple[int, int]]:
    """The 2 MB-aligned parts of large, private, writable anonymous mappings (the heap or
    unnamed memory) that are mostly resident: the candidates, before `resident_ranges`."""
    ranges = []
    for mapping in mappings:
        size = mapping.end - mapping.start
        if not mapping.writable_private or mapping.path not in ("", "[heap]") or size < MIN_MAPPING:
            continue
        if mapping.anonymous_kb * 1024 < MIN_DENSITY * size:
            continue
        start = (mapping.start + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
        end = mapping.end & ~(HUGE_PAGE - 1)
        if end > start:
            ranges.append((start, end))
    return ranges


def resident_ranges(start: int, end: int, present: Callable[[int, int], bytes]) -> list[tuple[int, int]]:
    """The runs of 2 MB ranges in [start, end) with at most MAX_HOLES pages not resident, so that
    collapsing them leaves the resident memory as it was. `present(start, end)` gives a byte per
    page, nonzero where the page is resident."""
    runs: list[tuple[int, int]] = []
    for range_start in range(start, end, HUGE_PAGE):
        if present(range_start, range_start + HUGE_PAGE).count(0) > MAX_HOLES:
            continue
        if runs and runs[-1][1] == range_start:
            runs[-1] = (runs[-1][0], range_start + HUGE_PAGE)
        else:
            runs.append((range_start, range_start + HUGE_PAGE))
    return runs


def pagemap_present(pagemap) -> Callable[[int, int], bytes]:
    """`present` for `resident_ranges` from an open /proc/self/pagemap (bit 63: present)."""
    def present(start: int, end: int) -> bytes:
        pagemap.seek(start // PAGE * _ENTRY)
        entries = pagemap.read((end - start) // PAGE * _ENTRY)
        return entries[_ENTRY - 1::_ENTRY].translate(_TOP_BIT)  # each entry's last byte (little-endian)

    return present


class Collapser:
    """Collapses this process's resident anonymous memory a step at a time (see the module doc).

    `collapse(start, end)` returns 0 or an errno; by default it is `madvise(MADV_COLLAPSE)`."""

    def __init__(self, collapse: Callable[[int, int], int] | None = None) -> None:
        self._collapse = collapse or _madvise_collapse
        self.pending: list[tuple[int, int]] = []
        self.collapsed_bytes = 0
        self.skipped_bytes = 0  # ranges the kernel could not collapse just then (no free huge page)
        self.unsupported: str | None = None  # why the kernel cannot: nothing more is tried
        self.dirty = True  # the heap may have changed since the last pass: plan one when idle

    @property
    def busy(self) -> bool:
        return self.unsupported is None and (self.dirty or bool(self.pending))

    def plan(self) -> None:
        """Find the ranges to collapse now (reads /proc/self/smaps: a few ms)."""
        self.dirty = False
        if self.unsupported is not None:
            return
        try:
            with open("/proc/self/smaps", encoding="ascii", errors="replace") as smaps:
                candidates = collapsible_ranges(parse_smaps(smaps))  # line by line: ~1 MB of text
            with open("/proc/self/pagemap", "rb", buffering=0) as pagemap:
                present = pagemap_present(pagemap)
                self.pending = [run for start, end in candidates for run in resident_ranges(start, end, present)]
        except OSError as error:
            self.unsupported = f"{error.filename}: {error.strerror}"
            self.pending = []

    def step(self, max_bytes: int = STEP_BYTES) -> int:
        """Collapse up to `max_bytes` of the planned ranges (planning first if due); the bytes
        done."""
        if self.dirty:
            self.plan()
        done = 0
        while self.pending and done < max_bytes and self.unsupported is None:
            start, end = self.pending.pop()
            chunk_end = min(end, start + max_bytes - done)
            if chunk_end < end:
                self.pending.append((chunk_end, end))
            error = self._collapse(start, chunk_end)
            if error in (errno.EINVAL, errno.ENOSYS, errno.EPERM):  # the kernel cannot, or may not
                self.unsupported = os.strerror(error)
                self.pending = []
                break
            if error == 0:
                self.collapsed_bytes += chunk_end - start
            else:  # EAGAIN, ENOMEM, a range unmapped since: skipped
                self.skipped_bytes += chunk_end - start
            done += chunk_end - start
        return done


_libc_madvise = None


def _madvise_collapse(start: int, end: int) -> int:
    global _libc_madvise
    if _libc_madvise is None:
        try:
            _libc_madvise = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).madvise
        except (OSError, AttributeError):
            return errno.ENOSYS
        _libc_madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _libc_madvise.restype = ctypes.c_int
    if _libc_madvise(start, end - start, MADV_COLLAPSE) == 0:
        return 0
    return ctypes.get_errno()


def huge_mb() -> float:
    """This process's anonymous memory mapped with huge pages (AnonHugePages), in MB."""
    try:
        with open("/proc/self/smaps_rollup", encoding="ascii") as rollup:
            for line in rollup:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0
