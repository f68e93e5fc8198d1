"""Prefix hash chain: one 64-bit hash per full page, each hash covering the page and its parents."""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections.abc import Sequence

_MAX_HASH = (1 << 64) - 1


def hash_page(
    parent_hash: int | None,
    token_ids: Sequence[int],
    extra_key: str | bytes | None = None,
) -> int:
    """Hash one page of token ids chained onto the hash of the page before it.

    The hash is blake2b (8-byte digest) over the parent hash, the token ids packed as
    little-endian int64 and the optional `extra_key` (LoRA name, multimodal digest, salt...), so it
    is identical across processes and machines. Equal hashes mean equal whole prefixes.

    Example:
        >>> h0 = hash_page(None, [1, 2, 3, 4])
        >>> h1 = hash_page(h0, [5, 6, 7, 8])
        >>> h1 != hash_page(None, [5, 6, 7, 8])
        True
    """
    h = hashlib.blake2b(digest_size=8)
    if parent_hash is None:
        h.update(b"\x00")
    else:
        if not 0 <= parent_hash <= _MAX_HASH:
            raise ValueError(f"parent_hash must be an unsigned 64-bit int, got {parent_hash}")
        h.update(b"\x01" + parent_hash.to_bytes(8, "little"))
    tokens = array("q", token_ids)
    if sys.byteorder == "big":
        tokens.byteswap()
    # NOTE: the length prefix keeps the token bytes and the extra key from running together.
    h.update(len(tokens).to_bytes(8, "little"))
    h.update(tokens.tobytes())
    if isinstance(extra_key, str):
        h.update(b"s" + extra_key.encode("utf-8"))
    elif extra_key is not None:
        h.update(b"b" + bytes(extra_key))
    return int.from_bytes(h.digest(), "little")


def hash_full_pages(
    token_ids: Sequence[int],
    page_size: int,
    extra_key: str | bytes | None = None,
    parent_hash: int | None = None,
) -> list[int]:
    """Chained hashes of every full page of `token_ids`; a trailing partial page is not hashed.

    `parent_hash` continues an existing chain (the hash of the page before `token_ids[0]`).

    Example:
        >>> len(hash_full_pages(list(range(10)), page_size=4))
        2
    """
    if page_size <= 0:
        raise ValueError(f"page_size must be positive, got {page_size}")
    hashes = []
    for start in range(0, len(token_ids) - page_size + 1, page_size):
        parent_hash = hash_page(parent_hash, token_ids[start : start + page_size], extra_key)
        hashes.append(parent_hash)
    return hashes
