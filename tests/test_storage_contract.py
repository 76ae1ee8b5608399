"""The storage protocol's rules, in-process, run the same on both backends (as s3ql's backend
tests are): store, conditional store, find, list, metadata, fetch, delete."""

import hashlib
import os
import threading
import time

import pytest

from conftest import BUCKET, CREDENTIALS
from pkgfs.errors import AlreadyExists, Changed
from pkgfs.storage.file import FileStorage
from pkgfs.storage.s3 import S3Storage


@pytest.fixture(params=["file", "s3"])
def storage(request, tmp_path, moto_server):
    if request.param == "file":
        (tmp_path / "store").mkdir()
        return FileStorage(str(tmp_path / "store"))
    request.getfixturevalue("s3_client")  # a fresh, empty bucket
    return S3Storage(BUCKET, prefix="packages/", endpoint_url=moto_server.endpoint,
                     region="us-east-1", access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                     secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


def source_file(tmp_path, data: bytes):
    path = tmp_path / hashlib.sha256(data).hexdigest()
    path.write_bytes(data)
    return str(path), {"hash_sha256": hashlib.sha256(data).hexdigest(),
                       "hash_md5": hashlib.md5(data).hexdigest(), "summary": "a package"}


def store(storage, tmp_path, data: bytes, *, replace=False, name="pkg-1.0.tar.gz"):
    path, metadata = source_file(tmp_path, data)
    return storage.store("pkg", name, path, metadata, replace=replace)


def whole(storage, stored) -> bytes:
    return storage.fetch(stored, 0, stored.size + 1).data


def test_a_stored_file_is_found_listed_and_read_with_its_metadata(storage, tmp_path):
    stored = store(storage, tmp_path, b"first bytes")
    assert storage.find("pkg", "pkg-1.0.tar.gz") == stored
    assert list(storage.list_files()) == [stored]
    fetched = storage.fetch(stored, 6, 100)
    assert fetched.data == b"bytes"
    assert fetched.metadata["hash_sha256"] == hashlib.sha256(b"first bytes").hexdigest()
    assert storage.read_metadata(stored)["summary"] == "a package"
    assert storage.find("pkg", "pkg-2.0.tar.gz") is None


def test_a_taken_name_is_refused_without_replace_and_replaced_with_it(storage, tmp_path):
    first = store(storage, tmp_path, b"first bytes")
    with pytest.raises(AlreadyExists):
        store(storage, tmp_path, b"second bytes")
    assert whole(storage, storage.find("pkg", "pkg-1.0.tar.gz")) == b"first bytes"

    second = store(storage, tmp_path, b"second bytes", replace=True)
    assert whole(storage, second) == b"second bytes"
    assert storage.read_metadata(second)["hash_sha256"] == \
        hashlib.sha256(b"second bytes").hexdigest()
    with pytest.raises(Changed):
        storage.fetch(first, 0, 10)  # what was listed is gone: never the other bytes


def test_of_two_writers_of_one_name_exactly_one_wins(storage, tmp_path):
    """50 rounds of two threads storing one new name, each its own bytes. On S3 this rests
    on S3's conditional writes (If-None-Match: *), which moto checks but does not make
    atomic against a concurrent PUT: there the refusal is tested one writer after the
    other (above), the race on the file store."""
    if isinstance(storage, S3Storage):
        pytest.skip("moto's conditional PUT is not atomic against a concurrent one")
    for round_number in range(50):
        name = f"pkg-1.{round_number}.tar.gz"
        outcomes = {}
        start = threading.Barrier(2)

        def write(writer: str) -> None:
            path, metadata = source_file(tmp_path, f"{writer} {round_number}".encode() * 100)
            start.wait()
            try:
                storage.store("pkg", name, path, metadata, replace=False)
                outcomes[writer] = "stored"
            except AlreadyExists:
                outcomes[writer] = "refused"

        threads = [threading.Thread(target=write, args=(writer,)) for writer in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes.values()) == ["refused", "stored"], (round_number, outcomes)
        winner = next(writer for writer, outcome in outcomes.items() if outcome == "stored")
        stored = storage.find("pkg", name)
        data = whole(storage, stored)
        assert data == f"{winner} {round_number}".encode() * 100
        assert storage.read_metadata(stored)["hash_sha256"] == hashlib.sha256(data).hexdigest()


def test_a_deleted_file_is_gone_with_its_metadata(storage, tmp_path):
    stored = store(storage, tmp_path, b"bytes")
    storage.delete(stored)
    assert storage.find("pkg", "pkg-1.0.tar.gz") is None
    assert list(storage.list_files()) == []
    again = store(storage, tmp_path, b"new bytes")  # the name is free again
    assert storage.read_metadata(again)["hash_sha256"] == hashlib.sha256(b"new bytes").hexdigest()


def test_a_multipart_upload_to_a_taken_name_is_refused(moto_server, s3_client, tmp_path):
    storage = S3Storage(BUCKET, prefix="packages/", endpoint_url=moto_server.endpoint,
                        region="us-east-1", access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    store(storage, tmp_path, b"small first", name="big-1.0.tar.gz")
    with pytest.raises(AlreadyExists):
        store(storage, tmp_path, b"x" * (70 << 20), name="big-1.0.tar.gz")  # above 64 MiB
    assert whole(storage, storage.find("pkg", "big-1.0.tar.gz")) == b"small first"
    assert s3_client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_multipart_uploads_a_killed_daemon_left_are_aborted_once_a_day_old(moto_server,
                                                                            s3_client):
    """At a mount (check), uploads under the prefix begun over ``abandoned_after`` ago (a
    day) are aborted, younger ones kept. moto says every upload began on 2010-11-10, so the
    rule is shown around the age it reports."""
    left = s3_client.create_multipart_upload(Bucket=BUCKET, Key="packages/abcd/pkg/pkg-1.0.whl")
    elsewhere = s3_client.create_multipart_upload(Bucket=BUCKET, Key="other/pkg-1.0.whl")
    [reported] = [upload for upload in s3_client.list_multipart_uploads(Bucket=BUCKET)["Uploads"]
                  if upload["UploadId"] == left["UploadId"]]
    age = time.time() - reported["Initiated"].timestamp()

    def storage(abandoned_after):
        return S3Storage(BUCKET, prefix="packages/", endpoint_url=moto_server.endpoint,
                         region="us-east-1", access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                         secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                         abandoned_after=abandoned_after)

    def open_uploads():
        return sorted(upload["UploadId"] for upload in
                      s3_client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []))

    storage(age + 3600).check()  # younger than the limit: a live upload, kept
    assert open_uploads() == sorted([left["UploadId"], elsewhere["UploadId"]])
    storage(age - 3600).check()
    assert open_uploads() == [elsewhere["UploadId"]]  # outside the prefix: not ours


def test_a_file_store_name_whose_meta_came_first_is_being_stored_unless_long_ago(tmp_path):
    """pypicloud puts a .meta in place before its file: a young .meta without its file is
    an upload in progress, and the name is refused; one left an hour ago is replaced."""
    (tmp_path / "store" / "pkg" / "1.0").mkdir(parents=True)
    storage = FileStorage(str(tmp_path / "store"))
    meta = tmp_path / "store" / "pkg" / "1.0" / "pkg-1.0.tar.gz.meta"
    meta.write_text('{"hash_sha256": "theirs"}')
    with pytest.raises(AlreadyExists, match="being stored by another writer"):
        store(storage, tmp_path, b"ours")
    assert storage.find("pkg", "pkg-1.0.tar.gz") is None
    assert sorted(path.name for path in meta.parent.iterdir()) == [meta.name]  # no temporaries

    an_hour_ago = time.time() - 3601
    os.utime(meta, (an_hour_ago, an_hour_ago))
    stored = store(storage, tmp_path, b"ours")
    assert storage.read_metadata(stored)["hash_sha256"] == hashlib.sha256(b"ours").hexdigest()
