"""The catalog in-process, with threads: readers, this mount's writes, a listing in progress."""

import os
import threading
import time

from pkgfs.catalog import Catalog
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

    def list_files(self):
        self.listings += 1
        files = list(super().list_files())  # what the store held when the listing read it
        self.listed.set()
        self.hold.wait(timeout=60)  # a guard against a hang
        yield from files


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
