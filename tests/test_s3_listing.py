"""Listing a bucket of thousands of files in key ranges at once, in-process against moto and
SeaweedFS: every file once, nothing else, and no more LIST requests than a page a thousand
plus one a range."""

import math
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import BUCKET, CREDENTIALS
from pkgfs.config import DEFAULT_LIST_CONCURRENCY
from pkgfs.storage.s3 import S3Storage
from stores import S3Store

FILES = 2_300  # three pages and a bit


def storage_of(server, prepend_hash: bool, concurrency: int = DEFAULT_LIST_CONCURRENCY,
               bucket: str = BUCKET) -> S3Storage:
    return S3Storage(bucket, prefix="packages/", prepend_hash=prepend_hash,
                     endpoint_url=server.endpoint, region="us-east-1",
                     access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                     secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                     list_concurrency=concurrency)


def fill(store: S3Store, names: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda name: store.add(name, b"x", with_name=False), names))


def list_requests(moto_server, before: int) -> int:
    return sum(1 for method, path in moto_server.requests()[before:]
               if method == "GET" and path.startswith(f"/{BUCKET}?") and "list-type=2" in path)


# Projects from 0 to z, so that every range of the key space has some.
NAMES = [f"{project}{number % 7}-1.{number}.tar.gz"
         for number, project in zip(range(FILES), "0123456789abcdefghijklmnopqrstuvwxyz" * 100)]


@pytest.mark.parametrize("prepend_hash", [True, False], ids=["hashed", "plain"])
def test_a_big_store_is_listed_whole_in_ranges(s3_client, moto_server, prepend_hash):
    store = S3Store(s3_client, BUCKET, prefix="packages/", prepend_hash=prepend_hash)
    fill(store, NAMES)
    store.add_raw("packages/README")  # not a distribution: skipped, wherever it sorts
    store.add_raw("elsewhere/x-1.0.tar.gz")  # outside the prefix
    if not prepend_hash:  # a folder pypicloud did not normalize sorts before every range
        store.client.put_object(Bucket=BUCKET, Key="packages/Upper_Case/Upper_Case-1.0.tar.gz",
                                Body=b"x")
    storage = storage_of(moto_server, prepend_hash)

    before = len(moto_server.requests())
    listed = [(stored.project, stored.filename) for stored in storage.list_files()]

    expected = [(name.partition("-")[0], name) for name in NAMES]
    if not prepend_hash:
        expected.append(("upper-case", "Upper_Case-1.0.tar.gz"))
    assert sorted(listed) == sorted(expected)  # each once, none missing
    requests = list_requests(moto_server, before)
    pages = math.ceil(len(expected) / 1000)
    # Hash folders tell the store's size from the first page: a range a page left, and
    # at most one page more each. Without, ranges by first letter: one more each at most.
    assert requests <= (pages + 2 if prepend_hash else pages + DEFAULT_LIST_CONCURRENCY), requests


def test_a_range_ends_with_a_page_of_about_what_is_left_of_it(s3_client, moto_server):
    """The page that should reach a range's end asks for what the hash folders left say
    is there, not a thousand keys mostly of the next range: the server sends each key
    about once (without, 2,300 files cost some 350 keys more)."""
    store = S3Store(s3_client, BUCKET, prefix="packages/")
    fill(store, NAMES)
    storage = storage_of(moto_server, True)
    sent = []
    storage.client.meta.events.register(
        "after-call.s3.ListObjectsV2",
        lambda parsed, **_: sent.append(len(parsed.get("Contents", []))))
    assert len(list(storage.list_files())) == FILES
    assert sum(sent) < FILES * 1.1, sent


def test_a_small_store_is_one_list(s3_client, moto_server):
    store = S3Store(s3_client, BUCKET, prefix="packages/")
    fill(store, NAMES[:300])
    before = len(moto_server.requests())
    assert len(list(storage_of(moto_server, True).list_files())) == 300
    assert list_requests(moto_server, before) == 1


def test_one_range_at_a_time_lists_the_same(s3_client, moto_server):
    store = S3Store(s3_client, BUCKET, prefix="packages/")
    fill(store, NAMES)
    many = sorted(stored.location for stored in storage_of(moto_server, True, 16).list_files())
    one = sorted(stored.location for stored in storage_of(moto_server, True, 1).list_files())
    assert one == many and len(one) == FILES


@pytest.mark.parametrize("prepend_hash", [True, False], ids=["hashed", "plain"])
def test_a_store_that_keeps_keys_as_folders_is_listed_whole(seaweedfs, prepend_hash):
    """SeaweedFS answers a listing that starts after a folder's name without that folder (S3
    starts after the key, and the folder's keys sort after it): no range may start so."""
    bucket = f"whole-{'hashed' if prepend_hash else 'plain'}"
    seaweedfs.create_bucket(bucket)
    store = S3Store(seaweedfs.client(), bucket, prefix="packages/", prepend_hash=prepend_hash)
    # A project of each one-letter name, where ranges by first letter begin.
    names = NAMES + [f"{letter}-1.0.tar.gz" for letter in "0123456789abcdefghijklmnopqrstuvwxyz"]
    fill(store, names)
    storage = storage_of(seaweedfs, prepend_hash, 16, bucket)  # many ranges, many beginnings
    listed = [(stored.project, stored.filename) for stored in storage.list_files()]
    assert sorted(listed) == sorted((name.partition("-")[0], name) for name in names)
