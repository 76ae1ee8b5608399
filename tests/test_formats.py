"""The page formats in-process, against the examples of PEP 503, 691, 700 and 714."""

import html.parser
import json

from pkgfs.index import formats
from pkgfs.index.formats import FileLink

# PEP 691's project example ("holygrail"), with PEP 700's additions.
HOLYGRAIL = [
    FileLink(filename="holygrail-1.0.tar.gz", version="1.0", url="holygrail-1.0.tar.gz",
             sha256="0" * 64, size=1000, upload_time=1_700_000_000.25),
    FileLink(filename="holygrail-1.0-py3-none-any.whl", version="1.0",
             url="holygrail-1.0-py3-none-any.whl", sha256="1" * 64, size=2000,
             upload_time=1_700_000_001, requires_python=">=3.7",
             core_metadata_sha256="2" * 64),
]


class Anchors(html.parser.HTMLParser):
    """Each <a>'s attributes and text, as an HTML client reads them."""

    def __init__(self, page: bytes):
        super().__init__()
        self.anchors: list[tuple[dict, str]] = []
        self.meta: dict[str, str] = {}
        self.feed(page.decode())

    def handle_starttag(self, tag, attributes):
        if tag == "a":
            self.anchors.append((dict(attributes), ""))
        elif tag == "meta":
            attributes = dict(attributes)
            self.meta[attributes["name"]] = attributes["content"]

    def handle_data(self, data):
        if self.anchors and not self.anchors[-1][1]:
            self.anchors[-1] = (self.anchors[-1][0], data)


def test_root_json_is_pep_691s_example():
    assert json.loads(formats.root_json(["frob", "spamspamspam"])) == {
        "meta": {"api-version": "1.1"},
        "projects": [{"name": "frob"}, {"name": "spamspamspam"}],
    }


def test_project_json_is_pep_691s_example_with_pep_700_and_714():
    assert json.loads(formats.project_json("holygrail", HOLYGRAIL)) == {
        "meta": {"api-version": "1.1"},
        "name": "holygrail",
        "versions": ["1.0"],
        "files": [
            {"filename": "holygrail-1.0.tar.gz", "url": "holygrail-1.0.tar.gz",
             "hashes": {"sha256": "0" * 64}, "size": 1000,
             "upload-time": "2023-11-14T22:13:20.250000Z", "core-metadata": False,
             "yanked": False},
            {"filename": "holygrail-1.0-py3-none-any.whl",
             "url": "holygrail-1.0-py3-none-any.whl", "hashes": {"sha256": "1" * 64},
             "size": 2000, "upload-time": "2023-11-14T22:13:21.000000Z",
             "requires-python": ">=3.7", "core-metadata": {"sha256": "2" * 64},
             "yanked": False},
        ],
    }


def test_json_never_carries_the_legacy_dist_info_metadata_key():
    """PEP 714: pip 22.3 to 23.1 crash on it in JSON (unhashable type: 'dict')."""
    assert b"dist-info-metadata" not in formats.project_json("holygrail", HOLYGRAIL)


def test_project_html_is_pep_503_with_both_core_metadata_attributes():
    page = formats.project_html("holygrail", HOLYGRAIL)
    parsed = Anchors(page)
    assert parsed.meta == {"pypi:repository-version": "1.1"}
    (sdist, sdist_text), (wheel, wheel_text) = parsed.anchors
    assert (sdist_text, wheel_text) == ("holygrail-1.0.tar.gz", "holygrail-1.0-py3-none-any.whl")
    assert sdist == {"href": "holygrail-1.0.tar.gz#sha256=" + "0" * 64,
                     "data-upload-time": "2023-11-14T22:13:20.250000Z"}
    assert wheel == {"href": "holygrail-1.0-py3-none-any.whl#sha256=" + "1" * 64,
                     "data-requires-python": ">=3.7",
                     "data-core-metadata": "sha256=" + "2" * 64,
                     "data-dist-info-metadata": "sha256=" + "2" * 64,
                     "data-upload-time": "2023-11-14T22:13:21.000000Z"}


def test_html_escapes_what_the_store_holds():
    hostile = FileLink(filename="x-1.0.tar.gz", version="1.0", url=formats.file_url("x-1.0.tar.gz"),
                       sha256="0" * 64, size=1, upload_time=0,
                       requires_python='<4"><script>alert(1)</script>')
    page = formats.project_html("x", [hostile])
    assert b"<script>" not in page
    [(attributes, _)] = Anchors(page).anchors
    assert attributes["data-requires-python"] == '<4"><script>alert(1)</script>'


def test_links_are_percent_encoded_and_relative():
    assert formats.file_url("my_pkg-1.0+local.1-py3-none-any.whl") == \
        "my_pkg-1.0%2Blocal.1-py3-none-any.whl"
    [(attributes, text)] = Anchors(formats.root_html(["my-pkg"])).anchors
    assert (attributes, text) == ({"href": "my-pkg/"}, "my-pkg")
