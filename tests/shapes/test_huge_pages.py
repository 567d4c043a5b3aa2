"""The warm worker's heap on huge pages (shapes/huge_pages.py): which memory, in bounded steps,
one try on a kernel that cannot, and the kernel's own answer in a separate process."""

import errno
import json
import subprocess
import sys
import textwrap

import pytest

from torch_lsp.shapes.huge_pages import HUGE_PAGE, MAX_HOLES, Collapser, collapsible_ranges, parse_smaps, resident_ranges

MB = 1 << 20


def smaps_entry(start: int, size: int, perms: str, path: str, anonymous_kb: int) -> str:
    head = f"{start:x}-{start + size:x} {perms} 00000000 00:00 0"
    return textwrap.dedent(f"""\
        {head}{' ' * 10 + path if path else ''}
        Size:           {size // 1024:>8} kB
        Rss:            {anonymous_kb:>8} kB
        Anonymous:      {anonymous_kb:>8} kB
        AnonHugePages:         0 kB
        VmFlags: rd wr mr mw me ac
        """)


BASE = 0x7F0000000000
SMAPS = "".join([
    smaps_entry(0x560000001000, 40 * MB, "rw-p", "[heap]", 40 * 1024 - 8),  # dense, unaligned start
    smaps_entry(BASE, 64 * MB, "rw-p", "", 16 * 1024),  # mostly not resident
    smaps_entry(BASE + 64 * MB, 32 * MB, "rw-p", "", 32 * 1024),  # dense unnamed memory
    smaps_entry(BASE + 96 * MB, 4 * MB, "rw-p", "", 4 * 1024),  # too small to be worth it
    smaps_entry(BASE + 100 * MB, 32 * MB, "r--p", "", 32 * 1024),  # read-only
    smaps_entry(BASE + 132 * MB, 32 * MB, "rw-p", "/usr/lib/libtorch_cpu.so", 32 * 1024),  # a file's data
    smaps_entry(BASE + 164 * MB, 32 * MB, "rw-p", "[stack]", 32 * 1024),
])


