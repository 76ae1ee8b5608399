"""Distribution file names: which project and version a file belongs to.

The rules are those of LAYOUT.md: wheels by the wheel file name spec, every
other archive by splitting its stem at the version.
"""

import re
from typing import NamedTuple

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import VERSION_PATTERN

# Longest first, so that ".tar.gz" wins over ".gz"-less ".tar".
ARCHIVE_EXTENSIONS = (
    ".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".tar",
    ".egg", ".exe", ".msi", ".rpm", ".dmg",
)

_VERSION_PREFIX = re.compile(r"^\s*(" + VERSION_PATTERN + r")", re.VERBOSE | re.IGNORECASE)
_PROJECT = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


class NotADistribution(ValueError):
    """A file name that names no Python distribution."""


class DistributionName(NamedTuple):
    project: str  # normalized as in PEP 503
    version: str  # as written in the file name, as pypicloud keeps it


def normalize(name: str) -> str:
    """PEP 503 normalized project name: ``My_Pkg.Core`` -> ``my-pkg-core``."""
    return canonicalize_name(name)


def is_project_name(name: str) -> bool:
    """True for a normalized project name (PEP 503 and PEP 508)."""
    return _PROJECT.match(name) is not None


def parse_filename(filename: str) -> DistributionName:
    """Project and version of a distribution file, or NotADistribution."""
    # Control characters, undecodable bytes (surrogates) and separators never pass.
    unsafe = (not filename.isprintable() or "/" in filename or "\\" in filename
              or len(filename.encode("utf-8", "surrogateescape")) > 255)  # NAME_MAX
    if not filename or filename.startswith(".") or unsafe:
        raise NotADistribution(f"{filename!r} is not a distribution file name")
    try:
        if filename.endswith(".whl"):
            project, _version, _build, _tags = parse_wheel_filename(filename)
            return DistributionName(project, filename.split("-")[1])
        if filename.endswith((".tar.gz", ".zip")):
            # packaging accepts only PEP 625 names; older sdists fall through.
            try:
                project, _version = parse_sdist_filename(filename)
                stem = filename.removesuffix(".tar.gz").removesuffix(".zip")
                return DistributionName(project, stem.rpartition("-")[2])
            except InvalidSdistFilename:
                pass
        return _split_archive_name(filename)
    except InvalidWheelFilename as error:
        raise NotADistribution(f"{filename!r} is not a distribution file name: {error}") from None


def _split_archive_name(filename: str) -> DistributionName:
    """Split ``name-version[-more][.platform].ext`` at the first part that starts a version."""
    extension = next((ext for ext in ARCHIVE_EXTENSIONS if filename.endswith(ext)), None)
    if extension is None:
        raise NotADistribution(f"{filename!r} is not a distribution file name (unknown extension)")
    parts = filename[: -len(extension)].split("-")
    for position in range(1, len(parts)):
        match = _VERSION_PREFIX.match(parts[position])
        if match is None:
            continue
        rest = parts[position][match.end():]
        # The version ends the part, or a platform tag follows (".win32", ".noarch").
        if rest and not rest.startswith("."):
            continue
        name = "-".join(parts[:position])
        if name:
            return DistributionName(normalize(name), match.group(1).strip())
    raise NotADistribution(f"{filename!r} is not a distribution file name (no version in it)")
