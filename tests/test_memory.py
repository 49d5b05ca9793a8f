"""The heap bound of `seqlab predict` and `seqlab serve` (seqlab.memory)."""

import platform
import subprocess
import sys
from pathlib import Path

import pytest

# A 16 MiB block allocated, written and freed twice, in a fresh process; prints the resident
# memory (KiB) gained after the second free. glibc maps the first block and, freeing it, raises
# its threshold to 16 MiB: the second comes from the heap and stays resident after its free.
PROBE = r"""
import ctypes, ctypes.util, sys
sys.path.insert(0, {root!r})
if {fix}:
    from seqlab.memory import fix_mmap_threshold
    assert fix_mmap_threshold()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS"))
start = rss()
for _ in range(2):
    p = libc.malloc(16 << 20)
    ctypes.memset(p, 1, 16 << 20)
    libc.free(p)
print(rss() - start)
"""


def _gained_kib(fix: bool) -> int:
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", PROBE.format(root=root, fix=fix)], check=True,
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    return int(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_fixed_threshold_returns_large_blocks_to_the_system():
    assert _gained_kib(fix=False) > 8 * 1024  # the dynamic threshold keeps the block resident
    assert _gained_kib(fix=True) < 2 * 1024  # fixed at 8 MiB, the block is unmapped on free


def test_a_threshold_the_user_set_is_kept(monkeypatch):
    from seqlab.memory import fix_mmap_threshold

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert fix_mmap_threshold() is False


def test_the_threshold_can_be_set_or_left_dynamic(monkeypatch):
    from seqlab.errors import SeqlabError
    from seqlab.memory import fix_mmap_threshold

    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.setenv("SEQLAB_MMAP_THRESHOLD", "dynamic")
    assert fix_mmap_threshold() is False
    monkeypatch.setenv("SEQLAB_MMAP_THRESHOLD", "8MB")
    with pytest.raises(SeqlabError, match="SEQLAB_MMAP_THRESHOLD='8MB': expected a number"):
        fix_mmap_threshold()
