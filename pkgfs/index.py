"""The simple repository API as static files: what pip and uv read through any web server.

``index.html`` and ``index.json`` in the root and in each project folder
(PEP 503, 691, 700), and ``<wheel>.metadata`` beside each wheel (PEP 658,
714). Generated from the catalog and kept until it changes.
"""

import hashlib
import html
import io
import json
import logging
import os
import threading
import time
import zipfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from urllib.parse import quote

from .catalog import Catalog
from .metadata import wheel_metadata
from .names import parse_filename
from .storage import Reader, StoredFile

log = logging.getLogger(__name__)

INDEX_HTML = "index.html"
INDEX_JSON = "index.json"
METADATA_SUFFIX = ".metadata"
API_VERSION = "1.1"
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class GeneratedFile:
    content: bytes
    mtime: float


@dataclass(frozen=True)
class FileDetails:
    """What an index says of a file beyond its name and size."""

    sha256: str
    requires_python: str
    core_metadata_sha256: str | None  # wheels whose METADATA could be read


@dataclass(frozen=True)
class Presigning:
    """Link files to presigned S3 URLs instead of through the web server."""

    expire_after: int
    buffer_time: int


class SimpleIndex:
    def __init__(self, catalog: Catalog, cache_dir: str, presigning: Presigning | None = None):
        self.catalog = catalog
        self.storage = catalog.storage
        self.cache_dir = cache_dir
        self.presigning = presigning
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        self._details: dict[tuple, FileDetails] = {}
        self._pages: dict[tuple[str, str], tuple[int, float, GeneratedFile]] = {}
        self._lock = threading.Lock()

    # --- What the tree asks ----------------------------------------------

    def names(self, project: str | None) -> list[str]:
        """The generated names in the root (project None) or in a project folder."""
        if project is None:
            return [INDEX_HTML, INDEX_JSON]
        files = self.catalog.project(project)
        if files is None:
            return []  # a new, empty project has no page yet
        return [INDEX_HTML, INDEX_JSON] + [filename + METADATA_SUFFIX for filename in files
                                           if filename.endswith(".whl")]

    def is_generated(self, parts: list[str]) -> bool:
        """True for a path the index would generate, whether or not it exists now."""
        return bool(parts) and (parts[-1] in (INDEX_HTML, INDEX_JSON)
                                or parts[-1].endswith(".whl" + METADATA_SUFFIX))

    def file(self, parts: list[str]) -> GeneratedFile | None:
        """The generated file at a path, or None if there is none."""
        if len(parts) == 1 and parts[0] in (INDEX_HTML, INDEX_JSON):
            return self._page(parts[0], "")
        if len(parts) != 2 or self.catalog.project(parts[0]) is None:
            return None
        if parts[1] in (INDEX_HTML, INDEX_JSON):
            return self._page(parts[1], parts[0])
        if parts[1].endswith(".whl" + METADATA_SUFFIX):
            stored = self.catalog.file(parts[0], parts[1].removesuffix(METADATA_SUFFIX))
            if stored is not None:
                return self._core_metadata_file(stored)
        return None

    # --- Pages -----------------------------------------------------------

    def _page(self, name: str, project: str) -> GeneratedFile:
        """A page, made again only when the catalog changed or its presigned URLs age."""
        self.catalog.tree()  # a listing older than cache_ttl is made again first
        generation = self.catalog.generation
        with self._lock:
            cached = self._pages.get((name, project))
        if cached is not None and cached[0] == generation and time.time() < cached[1]:
            return cached[2]
        content = self._render(name, project)
        mtime = cached[2].mtime if cached and cached[2].content == content else time.time()
        page = GeneratedFile(content, mtime)
        good_until = (time.time() + self.presigning.expire_after - self.presigning.buffer_time
                      if self.presigning and project else float("inf"))
        with self._lock:
            self._pages[(name, project)] = (generation, good_until, page)
        return page

    def _render(self, name: str, project: str) -> bytes:
        if not project:
            projects = sorted(self.catalog.tree())
            return (_root_html(projects) if name == INDEX_HTML else _root_json(projects))
        files = sorted((self.catalog.project(project) or {}).values(),
                       key=lambda stored: stored.filename)
        entries = [(stored, self.details(stored), self._href(stored)) for stored in files]
        return _project_html(project, entries) if name == INDEX_HTML else \
            _project_json(project, entries)

    def _href(self, stored: StoredFile) -> str:
        if self.presigning:
            url = self.storage.url(stored, self.presigning.expire_after)
            if url:
                return url
        return quote(stored.filename)

    # --- What each file needs, worked out once ---------------------------

    def details(self, stored: StoredFile) -> FileDetails:
        key = _details_key(stored)
        with self._lock:
            known = self._details.get(key)
        if known is None:
            known = self._load_details(key) or self._work_out_details(stored)
            with self._lock:
                self._details[key] = known
        return known

    def copied_in(self, stored: StoredFile, local_path: str, metadata: dict[str, str]) -> None:
        """This mount stored a file from ``local_path``: what its pages need is worked out
        from that copy, so that they need nothing more from the store."""
        try:
            core = None
            if stored.filename.endswith(".whl"):
                core = self._extract_core_metadata(local_path, stored.filename,
                                                   metadata["hash_sha256"])
            self._remember(stored, FileDetails(metadata["hash_sha256"],
                                               metadata.get("requires_python", ""), _sha256(core)))
        except OSError as error:
            log.warning("%s: index details not kept (%s); they will be read from the store",
                        stored.filename, error)

    def _work_out_details(self, stored: StoredFile) -> FileDetails:
        metadata = self.storage.read_metadata(stored)
        sha256 = metadata.get("hash_sha256", "").lower()
        if len(sha256) != 64 or not set(sha256) <= _HEX:
            sha256 = self._hash(stored)
            # Recorded in the store, so that no mount ever hashes it again.
            stored = self.storage.write_metadata(stored, {**metadata, "hash_sha256": sha256})
            self.catalog.added(stored)
            log.info("computed and stored the sha256 of %s/%s", stored.project, stored.filename)
        core = self._core_metadata(stored, sha256) if stored.filename.endswith(".whl") else None
        return self._remember(stored, FileDetails(sha256, metadata.get("requires_python", ""),
                                                  _sha256(core)))

    def _hash(self, stored: StoredFile) -> str:
        digest = hashlib.sha256()
        reader = self.storage.open_reader(stored)
        try:
            for offset in range(0, stored.size, 8 << 20):
                digest.update(reader.read(offset, 8 << 20))
        finally:
            reader.close()
        return digest.hexdigest()

    def _core_metadata(self, stored: StoredFile, sha256: str) -> bytes | None:
        """The exact bytes of a wheel's ``*.dist-info/METADATA``, extracted once and kept."""
        try:
            with open(self._core_metadata_path(sha256), "rb") as kept:
                return kept.read()
        except FileNotFoundError:
            pass
        reader = self.storage.open_reader(stored)
        try:
            return self._extract_core_metadata(ReaderFile(reader, stored.size), stored.filename,
                                               sha256)
        finally:
            reader.close()

    def _extract_core_metadata(self, wheel_file, filename: str, sha256: str) -> bytes | None:
        try:
            core = wheel_metadata(wheel_file, filename)
        except (zipfile.BadZipFile, ValueError, KeyError, EOFError) as error:
            log.warning("%s: no core metadata to serve (%s)", filename, error)
            return None
        _write_atomically(self._core_metadata_path(sha256), core)
        return core

    def _core_metadata_path(self, sha256: str) -> str:
        return os.path.join(self.cache_dir, f"{sha256}.metadata")

    def _core_metadata_file(self, stored: StoredFile) -> GeneratedFile | None:
        details = self.details(stored)
        if details.core_metadata_sha256 is None:
            return None
        core = self._core_metadata(stored, details.sha256)
        return GeneratedFile(core, stored.mtime) if core is not None else None

    def _details_path(self, key: tuple) -> str:
        name = hashlib.sha256(json.dumps(key).encode()).hexdigest()
        return os.path.join(self.cache_dir, f"{name}.json")

    def _load_details(self, key: tuple) -> FileDetails | None:
        try:
            with open(self._details_path(key), encoding="utf-8") as kept:
                return FileDetails(**json.load(kept))
        except (OSError, ValueError, TypeError):
            return None

    def _remember(self, stored: StoredFile, details: FileDetails) -> FileDetails:
        """Keep a file's details, in memory and on disk, for as long as it stays the same."""
        key = _details_key(stored)
        _write_atomically(self._details_path(key), json.dumps(asdict(details)).encode())
        with self._lock:
            self._details[key] = details
        return details


