"""The metadata pypicloud stores with a package: hashes, summary, Requires-Python."""

import email.parser
import email.policy
import hashlib
import logging
import tarfile
import zipfile

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def package_metadata(path: str, filename: str) -> dict[str, str]:
    """pypicloud's metadata of the distribution at ``path``; empty values left out."""
    metadata = _hashes(path)
    headers = _core_metadata(path, filename)
    if headers is not None:
        metadata["summary"] = headers.get("Summary", "") or ""
        metadata["requires_python"] = headers.get("Requires-Python", "") or ""
    return {key: value.strip() for key, value in metadata.items() if value and value.strip()}


def _hashes(path: str) -> dict[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as package:
        while chunk := package.read(_CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
    return {"hash_sha256": sha256.hexdigest(), "hash_md5": md5.hexdigest()}


def _core_metadata(path: str, filename: str):
    """The METADATA (wheel) or PKG-INFO (sdist) headers, or None if they cannot be read."""
    try:
        raw = _core_metadata_bytes(path, filename)
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError, ValueError) as error:
        log.warning("%s: cannot read its metadata (%s); storing it without summary and "
                    "requires_python", filename, error)
        return None
    if raw is None:
        return None
    return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw, headersonly=True)


def wheel_metadata(wheel_file, filename: str) -> bytes:
    """The exact bytes of a wheel's ``*.dist-info/METADATA``; ``wheel_file`` is a path or
    a seekable binary file. Raises zipfile.BadZipFile or ValueError if there is none."""
    with zipfile.ZipFile(wheel_file) as wheel:
        return wheel.read(_only(wheel.namelist(), ".dist-info/METADATA", filename))


def _core_metadata_bytes(path: str, filename: str) -> bytes | None:
    if filename.endswith(".whl"):
        return wheel_metadata(path, filename)
    if filename.endswith(".zip"):
        with zipfile.ZipFile(path) as sdist:
            return sdist.read(_only(sdist.namelist(), "/PKG-INFO", filename))
    if filename.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")):
        with tarfile.open(path) as sdist:
            member = sdist.getmember(_only(sdist.getnames(), "/PKG-INFO", filename))
            extracted = sdist.extractfile(member)
            return extracted.read() if extracted is not None else None
    return None  # eggs, installers: pypicloud reads nothing from them either


def _only(names: list[str], suffix: str, filename: str) -> str:
    """The one top-level entry ``<folder><suffix>`` of an archive."""
    found = [name for name in names if name.endswith(suffix) and name.count("/") == 1]
    if len(found) != 1:
        raise ValueError(f"{len(found)} entries named *{suffix} in {filename}")
    return found[0]
