"""The simple repository API as static files: what pip and uv read through any web server.

``formats`` renders pages (pure functions), ``details`` works out and keeps
what pages say of each file, ``pages`` holds the files the tree shows. The
index never imports the FUSE layer.
"""

import os

from ..catalog import Catalog
from .details import DetailsCache, DetailsFinder
from .pages import GeneratedFile, PageLink, Presigning, SimpleIndex

__all__ = ["GeneratedFile", "PageLink", "Presigning", "SimpleIndex", "open_index"]


def open_index(catalog: Catalog, cache_dir: str,
               presigning: Presigning | None = None) -> SimpleIndex:
    """The index of a catalog, with what it works out kept in ``cache_dir``."""
    os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    cache = DetailsCache(os.path.join(cache_dir, "details.sqlite"))
    return SimpleIndex(catalog, DetailsFinder(catalog.storage, cache), presigning)