def _sha256(content: bytes | None) -> str | None:
    return hashlib.sha256(content).hexdigest() if content is not None else None


def _details_key(stored: StoredFile) -> tuple:
    """What names one content of a file: details worked out for it hold while it matches."""
    return (stored.location, stored.revision, stored.size, stored.mtime)


class BytesReader(Reader):
    """A Reader of a generated file's content, as it was when opened."""

    def __init__(self, generated: GeneratedFile):
        self.generated = generated

    def read(self, offset: int, size: int) -> bytes:
        return self.generated.content[offset:offset + size]

    def close(self) -> None:
        pass


class ReaderFile(io.RawIOBase):
    """A storage Reader as a seekable binary file, for zipfile."""

    def __init__(self, reader: Reader, size: int):
        self._reader = reader
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer) -> int:
        data = self._reader.read(self._position, len(buffer))
        buffer[:len(data)] = data
        self._position += len(data)
        return len(data)


def _write_atomically(path: str, content: bytes) -> None:
    temporary = f"{path}.{os.getpid()}.{threading.get_ident()}"
    with open(temporary, "wb") as kept:
        kept.write(content)
    os.replace(temporary, path)


# --- The formats -----------------------------------------------------------

def _upload_time(stored: StoredFile) -> str:
    moment = datetime.fromtimestamp(stored.mtime, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _html(title: str, links: list[str]) -> bytes:
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
        f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
        f"    <h1>{html.escape(title)}</h1>\n"
        + "".join(f"    {link}<br>\n" for link in links)
        + "  </body>\n</html>\n"
    ).encode()


