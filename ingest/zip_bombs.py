"""Refuse zip bombs: OOXML (docx, pptx, xlsx), ODT and EPUB are zip containers, and a file's byte limit must hold
once it is unpacked too.

A zip's directory declares each member's unpacked size, and the sender writes it: a member that declares 1 KB may
inflate to gigabytes in a reader that trusts its deflate stream over the directory (pandoc, which reads ODT and
EPUB). So each deflated member is measured by inflating its stream, from its local header to the stream's end,
up to the budget: what any reader could get out of it, whatever the directory says. A stored member is as large
as the bytes it spans. `zipfile` finds a container by its directory at the end, so bytes put in front of a zip
do not stop it being read: the parser checks every file it reads as a zip-based format (ingest.parse).
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

from ingest.errors import CorruptDocumentError, DocumentTooLargeError

_LOCAL_HEADER = b"PK\x03\x04"
_LOCAL_HEADER_SIZE = 30
_WINDOW = 1 << 16  # compressed bytes fed to the inflater at a time


def check_zip(data: bytes, *, max_unpacked: int) -> int:
    """The unpacked size of the zip in `data`, measured (not declared); DocumentTooLargeError past `max_unpacked`,
    CorruptDocumentError for a container that cannot be read. Returns the size, so a caller can share one budget
    between a file and its attachments."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CorruptDocumentError("the zip container could not be read (truncated or damaged)") from exc
    unpacked = 0
    for info in members:
        unpacked += _member_size(data, info, limit=max_unpacked - unpacked)
        if unpacked > max_unpacked:
            raise DocumentTooLargeError(f"more than {max_unpacked} bytes once unpacked: over the limit")
    return unpacked


def _member_size(data: bytes, info: zipfile.ZipInfo, *, limit: int) -> int:
    """One member's unpacked size, or a size past `limit` as soon as it is known to exceed it."""
    start = _data_offset(data, info)
    if info.compress_type == zipfile.ZIP_STORED:
        return min(max(info.file_size, info.compress_size), len(data) - start)
    if info.compress_type != zipfile.ZIP_DEFLATED:
        # bzip2 / lzma (no office format writes them): read through zipfile, which stops at the declared size and
        # checks the CRC; a reader that inflates past it cannot read these methods either.
        return _read_size(data, info, limit=limit)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    size, pos = 0, start
    try:
        while not inflater.eof and pos < len(data):
            chunk = data[pos:pos + _WINDOW]
            pos += len(chunk)
            while chunk and not inflater.eof:
                size += len(inflater.decompress(chunk, limit - size + 1))
                if size > limit:
                    return size
                chunk = inflater.unconsumed_tail
    except zlib.error as exc:
        raise CorruptDocumentError("a member of the zip container is damaged") from exc
    return size


def _data_offset(data: bytes, info: zipfile.ZipInfo) -> int:
    off = info.header_offset  # zipfile has already added the length of any bytes in front of the archive
    header = data[off:off + _LOCAL_HEADER_SIZE]
    if len(header) < _LOCAL_HEADER_SIZE or not header.startswith(_LOCAL_HEADER):
        raise CorruptDocumentError("the zip container could not be read (a member's header is missing)")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return off + _LOCAL_HEADER_SIZE + name_len + extra_len


def _read_size(data: bytes, info: zipfile.ZipInfo, *, limit: int) -> int:
    size = 0
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive, archive.open(info) as member:
            while block := member.read(_WINDOW):
                size += len(block)
                if size > limit:
                    return size
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, OSError, EOFError) as exc:
        raise CorruptDocumentError("a member of the zip container could not be read") from exc
    return size
