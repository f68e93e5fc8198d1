"""Paged KV cache: page pool, per-sequence page tables, prefix caching, and PagedKVCache, the
cache protocol over them."""

from vibekit.kvcache.cache import PagedKVCache
from vibekit.kvcache.hashing import hash_full_pages, hash_page
from vibekit.kvcache.manager import KVCacheManager
from vibekit.kvcache.page_table import PageTable
from vibekit.kvcache.pool import PagePool
from vibekit.kvcache.spec import KVCacheSpec

__all__ = ["KVCacheManager", "KVCacheSpec", "PagePool", "PageTable", "PagedKVCache",
           "hash_full_pages", "hash_page"]
