"""The TFRecord framing: CRC-32C checksums and how one record is laid out on disk.

A record is its length (uint64, little-endian), the masked CRC-32C of those 8 bytes,
the data, and the masked CRC-32C of the data (TF's io/record_writer.cc). Warmup files
are read with it (`warmup.read_tfrecords`) and request logs written with it
(`request_log`), so both are the files TF's own reader and writer use.

The CRC comes from google-crc32c, which uses the CPU's CRC32 instruction where there
is one (about 10 GB/s here) and its own C table code elsewhere: a pure-Python table
loop ran at ~15 MB/s, holding the interpreter lock for 70 ms per logged megabyte.
"""
from __future__ import annotations

import struct

import google_crc32c

HEADER = struct.Struct("<QI")  # length, masked CRC of the length
FOOTER = struct.Struct("<I")  # masked CRC of the data
_LENGTH = struct.Struct("<Q")


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`."""
    return google_crc32c.value(data)


def masked_crc32c(data: bytes) -> int:
    """The CRC as TFRecord stores it (crc32c::Mask): rotated right by 15, plus a constant."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record as it goes into a TFRecord file."""
    length = _LENGTH.pack(len(data))
    return b"".join((length, FOOTER.pack(masked_crc32c(length)), data, FOOTER.pack(masked_crc32c(data))))
