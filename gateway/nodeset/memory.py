"""Give the memory a load has freed back to the operating system.

Parsing a site builds lxml's tree and the parsed documents (for 10,000 bound variables, a 30 MB file:
~290 MB) that are freed once the nodes are in the address space. glibc's malloc keeps freed memory
below the top of its heaps for reuse, and the address space allocated after the tree sits above it,
so none of it went back: the gateway served with the peak of its load as its resident size.
`malloc_trim(0)` returns every free page inside the heaps (glibc >= 2.8, madvise), ~20 ms.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import cache

log = logging.getLogger(__name__)


@cache
def _malloc_trim() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): its allocator returns memory its own way
        return None


def release_freed_memory() -> bool:
    """Return the C heap's free pages to the OS; False where the C library has no malloc_trim."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
