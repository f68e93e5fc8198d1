"""Paged KV cache bookkeeping: page pool, per-sequence page tables, prefix caching."""

from vibekit.kvcache.hashing import hash_full_pages, hash_page
from vibekit.kvcache.manager import KVCacheManager
from vibekit.kvcache.page_table import PageTable
from vibekit.kvcache.pool import PagePool

__all__ = ["KVCacheManager", "PagePool", "PageTable", "hash_full_pages", "hash_page"]
