"""The metadata of a distribution file: pypicloud's (hashes, summary, Requires-Python) and
the core metadata an index serves (a wheel's METADATA, an sdist's PKG-INFO).

Archives come from anyone: whatever they hold, reading them takes bounded memory
and fails with UnreadableMetadata, never with another error.
"""

import contextlib
import email.message
import email.parser
import email.policy
import hashlib
import logging
import lzma
import tarfile
import zipfile
import zlib

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
# No real METADATA comes near this; a bigger one is a zip bomb, not a description.
CORE_METADATA_LIMIT = 16 << 20

# What the standard library raises on archives that are corrupt, encrypted,
# compressed in a way it does not know (Deflate64) or not archives at all.
_ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError,
                   NotImplementedError, RuntimeError, EOFError, ValueError, OSError,
                   OverflowError)


class UnreadableMetadata(ValueError):
    """An archive whose core metadata cannot be read, or is too big to be real."""


def package_metadata(path: str, filename: str) -> dict[str, str]:
    """pypicloud's metadata of the distribution at ``path``; empty values left out."""
    metadata = _hashes(path)
    try:
        headers = core_metadata_headers(_core_metadata_bytes(path, filename))
    except UnreadableMetadata as error:
        log.warning("%s: cannot read its metadata (%s); storing it without summary and "
                    "requires_python", filename, error)
        headers = None
    if headers is not None:
        metadata["summary"] = headers.get("Summary", "") or ""
        metadata["requires_python"] = headers.get("Requires-Python", "") or ""
    return {key: value.strip() for key, value in metadata.items() if value and value.strip()}


def core_metadata_headers(raw: bytes | None) -> email.message.Message | None:
    """The headers of core metadata; values are text whatever language they are in."""
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace")  # the core metadata spec says UTF-8
    return email.parser.Parser(policy=email.policy.compat32).parsestr(text, headersonly=True)


def _hashes(path: str) -> dict[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as package:
        while chunk := package.read(_CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
    return {"hash_sha256": sha256.hexdigest(), "hash_md5": md5.hexdigest()}


def wheel_metadata(wheel_file, filename: str) -> bytes:
    """The exact bytes of a wheel's ``*.dist-info/METADATA``; ``wheel_file`` is a path or
    a seekable binary file. UnreadableMetadata if there is none or it cannot be read."""
    return _zip_member(wheel_file, ".dist-info/METADATA", filename)


def _core_metadata_bytes(path: str, filename: str) -> bytes | None:
    if filename.endswith(".whl"):
        return wheel_metadata(path, filename)
    if filename.endswith(".zip"):
        return _zip_member(path, "/PKG-INFO", filename)
    if filename.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")):
        return _tar_member(path, "/PKG-INFO", filename)
    return None  # eggs, installers: pypicloud reads nothing from them either


def _zip_member(source, suffix: str, filename: str) -> bytes:
    with _reading(filename), zipfile.ZipFile(source) as archive:
        member = archive.getinfo(_only(archive.namelist(), suffix, filename))
        _check_size(member.file_size, member.filename)
        with archive.open(member) as content:
            return _read_limited(content, member.filename)


def _tar_member(path: str, suffix: str, filename: str) -> bytes:
    with _reading(filename), tarfile.open(path) as archive:
        member = archive.getmember(_only(archive.getnames(), suffix, filename))
        _check_size(member.size, member.name)
        content = archive.extractfile(member)
        if content is None:
            raise UnreadableMetadata(f"{filename}: {member.name} is not a file")
        return _read_limited(content, member.name)


@contextlib.contextmanager
def _reading(filename: str):
    """Whatever reading an archive raises becomes UnreadableMetadata."""
    try:
        yield
    except UnreadableMetadata:
        raise
    except _ARCHIVE_ERRORS as error:
        raise UnreadableMetadata(f"{filename}: {error}") from None


def _check_size(size: int, name: str) -> None:
    if size > CORE_METADATA_LIMIT:
        raise UnreadableMetadata(f"{name} says it is {size} bytes, over the "
                                 f"{CORE_METADATA_LIMIT >> 20} MiB a metadata file may be")


def _read_limited(content, name: str) -> bytes:
    data = content.read(CORE_METADATA_LIMIT + 1)
    _check_size(len(data), name)
    return data


def _only(names: list[str], suffix: str, filename: str) -> str:
    """The one top-level entry ``<folder><suffix>`` of an archive."""
    found = [name for name in names if name.endswith(suffix) and name.count("/") == 1]
    if len(found) != 1:
        raise UnreadableMetadata(f"{len(found)} entries named *{suffix} in {filename}")
    return found[0]
