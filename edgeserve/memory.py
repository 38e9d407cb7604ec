"""Giving memory back after an unload.

A closed TensorFlow session frees its tensors into glibc's heap, which keeps the pages;
on a 1 GB box they must go back to the OS before the next version loads. `release()`
collects Python's cycles (graphs and sessions hold many) and then asks glibc to trim
every arena (`malloc_trim(0)`). On a libc without malloc_trim it only collects.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os

log = logging.getLogger("edgeserve.memory")


def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim with
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_trim = _malloc_trim()


def release() -> None:
    """Frees what an unloaded version left behind; call on a worker thread."""
    gc.collect()
    if _trim is not None:
        _trim(0)


def rss_bytes() -> int:
    """This process's resident set size, from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return 0


_PAGE = os.sysconf("SC_PAGE_SIZE")
