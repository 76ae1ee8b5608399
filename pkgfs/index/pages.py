"""The files the index adds to the tree: ``index.html`` and ``index.json`` in the root and
in each project folder, and ``<wheel>.metadata`` beside each wheel.

They answer a lookup by name, which is all a web server does, and are not
listed: ``ls -lR`` and ``find`` of the mount cost no request for them.
"""

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from functools import cached_property

from cachetools import LRUCache

from ..catalog import Catalog
from ..names import parse_filename
from ..storage import StoredFile
from . import formats
from .details import DetailsFinder

INDEX_HTML = "index.html"
INDEX_JSON = "index.json"
PAGES = (INDEX_HTML, INDEX_JSON)
METADATA_SUFFIX = ".metadata"
# Each version of a page is a file of its own, named by its content, that never
# changes: ``index.json`` is a link to the current one (see PageLink).
VERSION_PREFIX = ".index."
# Pages kept rendered; the root pages and the busiest projects stay.
KEPT_PAGES = 4096
# Bytes of page versions kept besides the current ones: a version must outlive the
# moment between a web server reading a link and opening what it names, no more.
KEPT_VERSIONS_BYTES = 64 << 20


@dataclass(frozen=True)
class GeneratedFile:
    content: bytes
    mtime: float

    @cached_property
    def digest(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class PageLink:
    """``index.html`` and ``index.json``: symbolic links to the page's current version,
    ``.index.<digest>.html`` beside them. A version never changes under its name, so the
    kernel keeps its bytes and a web server keeps it open; when the page changes, the
    link points elsewhere and the server, finding another file there, opens that."""

    target: str
    mtime: float


@dataclass(frozen=True)
class Presigning:
    """Link files to presigned S3 URLs instead of through the web server."""

    expire_after: int
    buffer_time: int


@dataclass(frozen=True)
class _Rendered:
    generation: int  # of the catalog it was made from
    good_until: float  # presigned URLs in it expire
    page: GeneratedFile


class SimpleIndex:
    def __init__(self, catalog: Catalog, details: DetailsFinder,
                 presigning: Presigning | None = None):
        self.catalog = catalog
        self.details = details
        self.presigning = presigning
        self._pages: LRUCache = LRUCache(maxsize=KEPT_PAGES)
        # Versions recently linked to, by (project, version name): still found when a
        # link read before a change is followed after it.
        self._versions: LRUCache = LRUCache(maxsize=KEPT_VERSIONS_BYTES,
                                            getsizeof=lambda page: len(page.content))
        self._lock = threading.Lock()

    def is_generated(self, parts: list[str]) -> bool:
        """True for a path the index would generate, whether or not it exists now."""
        return bool(parts) and (parts[-1] in PAGES or parts[-1].startswith(VERSION_PREFIX)
                                or parts[-1].endswith(".whl" + METADATA_SUFFIX))

    def file(self, parts: list[str]) -> GeneratedFile | PageLink | None:
        """The generated file at a path (its project folder normalized), or None."""
        if len(parts) == 1:
            project = ""
        elif len(parts) == 2 and self.catalog.project(parts[0]) is not None:
            project = parts[0]
        else:
            return None
        name = parts[-1]
        if name in PAGES:
            page = self._page(name, project)
            return PageLink(_version_name(name, page), page.mtime)
        if name.startswith(VERSION_PREFIX):
            return self._page_version(name, project)
        if project and name.endswith(".whl" + METADATA_SUFFIX):
            stored = self.catalog.file(project, name.removesuffix(METADATA_SUFFIX))
            if stored is not None:
                core = self.details.core_metadata(stored)
                if core is not None:
                    return GeneratedFile(core, stored.mtime)
        return None

    def copied_in(self, stored: StoredFile, local_path: str, metadata: dict[str, str]) -> None:
        self.details.copied_in(stored, local_path, metadata)

    # --- Pages -----------------------------------------------------------

    def _page(self, name: str, project: str) -> GeneratedFile:
        """A page, made again only when the catalog changed or its presigned URLs age."""
        self.catalog.tree()  # a listing older than cache_ttl is made again first
        generation = self.catalog.generation
        with self._lock:
            rendered = self._pages.get((name, project))
        if rendered and rendered.generation == generation and time.time() < rendered.good_until:
            return rendered.page
        content, complete = self._render(name, project)
        page = GeneratedFile(content, _mtime(rendered.page if rendered else None, content))
        good_until = (time.time() + self.presigning.expire_after - self.presigning.buffer_time
                      if self.presigning and project else float("inf"))
        with self._lock:
            if complete:  # a page missing a file that changed is made again next time
                self._pages[(name, project)] = _Rendered(generation, good_until, page)
            if len(page.content) <= KEPT_VERSIONS_BYTES:
                self._versions[(project, _version_name(name, page))] = page
        return page

    def _page_version(self, version_name: str, project: str) -> GeneratedFile | None:
        """A version of a page: one made lately (a link may have been read just before the
        page changed), or the current one (after a restart)."""
        with self._lock:
            page = self._versions.get((project, version_name))
        if page is None:
            name = next((name for name in PAGES if version_name.endswith(_extension(name))), None)
            current = self._page(name, project) if name else None
            if current is not None and _version_name(name, current) == version_name:
                page = current
        return page

    def _render(self, name: str, project: str) -> tuple[bytes, bool]:
        if not project:
            projects = sorted(self.catalog.tree())
            render = formats.root_html if name == INDEX_HTML else formats.root_json
            return render(projects), True
        files = sorted((self.catalog.project(project) or {}).values(),
                       key=lambda stored: stored.filename)
        details = self.details.details_of(files)
        links = [self._link(stored, details[stored]) for stored in files
                 if details[stored] is not None]
        render = formats.project_html if name == INDEX_HTML else formats.project_json
        return render(project, links), len(links) == len(files)

    def _link(self, stored: StoredFile, details) -> formats.FileLink:
        url = formats.file_url(stored.filename)
        core_metadata_sha256 = details.core_metadata_sha256
        if self.presigning:
            url = self.details.storage.url(stored, self.presigning.expire_after) or url
            # Clients fetch core metadata at the file's URL plus ".metadata", which
            # a signed query cannot take: they read it from the wheel instead.
            core_metadata_sha256 = None
        return formats.FileLink(
            filename=stored.filename, version=_version(stored), url=url,
            sha256=details.sha256, size=stored.size, upload_time=stored.mtime,
            requires_python=details.requires_python, core_metadata_sha256=core_metadata_sha256)


def _mtime(previous: GeneratedFile | None, content: bytes) -> float:
    """A changed page's mtime is at least a second after the one before: web servers make
    ETag and Last-Modified from whole seconds and size, and both must change with it."""
    if previous is None:
        return time.time()
    if previous.content == content:
        return previous.mtime
    return max(time.time(), previous.mtime + 1)


def _version_name(name: str, page: GeneratedFile) -> str:
    """``index.json`` -> ``.index.<digest>.json``."""
    return f"{VERSION_PREFIX}{page.digest[:20]}{_extension(name)}"


def _extension(name: str) -> str:
    return os.path.splitext(name)[1]


def _version(stored: StoredFile) -> str:
    return parse_filename(stored.filename).version
