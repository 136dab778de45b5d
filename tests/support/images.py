"""Image files for the tests of the readers' limits: a PNG whose header claims a size its few bytes do not
hold (a "decompression bomb" as a header), written by hand so that no test allocates the pixels."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(path: Path, width: int, height: int) -> Path:
    """Write a valid-looking 8-bit grey PNG of a few hundred bytes whose IHDR says `width` x `height`
    (its one IDAT holds the first row only: decoding it would allocate the whole frame, then fail)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey, no interlace
    idat = zlib.compress(b"\x00" + bytes(min(width, 256)))
    chunks = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path