def test_only_mostly_resident_private_writable_anonymous_memory_is_a_candidate_in_aligned_ranges():
    mappings = parse_smaps(SMAPS.splitlines())
    assert len(mappings) == 7 and mappings[0].path == "[heap]" and mappings[1].anonymous_kb == 16 * 1024
    heap_start = (0x560000001000 + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
    assert collapsible_ranges(mappings) == [
        (heap_start, (0x560000001000 + 40 * MB) & ~(HUGE_PAGE - 1)),
        (BASE + 64 * MB, BASE + 96 * MB),
    ]
    assert parse_smaps(["not smaps", ""]) == []


def test_only_2_mb_ranges_already_resident_are_collapsed_so_resident_memory_does_not_grow():
    pages = HUGE_PAGE // 4096
    resident = {  # per 2 MB range from BASE: which pages are resident
        0: b"\1" * pages, 1: b"\1" * (pages - MAX_HOLES) + b"\0" * MAX_HOLES, 2: b"\1" * (pages - MAX_HOLES - 1) + b"\0" * (MAX_HOLES + 1),
        3: b"\1" * pages, 4: b"\0" * pages, 5: b"\1" * pages, 6: b"\1" * pages,
    }
    asked = []

    def present(start: int, end: int) -> bytes:
        asked.append((start, end))
        return resident[(start - BASE) // HUGE_PAGE]

    assert resident_ranges(BASE, BASE + 7 * HUGE_PAGE, present) == [
        (BASE, BASE + 2 * HUGE_PAGE), (BASE + 3 * HUGE_PAGE, BASE + 4 * HUGE_PAGE), (BASE + 5 * HUGE_PAGE, BASE + 7 * HUGE_PAGE)]
    assert asked == [(BASE + i * HUGE_PAGE, BASE + (i + 1) * HUGE_PAGE) for i in range(7)]


class FakeKernel:
    def __init__(self, answers=None) -> None:
        self.calls = []
        self.answers = dict(answers or {})

    def __call__(self, start: int, end: int) -> int:
        self.calls.append((start, end))
        return self.answers.get(len(self.calls), 0)


def collapser_with(kernel, ranges) -> Collapser:
    collapser = Collapser(kernel)
    collapser.pending, collapser.dirty = list(ranges), False
    return collapser


def test_each_step_collapses_a_bounded_share_and_the_next_one_resumes():
    kernel = FakeKernel()
    collapser = collapser_with(kernel, [(BASE, BASE + 10 * MB), (BASE + 64 * MB, BASE + 70 * MB)])
    steps = []
    while collapser.busy:
        steps.append(collapser.step(max_bytes=4 * MB))
    assert steps == [4 * MB, 4 * MB, 4 * MB, 4 * MB]
    assert collapser.collapsed_bytes == 16 * MB
    covered = sorted(kernel.calls)
    assert covered[0][0] == BASE and covered[-1][1] == BASE + 70 * MB
    assert sum(end - start for start, end in covered) == 16 * MB
    assert all(end - start <= 4 * MB for start, end in covered)


def test_a_kernel_that_cannot_collapse_is_asked_once():
    kernel = FakeKernel({1: errno.EINVAL})
    collapser = collapser_with(kernel, [(BASE, BASE + 8 * MB), (BASE + 64 * MB, BASE + 96 * MB)])
    collapser.step()
    assert collapser.unsupported == "Invalid argument" and not collapser.busy and collapser.collapsed_bytes == 0
    collapser.dirty = True  # new imports later: still nothing is tried
    collapser.step()
    assert len(kernel.calls) == 1 and not collapser.busy


def test_a_range_the_kernel_could_not_collapse_now_is_skipped():
    kernel = FakeKernel({1: errno.EAGAIN})
    collapser = collapser_with(kernel, [(BASE, BASE + 4 * MB), (BASE + 64 * MB, BASE + 68 * MB)])
    collapser.step()
    assert len(kernel.calls) == 2 and collapser.unsupported is None
    assert collapser.collapsed_bytes == 4 * MB and not collapser.busy


REAL_KERNEL = textwrap.dedent("""
    import ctypes, json, mmap, os
    from torch_lsp.shapes import huge_pages
    size = 32 << 20
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    pattern = bytes(range(256)) * 16
    for offset in range(0, size, len(pattern)):
        memory[offset:offset + len(pattern)] = pattern
    before = huge_pages.huge_mb()
    address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    collapser = huge_pages.Collapser()
    collapser.plan()  # smaps, then pagemap: the resident 2 MB ranges
    planned = sum(min(end, address + size) - max(start, address) for start, end in collapser.pending
                  if start < address + size and end > address)
    while collapser.busy:
        collapser.step()
    after = huge_pages.huge_mb()
    intact = all(memory[offset:offset + len(pattern)] == pattern for offset in range(0, size, len(pattern)))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a fork sees the same bytes, and its writes stay its own
        seen = memory[: len(pattern)] == pattern and memory[size - len(pattern):] == pattern
        memory[0:4] = b"fork"
        os.write(write, b"1" if seen and memory[0:4] == b"fork" else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    print(json.dumps({"before": before, "after": after, "collapsed": collapser.collapsed_bytes,
                      "skipped": collapser.skipped_bytes, "planned_mb": planned >> 20,
                      "unsupported": collapser.unsupported, "intact": intact, "fork": os.read(read, 1) == b"1",
                      "parent_kept": memory[0:4] == pattern[0:4]}))
""")


def test_the_kernel_collapses_dense_memory_and_forks_share_it_copy_on_write():
    """In a process of its own: 32 MB written, collapsed; the bytes are the same after it, a fork
    reads them and writes its own copy. Where the kernel collapsed, the memory is on huge pages."""
    run = subprocess.run([sys.executable, "-c", REAL_KERNEL], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["intact"] and result["fork"] and result["parent_kept"], result
    assert result["planned_mb"] >= 28, result  # the aligned ranges inside the 32 MB mapping
    if result["unsupported"] is not None:
        pytest.skip(f"this kernel cannot collapse memory: {result['unsupported']}")
    if result["collapsed"] == 0 and result["skipped"] > 0:
        pytest.skip("the kernel had no huge page to spare just now (EAGAIN/ENOMEM): nothing was collapsed")
    assert result["after"] - result["before"] >= 28, result  # where the kernel collapsed, on huge pages
