"""Bytes -> text for text formats: byte-order mark, BOM-less UTF-16/32, strict UTF-8, then charset detection.

An undecodable file is an EncodingError (`undecodable_text`), never a mojibake document.
"""

from __future__ import annotations

import codecs
import logging

from ingest.errors import EncodingError

logger = logging.getLogger(__name__)

# (BOM, codec) with UTF-32 first: the UTF-32-LE BOM begins with the UTF-16-LE one.
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
BOM_PREFIXES = tuple(bom for bom, _ in BOMS)
_MAX_CONTROL_RATIO = 0.02  # decoded "text" with more control characters than this is binary


def decode_text(data: bytes) -> str:
    """Decode text bytes: BOM, UTF-16/32 by NUL pattern, strict UTF-8, then charset detection.

    Raises EncodingError when nothing yields text (binary data, or an encoding we cannot recognise).
    """
    text = _decode(data)
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f\v")
    if controls > _MAX_CONTROL_RATIO * max(len(text), 1):
        raise EncodingError("the file is not text in any encoding we can recognise")
    return text


def _decode(data: bytes) -> str:
    for bom, codec in BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError as exc:
                raise EncodingError(f"invalid {codec} text after a byte-order mark") from exc
    if b"\x00" in data:
        # UTF-8 text never holds NUL; BOM-less UTF-16/32 of mostly-ASCII text is full of them.
        wide = _wide_codec(data)
        if wide is not None:
            try:
                return data.decode(wide)
            except UnicodeDecodeError:
                pass
    else:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return _detect_and_decode(data)


def _wide_codec(data: bytes) -> str | None:
    sample = data[:4096]
    n = len(sample)
    if n >= 4 and n % 4 == 0 and sample[2::4].count(0) > 0.9 * (n // 4) and sample[3::4].count(0) > 0.9 * (n // 4):
        return "utf-32-le"
    if n >= 4 and n % 4 == 0 and sample[0::4].count(0) > 0.9 * (n // 4) and sample[1::4].count(0) > 0.9 * (n // 4):
        return "utf-32-be"
    if sample[1::2].count(0) > 0.6 * (n // 2):
        return "utf-16-le"
    if sample[0::2].count(0) > 0.6 * (n // 2):
        return "utf-16-be"
    return None


def _detect_and_decode(data: bytes) -> str:
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data))
    if not matches:
        raise EncodingError("the text is not in any encoding we can recognise")
    best = min(matches, key=lambda m: m.chaos)
    # Short Western text is ambiguous between cp1250/cp1252/cp1257/cp775...; when cp1252 reads it as
    # cleanly as the best guess, take it: it is by far the most common legacy encoding of such files.
    chosen = next((m for m in matches if m.encoding == "cp1252" and m.chaos <= best.chaos + 0.005), best)
    logger.debug("decoded text with detected charset=%s", chosen.encoding)
    return str(chosen)


def noise_ratio(text: str) -> float:
    """Share of control and U+FFFD replacement characters: near 0 for text, high for binary read as text."""
    noise = sum(1 for ch in text if (ord(ch) < 32 and ch not in "\t\n\r\f\v") or ch == "\ufffd")
    return noise / max(len(text), 1)
