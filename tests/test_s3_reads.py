"""Many S3 files read at once, in-process against moto: what they hold read ahead stays
within the mount's budget, the threads that read it within its pool, and every reader
still gets its bytes."""

import os
import threading
import time
import tracemalloc

from conftest import BUCKET, CREDENTIALS
from pkgfs.storage.s3 import S3Storage
from pkgfs.storage.s3_reader import READ_AHEAD_WORKERS

READERS = 100
BUDGET_MIB = 16
MIB = 1 << 20


def test_many_readers_at_once_stay_within_the_read_ahead_budget(s3_client, moto_server):
    """Each reader streams (past its first MiBs) and then waits, as a slow client does: its
    stream would read 8 MiB ahead. Without a budget, 32 such readers held 384 MiB; with a
    thread each, 100 readers had 100 threads."""
    data = os.urandom(24 * MIB)
    s3_client.put_object(Bucket=BUCKET, Key="packages/0a0a/big/big-1.0.tar.gz", Body=data)
    storage = S3Storage(BUCKET, prefix="packages/", endpoint_url=moto_server.endpoint,
                        region="us-east-1", access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                        read_ahead_mib=BUDGET_MIB)
    [stored] = storage.list_files()
    threads_before = threading.active_count()
    tracemalloc.start()
    try:
        readers = [storage.open_reader(stored) for _ in range(READERS)]
        for reader in readers:
            for offset in range(0, 3 * MIB, 128 << 10):  # sequential: streaming by now
                assert reader.read(offset, 128 << 10) == data[offset:offset + (128 << 10)]
        time.sleep(3)  # the streams read ahead as far as they may
        held = tracemalloc.get_traced_memory()[0]
        threads = threading.active_count() - threads_before
    finally:
        tracemalloc.stop()
    # The budget, and what each reader keeps: two windows and one it was asked for.
    limit = (BUDGET_MIB + READERS * 3) * MIB + 16 * MIB
    assert held < limit, f"{held / MIB:.0f} MiB held, {limit / MIB:.0f} allowed"
    assert threads <= READ_AHEAD_WORKERS + 2, f"{threads} threads for {READERS} readers"

    for reader in readers:  # each reads on to the end, whole and right
        offset = 3 * MIB
        while chunk := reader.read(offset, 128 << 10):
            assert chunk == data[offset:offset + len(chunk)]
            offset += len(chunk)
        assert offset == len(data)
        reader.close()
