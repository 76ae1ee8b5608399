"""The catalog in-process, with threads: readers, this mount's writes, a listing in progress."""

import hashlib
import os
import threading
import time
import tracemalloc

import pytest

from pkgfs.catalog import Catalog
from pkgfs.errors import StorageUnavailable
from pkgfs.storage import stored_file
from pkgfs.storage.file import FileStorage
from stores import FileStore


class HeldListing(FileStorage):
    """A real file store whose listings, once read, wait for the test to let them finish:
    a store that takes its time to list."""

    def __init__(self, directory: str):
        super().__init__(directory)
        self.hold = threading.Event()
        self.hold.set()
        self.listed = threading.Event()
        self.listings = 0
        self.in_flight = 0
        self.peak_in_flight = 0  # the most listings that ran at once
        self.failure: Exception | None = None  # what the next listings raise, once let go

    def list_files(self):
        self.listings += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            files = list(super().list_files())  # what the store held when the listing read it
            self.listed.set()
            self.hold.wait(timeout=60)  # a guard against a hang
            if self.failure is not None:
                raise self.failure
        finally:
            self.in_flight -= 1
        yield from files


def _ask_at_once(catalog: Catalog, callers: int) -> list:
    """What each of ``callers`` threads got from one lookup each: a tree or an error."""
    answers: list = [None] * callers

    def ask(number: int) -> None:
        try:
            answers[number] = catalog.tree()
        except Exception as error:
            answers[number] = error

    threads = [threading.Thread(target=ask, args=(number,)) for number in range(callers)]
    for thread in threads:
        thread.start()
    return threads, answers


def test_readers_never_see_a_snapshot_change_under_them(tmp_path):
    """Readers walk the listing (yielding between files, as FUSE threads do) while this
    mount's writes add and remove files of the same project and listings are made again."""
    store = FileStore(tmp_path / "store")
    for number in range(200):
        store.add(f"busy-1.{number}.tar.gz", b"x")
    storage = FileStorage(store.directory)
    catalog = Catalog(storage, ttl=0.2)  # listed again and again in the background
    catalog.tree()
    errors, stop = [], threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                for files in catalog.tree().values():
                    for _ in files.values():
                        time.sleep(0)
            except Exception as error:  # what a reader would have seen: counted, not hidden
                errors.append(repr(error))

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    written = [found for found in storage.list_files()][:50]
    for _ in range(40):
        for stored in written:
            catalog.removed(stored)
        for stored in written:
            catalog.added(stored)
    stop.set()
    for reader in readers:
        reader.join()
    assert errors == []


def test_a_write_during_a_background_listing_is_replayed_onto_it(tmp_path):
    store = FileStore(tmp_path / "store")
    store.add("kept-1.0.tar.gz", b"kept")
    removed_path = store.add("gone-1.0.tar.gz", b"gone")
    storage = HeldListing(store.directory)
    catalog = Catalog(storage, ttl=4.0)
    gone = catalog.file("gone", "gone-1.0.tar.gz")
    expires = time.monotonic() + 4.0

    time.sleep(2.2)  # past half the ttl: the next lookup lists again in the background
    storage.hold.clear()
    storage.listed.clear()
    store.add("other-1.0.tar.gz", b"by another writer")  # before the listing reads the store
    catalog.tree()
    assert storage.listed.wait(timeout=30)  # it read the store, gone-1.0 still in it
    os.unlink(removed_path)
    catalog.removed(gone)  # this mount deletes it while the listing is in progress
    assert catalog.file("gone", "gone-1.0.tar.gz") is None
    storage.hold.set()

    # The background listing is shown, with the removal replayed onto it, well before
    # the first listing expires (a dropped one would show only after that).
    while catalog.file("other", "other-1.0.tar.gz") is None:
        assert time.monotonic() < expires - 0.2, "the background listing was dropped"
        time.sleep(0.01)
    assert catalog.file("gone", "gone-1.0.tar.gz") is None  # replayed: not brought back
    assert catalog.file("kept", "kept-1.0.tar.gz") is not None
    assert storage.listings == 2  # the held listing was shown, not thrown away and made again


def test_lookups_share_the_one_listing_in_flight(tmp_path):
    store = FileStore(tmp_path / "store")
    store.add("one-1.0.tar.gz", b"1")
    storage = HeldListing(store.directory)
    storage.hold.clear()
    catalog = Catalog(storage, ttl=60)
    threads, answers = _ask_at_once(catalog, 8)
    assert storage.listed.wait(timeout=30)
    time.sleep(0.2)  # every caller is waiting by now
    storage.hold.set()
    for thread in threads:
        thread.join(timeout=30)
    assert storage.listings == 1
    assert all(isinstance(answer, dict) and "one" in answer for answer in answers)


