"""The simple repository API's page formats, as pure functions of what a page lists.

HTML: PEP 503 with PEP 629's version tag, PEP 658/714's core metadata
attributes (both spellings, as clients of either age read them), PEP 700's
upload time. JSON: PEP 691 with PEP 700's ``versions``, ``size`` and
``upload-time``; core metadata only as PEP 714's ``core-metadata``: pip 22.3
to 23.1 crash on the older ``dist-info-metadata`` key in JSON.
"""

import html
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote

API_VERSION = "1.1"


@dataclass(frozen=True)
class FileLink:
    """One file as a project page lists it."""

    filename: str
    version: str
    url: str  # relative to the page, or absolute (presigned)
    sha256: str
    size: int
    upload_time: float  # seconds since the epoch
    requires_python: str = ""
    core_metadata_sha256: str | None = None  # None: no core metadata file is served


def upload_time(moment: float) -> str:
    """PEP 700's ISO 8601 form, in UTC."""
    return datetime.fromtimestamp(moment, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def file_url(filename: str) -> str:
    """A file's link relative to its project page: percent-encoded (``+`` as ``%2B``)."""
    return quote(filename)


def root_html(projects: list[str]) -> bytes:
    return _html("Simple index", [f'<a href="{quote(project)}/">{html.escape(project)}</a>'
                                  for project in projects])


def root_json(projects: list[str]) -> bytes:
    return _json({"meta": {"api-version": API_VERSION},
                  "projects": [{"name": project} for project in projects]})


def project_html(project: str, files: list[FileLink]) -> bytes:
    return _html(f"Links for {project}", [_anchor(link) for link in files])


def project_json(project: str, files: list[FileLink]) -> bytes:
    return _json({"meta": {"api-version": API_VERSION}, "name": project,
                  "versions": sorted({link.version for link in files}),
                  "files": [_file_entry(link) for link in files]})


def _anchor(link: FileLink) -> str:
    attributes = [f'href="{html.escape(link.url)}#sha256={link.sha256}"']
    if link.requires_python:
        attributes.append(f'data-requires-python="{html.escape(link.requires_python)}"')
    if link.core_metadata_sha256:
        value = f"sha256={link.core_metadata_sha256}"
        attributes += [f'data-core-metadata="{value}"', f'data-dist-info-metadata="{value}"']
    attributes.append(f'data-upload-time="{upload_time(link.upload_time)}"')
    return f"<a {' '.join(attributes)}>{html.escape(link.filename)}</a>"


def _file_entry(link: FileLink) -> dict:
    entry = {"filename": link.filename, "url": link.url, "hashes": {"sha256": link.sha256},
             "size": link.size, "upload-time": upload_time(link.upload_time),
             "core-metadata": ({"sha256": link.core_metadata_sha256}
                               if link.core_metadata_sha256 else False),
             "yanked": False}
    if link.requires_python:
        entry["requires-python"] = link.requires_python
    return entry


def _html(title: str, links: list[str]) -> bytes:
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
        f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
        f"    <h1>{html.escape(title)}</h1>\n"
        + "".join(f"    {link}<br>\n" for link in links)
        + "  </body>\n</html>\n"
    ).encode()


def _json(document: dict) -> bytes:
    return (json.dumps(document, indent=1) + "\n").encode()