def _root_html(projects: list[str]) -> bytes:
    return _html("Simple index", [f'<a href="{quote(project)}/">{html.escape(project)}</a>'
                                  for project in projects])


def _root_json(projects: list[str]) -> bytes:
    return _json({"meta": {"api-version": API_VERSION},
                  "projects": [{"name": project} for project in projects]})


def _project_html(project: str, entries) -> bytes:
    links = []
    for stored, details, href in entries:
        attributes = [f'href="{html.escape(href)}#sha256={details.sha256}"']
        if details.requires_python:
            attributes.append(f'data-requires-python="{html.escape(details.requires_python)}"')
        if details.core_metadata_sha256:
            value = f"sha256={details.core_metadata_sha256}"
            attributes += [f'data-core-metadata="{value}"', f'data-dist-info-metadata="{value}"']
        attributes.append(f'data-upload-time="{_upload_time(stored)}"')
        links.append(f"<a {' '.join(attributes)}>{html.escape(stored.filename)}</a>")
    return _html(f"Links for {project}", links)


def _project_json(project: str, entries) -> bytes:
    files = []
    for stored, details, href in entries:
        core = {"sha256": details.core_metadata_sha256} if details.core_metadata_sha256 else False
        entry = {"filename": stored.filename, "url": href, "hashes": {"sha256": details.sha256},
                 "size": stored.size, "upload-time": _upload_time(stored),
                 "core-metadata": core, "dist-info-metadata": core, "yanked": False}
        if details.requires_python:
            entry["requires-python"] = details.requires_python
        files.append(entry)
    versions = sorted({_version(stored.filename) for stored, _, _ in entries})
    return _json({"meta": {"api-version": API_VERSION}, "name": project,
                  "versions": versions, "files": files})


def _version(filename: str) -> str:
    return parse_filename(filename).version


def _json(document: dict) -> bytes:
    return (json.dumps(document, indent=1) + "\n").encode()