def test_a_failed_listing_fails_its_waiters_together_then_lookups_at_once(tmp_path):
    """Four `ls` of an endpoint that fails got 40, 81, 121, 161 s: each waited for the
    previous one's listing, then made its own."""
    store = FileStore(tmp_path / "store")
    store.add("one-1.0.tar.gz", b"1")
    storage = HeldListing(store.directory)
    storage.hold.clear()
    storage.failure = StorageUnavailable("cannot reach the store")
    catalog = Catalog(storage, ttl=60, retry_after=1.0)
    threads, answers = _ask_at_once(catalog, 8)
    assert storage.listed.wait(timeout=30)
    time.sleep(0.2)
    storage.hold.set()
    for thread in threads:
        thread.join(timeout=30)
    assert [type(answer) for answer in answers] == [StorageUnavailable] * 8
    assert storage.listings == 1

    with pytest.raises(StorageUnavailable, match="cannot reach the store"):
        catalog.tree()  # within the back-off: told at once, nothing asked of the store
    assert storage.listings == 1

    time.sleep(1.1)
    storage.failure = None
    assert "one" in catalog.tree()  # the back-off is over: listed again, and it works
    assert storage.listings == 2


def test_a_lookup_waits_no_longer_than_its_limit_and_the_listing_goes_on(tmp_path):
    store = FileStore(tmp_path / "store")
    store.add("slow-1.0.tar.gz", b"1")
    storage = HeldListing(store.directory)
    storage.hold.clear()
    catalog = Catalog(storage, ttl=60, wait_limit=0.5)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match="taken over 0.5s"):
        catalog.tree()
    assert time.monotonic() - started < 10  # generous: a hang would break it
    storage.hold.set()
    while catalog.listing_age() is None:  # the listing finished in the background
        assert time.monotonic() - started < 30
        time.sleep(0.01)
    assert "slow" in catalog.tree()
    assert storage.listings == 1


def test_a_background_listing_and_an_expired_one_are_never_made_at_once(tmp_path):
    """Lookups past half the ttl start a background listing; past the ttl they wait for
    that same listing rather than starting a second."""
    store = FileStore(tmp_path / "store")
    store.add("one-1.0.tar.gz", b"1")
    storage = HeldListing(store.directory)
    catalog = Catalog(storage, ttl=0.4)
    catalog.tree()
    storage.hold.clear()
    time.sleep(0.25)  # past half the ttl
    catalog.tree()  # starts the background listing, which is held
    time.sleep(0.3)  # past the ttl
    threads, answers = _ask_at_once(catalog, 4)
    time.sleep(0.2)
    storage.hold.set()
    for thread in threads:
        thread.join(timeout=30)
    assert storage.peak_in_flight == 1
    assert storage.listings == 2
    assert all(isinstance(answer, dict) for answer in answers)


class GeneratedListing:
    """A store of ``count`` wheels, ten a project, listed as S3 lists them: no S3 needed to
    weigh a listing."""

    def __init__(self, count: int):
        self.count = count

    @staticmethod
    def location(project: str, filename: str) -> str:
        return f"packages/{hashlib.md5(filename.encode()).hexdigest()[:4]}/{project}/{filename}"

    def list_files(self):
        for number in range(self.count):
            project, version = f"project-{number // 10}", f"1.{number % 10}"
            filename = f"project_{number // 10}-{version}-py3-none-any.whl"
            key = self.location(project, filename)
            yield stored_file(project, filename, 100_000 + number, 1.7e9 + number, key,
                              f'"{hashlib.md5(key.encode()).hexdigest()}"')


def test_a_million_files_fit_in_600_mib():
    """Weighed on 100,000 files (the catalog grows linearly). 629 bytes a file would be a
    million in 600 MiB; it holds under 130 (about 100: the listing's files in columns all
    projects share, ten files a project here), where an object a file held 450 and
    columns of each project's own 185; an object a file, or a copy of the key or the
    ETag as a string, would break that. The listing peaks at about 215 (under 250): the
    columns as found and the same sorted by project, for a moment."""
    count = 100_000
    tracemalloc.start()
    try:
        catalog = Catalog(GeneratedListing(count), ttl=3600, wait_limit=300)
        assert len(catalog.tree()) == count // 10
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held / count < 130, f"{held / count:.0f} bytes a file"
    assert peak / count < 250, f"{peak / count:.0f} bytes a file at the peak"
    a_file = catalog.file("project-5", "project_5-1.3-py3-none-any.whl")  # made when asked for
    assert a_file == next(stored for stored in GeneratedListing(count).list_files()
                          if stored.filename == a_file.filename)


def test_one_name_found_twice_is_shown_once_as_first_found(tmp_path):
    """Two project folders that normalize alike may hold one file name: the first found
    is shown, with its own location."""
    for folder, data in (("My_Pkg", b"first"), ("my-pkg", b"second")):
        (tmp_path / folder / "1.0").mkdir(parents=True)
        (tmp_path / folder / "1.0" / "my_pkg-1.0.tar.gz").write_bytes(data)
    catalog = Catalog(FileStorage(str(tmp_path)), ttl=60)
    [shown] = catalog.project("my-pkg").values()
    assert shown.location == str(tmp_path / "My_Pkg" / "1.0" / "my_pkg-1.0.tar.gz")
    assert shown.size == len(b"first")
