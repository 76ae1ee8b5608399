"""pypicloud's S3 storage: ``<prefix>[<hash>/]<project>/<filename>``, metadata in the object."""

import hashlib
import logging
import math
import os
import queue
import re
import socket
import threading
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Callable, Iterator

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
import botocore.session
from botocore.config import Config as BotoConfig
from botocore.utils import parse_timestamp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError as BotoConnectionError,
    NoCredentialsError,
)

from ..config import DEFAULT_LIST_CONCURRENCY, DEFAULT_READ_AHEAD_MIB, DEFAULT_TIMEOUT
from ..errors import (
    AccessDenied,
    AlreadyExists,
    Changed,
    NotFound,
    StorageError,
    StorageUnavailable,
)
from ..names import parse_filename
from ..status import Figures
from . import Fetched, Reader, Storage, StoredFile, report_skipped, stored_file
from .s3_reader import ReadAheadBudget, S3Reader

log = logging.getLogger(__name__)

_HASH_FOLDER = re.compile(r"^[0-9a-f]{4}$")
_PAGE = 1000  # keys S3 gives a LIST at most

# A multipart upload begun this long ago was abandoned (seconds): a day.
ABANDONED_AFTER = 86400.0

# Requests to the store in flight at once; more wait for one to end, within
# their deadline. A request that outlived its deadline holds its slot until
# the endpoint lets go of it.
REQUESTS_IN_FLIGHT = 64

_TRANSFER = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=16 << 20,
                           max_concurrency=4)

_ACCESS_CODES = {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId",
                 "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
# A conditional write (If-None-Match: *) that found the key taken, or raced another.
_TAKEN_ERRORS = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")
_TAKEN_CODES = tuple(f"({code})" for code in _TAKEN_ERRORS)  # as S3UploadFailedError says them
# Files up to this size are PUT once more to check that the endpoint refuses a
# conditional write of a key that exists (at the first store of a mount).
PROBE_SIZE = 4 << 20


class _Taken(StorageError):
    """A conditional upload found its key taken."""


class S3Storage(Storage):
    def __init__(self, bucket: str, *, prefix: str = "", prepend_hash: bool = True,
                 region: str | None = None, endpoint_url: str | None = None,
                 access_key: str | None = None, secret_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT,
                 list_concurrency: int = DEFAULT_LIST_CONCURRENCY,
                 read_ahead_mib: int = DEFAULT_READ_AHEAD_MIB,
                 figures: Figures | None = None,
                 abandoned_after: float = ABANDONED_AFTER):
        self.bucket = bucket
        self.prefix = prefix
        self.prepend_hash = prepend_hash
        self.region = region
        self.endpoint = endpoint_url or "AWS S3"
        self._failed_uploads: dict[str, float] = {}  # key -> when its upload failed
        self._only_new: set[str] = set()  # keys being stored that must not exist yet
        # Does the endpoint refuse a conditional PUT of a key that exists? None until a
        # store tried (_check_conditional_writes).
        self.honours_if_none_match: bool | None = None
        self.abandoned_after = abandoned_after
        self.timeout = timeout
        self.list_concurrency = list_concurrency
        self.read_ahead = ReadAheadBudget(read_ahead_mib)
        self._lock = threading.Lock()
        self._request_slots = threading.BoundedSemaphore(REQUESTS_IN_FLIGHT)
        self._request = threading.local()  # the outcome of the request a thread makes
        core = botocore.session.get_session()
        # S3's times parsed by the standard library: botocore's own parser (dateutil) took a
        # third of the daemon's time in a listing (py-spy), one LastModified a key.
        core.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=_parse_time)
        session = boto3.session.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region,
            botocore_session=core)
        # ``timeout`` is each request's deadline, its attempts included (_call): an
        # endpoint that says nothing gets two attempts in it, one answering 503
        # three.
        self.client = session.client("s3", endpoint_url=endpoint_url, config=BotoConfig(
            connect_timeout=timeout / 2,
            read_timeout=timeout / 2,
            retries={"mode": "standard", "max_attempts": 3},
            max_pool_connections=REQUESTS_IN_FLIGHT,
            # S3-compatible stores (MinIO, Ceph, moto) rarely resolve bucket subdomains.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        ))
        self.client.meta.events.register("needs-retry.s3", self._note_answer)
        for operation in ("PutObject", "CompleteMultipartUpload"):
            self.client.meta.events.register(f"before-parameter-build.s3.{operation}",
                                             self._only_if_new)
        if figures is not None:
            self.client.meta.events.register("after-call.s3", _counted_into(figures))
            self.client.meta.events.register("after-call-error.s3", _failure_into(figures))

    def check(self) -> None:
        try:
            self._call(self.client.list_objects_v2, Bucket=self.bucket, Prefix=self.prefix,
                       MaxKeys=1)
        except NotFound:
            self._create_bucket()
        self._abort_abandoned_uploads()

    def _abort_abandoned_uploads(self) -> None:
        """Abort the multipart uploads under the prefix begun over ``abandoned_after`` ago: a
        daemon killed in the middle of a copy left them open, billed for good. No upload of
        a package takes a day, so a live one is never touched."""
        try:
            listed = self._call(self.client.list_multipart_uploads, Bucket=self.bucket,
                                Prefix=self.prefix)
            for upload in listed.get("Uploads", []):
                if time.time() - upload["Initiated"].timestamp() > self.abandoned_after:
                    self._call(self.client.abort_multipart_upload, Bucket=self.bucket,
                               Key=upload["Key"], UploadId=upload["UploadId"])
                    log.info("aborted the multipart upload of %s begun %s, left by a copy "
                             "that never finished", upload["Key"], upload["Initiated"])
        except StorageError as error:
            log.warning("could not look for abandoned multipart uploads (%s): they stay "
                        "until removed by hand", error)

    def _create_bucket(self) -> None:
        options = {}
        if self.region and self.region != "us-east-1":
            options["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self._call(self.client.create_bucket, Bucket=self.bucket, **options)
        except StorageError as error:
            raise StorageError(
                f"bucket {self.bucket} does not exist and could not be created: {error}") from None

    def list_files(self) -> Iterator[StoredFile]:
        """One LIST for a store of up to 1000 files; a bigger one is listed on from there in
        key ranges at once (S3 lists one range a request at a time): ceil(N/1000) LIST
        requests and at most one more a range."""
        self._abort_failed_uploads()
        first = self._list_page()
        keys = first.get("Contents", [])
        yield from self._stored_files(keys)
        if not first.get("IsTruncated"):
            return
        listed_to = keys[-1]["Key"]
        reached = self._hash_folder(listed_to)
        per_folder = None if reached is None else len(keys) / (reached + 1)
        yield from self._list_ranges(self._key_ranges(listed_to), per_folder)

    def _list_ranges(self, ranges: list[tuple[str, str | None]],
                     per_folder: float | None) -> Iterator[StoredFile]:
        """Each range pages on in a thread of its own, and each page is handed over as it
        comes, so that a listing holds a few pages of files at a time, never the store."""
        pages: queue.Queue = queue.Queue(maxsize=2 * len(ranges))
        stopped = threading.Event()

        def list_range(after: str, before: str | None) -> None:
            try:
                for page in self._range_pages(after, before, per_folder):
                    if stopped.is_set():
                        return
                    _hand_over(pages, page, stopped)
            except Exception as error:  # raised to the lister, in its thread
                _hand_over(pages, error, stopped)
            finally:
                _hand_over(pages, None, stopped)

        with ThreadPoolExecutor(max_workers=len(ranges), thread_name_prefix="s3-list") as pool:
            for after, before in ranges:
                pool.submit(list_range, after, before)
            try:
                ranges_left = len(ranges)
                while ranges_left:
                    page = pages.get()
                    if page is None:
                        ranges_left -= 1
                    elif isinstance(page, Exception):
                        raise page
                    else:
                        yield from page
            finally:
                stopped.set()  # ranges still listing stop at their next page

    def _key_ranges(self, listed_to: str) -> list[tuple[str, str | None]]:
        """The key space after ``listed_to`` cut into ranges, each (after this key, before
        that one). With hash folders, whose hex digits are evenly spread, the first page
        tells how big the store is: as many ranges as pages are left, up to
        ``list_concurrency``. Without, ranges cut at the first letter of project names."""
        rest = listed_to[len(self.prefix):]
        folder = self._hash_folder(listed_to)
        if folder is not None:
            reached = folder + 1  # of 65536 hash folders, in the first page
            pages_left = (0x10000 - reached) / reached
            count = max(1, min(self.list_concurrency, math.ceil(pages_left)))
            cuts = [f"{reached + (0x10000 - reached) * part // count:04x}"
                    for part in range(1, count)]
        else:
            letters = [letter for letter in "0123456789abcdefghijklmnopqrstuvwxyz"
                       if letter > rest[:1]]
            count = max(1, min(self.list_concurrency, len(letters)))
            cuts = [letters[len(letters) * part // count] for part in range(1, count)]
        # A range begins at a folder's own prefix ("packages/4000/"): a store that keeps keys
        # as folders (SeaweedFS) starts a listing after "packages/4000" past that folder.
        cuts = sorted({marker for marker in (f"{self.prefix}{cut}/" for cut in cuts)
                       if marker > listed_to})
        return list(zip([listed_to, *cuts], [*cuts, None]))

    def _range_pages(self, after: str, before: str | None,
                     per_folder: float | None) -> Iterator[list[StoredFile]]:
        """The files with keys in a range, a page at a time: from ``after`` until a page
        passes ``before``. The page that should reach ``before`` asks for about what the
        hash folders left say is there, not a thousand keys mostly of the next range."""
        arguments = {"StartAfter": after}
        listed_to, trimmed = after, False
        while True:
            size = None if trimmed else self._last_page_size(listed_to, before, per_folder)
            trimmed = trimmed or size is not None  # once: a short guess costs one page more
            page = self._list_page(**arguments, **({"MaxKeys": size} if size else {}))
            keys = page.get("Contents", [])
            within = [item for item in keys if before is None or item["Key"] < before]
            yield self._stored_files(within)
            if len(within) < len(keys) or not page.get("IsTruncated"):
                return
            listed_to = keys[-1]["Key"]
            arguments = {"ContinuationToken": page["NextContinuationToken"]}

    def _last_page_size(self, listed_to: str, before: str | None,
                        per_folder: float | None) -> int | None:
        """Keys to ask for when what is left between ``listed_to`` and ``before`` likely
        fits in one page, with room for chance (MD5 spreads names evenly over the hash
        folders, so what a folder holds varies by about its square root); None if not."""
        if before is None or per_folder is None:  # the last range ends nowhere
            return None
        reached, end = self._hash_folder(listed_to), self._hash_folder(before)
        if reached is None or end is None:
            return None
        expected = (end - reached) * per_folder  # the folder reached is partly listed
        size = math.ceil(expected * 1.1 + 3 * math.sqrt(expected) + 10)
        return size if size < _PAGE else None

    def _hash_folder(self, key: str) -> int | None:
        """The number of the hash folder a key (or a range's start) is in, if it is in one."""
        rest = key[len(self.prefix):]
        if self.prepend_hash and key.startswith(self.prefix) and _HASH_FOLDER.match(rest[:4]):
            return int(rest[:4], 16)
        return None

    def _stored_files(self, keys: list[dict]) -> list[StoredFile]:
        return [found for found in map(self._stored_file, keys) if found is not None]

    def _list_page(self, **arguments) -> dict:
        try:
            return self._call(self.client.list_objects_v2, Bucket=self.bucket,
                              Prefix=self.prefix, **arguments)
        except NotFound:  # a bucket deleted under the mount: an error, never an empty mount
            raise StorageUnavailable(f"bucket {self.bucket} does not exist any more: make it "
                                     "again, or mount another") from None

    def _stored_file(self, item: dict) -> StoredFile | None:
        key = item["Key"]
        parts = key[len(self.prefix):].split("/")
        if self.prepend_hash:
            if len(parts) != 3 or not _HASH_FOLDER.match(parts[0]):
                return report_skipped(key, "not <hash>/<project>/<filename>")
        elif len(parts) != 2:
            return report_skipped(key, "not <project>/<filename>")
        return stored_file(parts[-2], parts[-1], item["Size"], item["LastModified"].timestamp(),
                           key, item.get("ETag", ""))

    def open_reader(self, stored: StoredFile) -> Reader:
        return S3Reader(self, stored)

    def location(self, project: str, filename: str) -> str:
        hashed = hashlib.md5(filename.encode()).hexdigest()[:4] + "/" if self.prepend_hash else ""
        return f"{self.prefix}{hashed}{project}/{filename}"

    def store(self, project: str, filename: str, source: str, metadata: dict[str, str], *,
              replace: bool) -> StoredFile:
        key = self.location(project, filename)
        s3_metadata = _s3_metadata(metadata)
        s3_metadata.update(name=project, version=parse_filename(filename).version)
        self._abort_failed_uploads()
        if not replace and self.honours_if_none_match is False and self.find(project, filename):
            # The endpoint would overwrite it: a HEAD first narrows the race to its window.
            raise AlreadyExists(f"{project}/{filename} is stored already")
        # The transfer manager uploads in parts above the threshold: S3 shows
        # the object only once the whole of it is there. Without replace, the
        # PUT (or the multipart upload's completion) is conditional.
        with self._lock:
            if not replace:
                self._only_new.add(key)
        try:
            # Not bounded by the deadline: an upload takes as long as its size.
            self._translated(self.client.upload_file, source, self.bucket, key,
                             ExtraArgs={"Metadata": s3_metadata}, Config=_TRANSFER)
        except _Taken:
            raise AlreadyExists(f"{project}/{filename} is stored already") from None
        except StorageError:
            # The transfer manager aborts the multipart upload of a failed
            # transfer, but not while the endpoint is down: try again later.
            self._failed_uploads[key] = time.time()
            raise
        finally:
            with self._lock:
                self._only_new.discard(key)
        size = os.path.getsize(source)
        if not replace and self.honours_if_none_match is None and size <= PROBE_SIZE:
            self._check_conditional_writes(key, source, s3_metadata)
        return self._stored_as(project, filename, key, size, metadata["hash_sha256"])

    def _check_conditional_writes(self, key: str, source: str, metadata: dict[str, str]) -> None:
        """Once a mount, after a store: the same bytes PUT again under If-None-Match must be
        refused (412). An endpoint that stores them instead ignores conditional writes (it
        rewrote what was there with the same bytes): two writers of one name would
        overwrite each other unseen, which is said once, in the log."""
        def put_again() -> bool:
            try:
                with open(source, "rb") as body:
                    self.client.put_object(Bucket=self.bucket, Key=key, Body=body,
                                           Metadata=metadata, IfNoneMatch="*")
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in _TAKEN_ERRORS:
                    return True
                raise
            return False

        try:
            self.honours_if_none_match = self._call(put_again)
        except StorageError as error:
            log.info("could not check that %s honours If-None-Match: %s", self.endpoint, error)
            return
        if not self.honours_if_none_match:
            log.warning("%s ignores If-None-Match (conditional writes): two writers of one name "
                        "can overwrite each other unseen; this mount asks with a HEAD first, "
                        "which narrows the race but cannot close it. Use an endpoint that "
                        "supports conditional writes (AWS S3, MinIO, Ceph RGW)", self.endpoint)

    def _stored_as(self, project: str, filename: str, key: str, size: int,
                   sha256: str) -> StoredFile:
        """What was just stored, with the ETag and time S3 gave it, so that reads of it are
        pinned to it and what this mount worked out of it is keyed to those bytes."""
        try:
            head = self._call(self.client.head_object, Bucket=self.bucket, Key=key)
        except NotFound:
            raise Changed(f"{key} was removed by another writer as soon as it was stored") \
                from None
        except StorageError as error:
            # Stored all the same: the next listing gives its ETag.
            log.warning("%s is stored, but asking for its ETag failed: %s", key, error)
            return StoredFile(project, filename, size, time.time(), key)
        if _from_s3_metadata(head.get("Metadata", {})).get("hash_sha256") != sha256:
            raise Changed(f"{key} was replaced by another writer as soon as it was stored")
        return _headed(project, filename, key, head)

    def find(self, project: str, filename: str) -> StoredFile | None:
        key = self.location(project, filename)
        try:
            head = self._call(self.client.head_object, Bucket=self.bucket, Key=key)
        except NotFound:
            return None
        return _headed(project, filename, key, head)

    def _only_if_new(self, params: dict, **_) -> None:
        """botocore's hook before a PUT or a multipart completion: If-None-Match for the keys
        stored without replace (the transfer manager passes no such argument itself)."""
        with self._lock:
            if params.get("Key") in self._only_new:
                params["IfNoneMatch"] = "*"

    def _abort_failed_uploads(self) -> None:
        """Abort multipart uploads our failed transfers left open, once S3 answers again."""
        for key, failed_at in list(self._failed_uploads.items()):
            try:
                listed = self._call(self.client.list_multipart_uploads,
                                    Bucket=self.bucket, Prefix=key)
                for upload in listed.get("Uploads", []):
                    # Only ours: uploads of that key started before our failure.
                    if upload["Key"] == key and upload["Initiated"].timestamp() <= failed_at:
                        self._call(self.client.abort_multipart_upload, Bucket=self.bucket,
                                   Key=key, UploadId=upload["UploadId"])
                        log.info("aborted the multipart upload of %s left by a failed copy", key)
            except StorageError:
                return  # still unreachable: next time
            self._failed_uploads.pop(key, None)

    def delete(self, stored: StoredFile) -> None:
        self._call(self.client.delete_object, Bucket=self.bucket, Key=stored.location)

    def read_metadata(self, stored: StoredFile) -> dict[str, str]:
        head = self._call(self.client.head_object, Bucket=self.bucket, Key=stored.location,
                          **_pinned(stored))
        return _from_s3_metadata(head.get("Metadata", {}))

    def fetch(self, stored: StoredFile, start: int, length: int) -> Fetched:
        # S3 answers a GET with the object's user metadata: no HEAD needed.
        return self._call(self._fetch, stored, start, start + length - 1)

    def _fetch(self, stored: StoredFile, start: int, end: int) -> Fetched:
        """The GET and the reading of its body, within one deadline."""
        response = self._get(stored, start, end)
        return Fetched(response["Body"].read(), _from_s3_metadata(response["Metadata"]))

    def url(self, stored: StoredFile, expires_in: int) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": stored.location},
            ExpiresIn=expires_in)

    def open_stream(self, stored: StoredFile, start: int):
        """The body of a GET of a stored file from ``start`` to its end; read it with
        ``read_stream``."""
        return self._call(self._get, stored, start, None)["Body"]

    def read_stream(self, body, size: int) -> bytes:
        """Up to ``size`` bytes of a body from ``open_stream``: each socket read is bounded by
        the read timeout, not the whole (the caller bounds its wait)."""
        return self._translated(body.read, size)

    @staticmethod
    def close_stream(body) -> None:
        """Close a body from ``open_stream`` at once, though another thread is reading it:
        closing the body alone waits for that read, which a dripping endpoint never ends.
        Shutting its socket down ends the read first."""
        try:
            # urllib3's response under botocore's body: its socket, through a descriptor of
            # our own (shutting down one descriptor shuts the socket down).
            descriptor = os.dup(body._raw_stream.fileno())
            with socket.socket(fileno=descriptor) as connection:
                connection.shutdown(socket.SHUT_RDWR)
        except (AttributeError, OSError, ValueError):
            pass  # closed already
        body.close()

    def _get(self, stored: StoredFile, start: int, end: int | None) -> dict:
        """A ranged GET, pinned to the content that was listed, that got what it asked for.
        Called within _call."""
        response = self.client.get_object(Bucket=self.bucket, Key=stored.location,
                                          Range=f"bytes={start}-{'' if end is None else end}",
                                          **_pinned(stored))
        # An endpoint that ignores Range answers 200 with the whole object: its
        # bytes from 0 must never be taken for bytes from ``start``.
        answered = response.get("ContentRange", "")
        if not answered.startswith(f"bytes {start}-") and not (start == 0 and not answered):
            response["Body"].close()
            raise StorageError(f"{self.endpoint} did not answer a ranged GET of "
                               f"{stored.location} with that range: it must support Range")
        return response

    def _call(self, operation: Callable, *args, **kwargs):
        """Run one request to the store, retries included, within ``timeout`` seconds, whatever
        the endpoint does (silent, dripping, answering 503); its errors become the errors of
        pkgfs.errors. The request runs in a thread of its own: one that outlives its deadline
        is left to end when the endpoint lets go."""
        return self._translated(self._within_deadline, operation, *args, **kwargs)

    def _within_deadline(self, operation: Callable, *args, **kwargs):
        deadline = time.monotonic() + self.timeout
        if not self._request_slots.acquire(timeout=self.timeout):
            raise self._no_answer()
        outcome: dict = {}
        done = threading.Event()

        def run() -> None:
            self._request.outcome = outcome
            try:
                outcome["value"] = operation(*args, **kwargs)
            except BaseException as error:  # handed to the caller, which raises it
                outcome["error"] = error
            finally:
                self._request_slots.release()
                done.set()

        threading.Thread(target=run, name="s3-request", daemon=True).start()
        if not done.wait(max(0.0, deadline - time.monotonic())):
            raise self._no_answer(outcome.get("answered"))
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def _no_answer(self, answered: str | None = None) -> StorageUnavailable:
        if answered:
            return StorageUnavailable(
                f"{self.endpoint} answered {answered} to every attempt within {self.timeout:g}s "
                "(pkgfs.timeout): the store is overloaded or failing; try again later")
        return StorageUnavailable(f"{self.endpoint} did not answer within {self.timeout:g}s "
                                  "(pkgfs.timeout): check the endpoint and the network")

    def _note_answer(self, response, **_) -> None:
        """botocore's hook after each attempt: an error answer is told if the deadline cuts
        the retries (a throttling S3 is no silent one)."""
        outcome = getattr(self._request, "outcome", None)
        if outcome is None or response is None:
            return  # no request of ours, or no answer at all
        http_response, parsed = response
        if http_response.status_code >= 500:
            code = parsed.get("Error", {}).get("Code", "")
            outcome["answered"] = f"S3 error {code} (HTTP {http_response.status_code})"

    def _translated(self, operation: Callable, *args, **kwargs):
        """Run one boto3 call; its errors become the errors of pkgfs.errors."""
        try:
            return operation(*args, **kwargs)
        except ClientError as error:
            raise self._client_error(error) from None
        except S3UploadFailedError as error:
            if any(code in str(error) for code in _TAKEN_CODES):
                raise _Taken() from None
            raise StorageError(f"upload to bucket {self.bucket} failed: "
                               f"{str(error).splitlines()[0]}") from None
        except NoCredentialsError:
            raise AccessDenied(
                "no AWS credentials: set aws.access_key and aws.secret_key, "
                "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
        except (BotoConnectionError, BotoCoreError) as error:
            raise StorageUnavailable(
                f"cannot reach {self.endpoint} ({type(error).__name__}): "
                "check aws.endpoint_url and the network") from None

    def _client_error(self, error: ClientError) -> StorageError:
        code = error.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            return NotFound(f"bucket {self.bucket} does not exist")
        if code in ("PreconditionFailed", "412"):
            return Changed("the file changed in the store while being read: read it again")
        if code in _MISSING_CODES:
            return NotFound(f"no such object in bucket {self.bucket}")
        if code == "InvalidAccessKeyId":
            return AccessDenied(
                f"{self.endpoint} does not know the access key: check aws.access_key")
        if code == "SignatureDoesNotMatch":
            return AccessDenied(
                f"{self.endpoint} refused the secret key for this access key: check aws.secret_key")
        if code in _ACCESS_CODES or code == "403":
            return AccessDenied(f"access to bucket {self.bucket} denied ({code}): check the "
                                "credentials and the bucket policy")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status >= 500:
            return StorageUnavailable(f"S3 error {code or 'unknown'} (HTTP {status}) on bucket "
                                      f"{self.bucket}: the store is overloaded or failing; "
                                      "try again later")
        return StorageError(f"S3 error {code or 'unknown'} on bucket {self.bucket}")


# What pkgfs status calls each S3 operation: by HTTP method, LIST apart.
_KINDS = {"ListObjectsV2": "LIST", "ListMultipartUploads": "LIST", "GetObject": "GET",
          "HeadObject": "HEAD", "HeadBucket": "HEAD", "PutObject": "PUT", "UploadPart": "PUT",
          "CreateMultipartUpload": "POST", "CompleteMultipartUpload": "POST",
          "DeleteObject": "DELETE", "AbortMultipartUpload": "DELETE"}


def _counted_into(figures: Figures):
    def count(model, http_response, **_) -> None:
        figures.request(_KINDS.get(model.name, model.name))
        # A conditional write refused is a copy refused (counted as such), not a failure.
        refused = http_response.status_code in (409, 412) and model.name in (
            "PutObject", "CompleteMultipartUpload")
        if http_response.status_code >= 400 and not refused:
            figures.failed(f"{model.name}: HTTP {http_response.status_code}")
    return count


def _failure_into(figures: Figures):
    def count(event_name: str, exception: Exception, **_) -> None:
        operation = event_name.rpartition(".")[2]  # after-call-error.s3.<operation>
        figures.request(_KINDS.get(operation, operation))
        figures.failed(f"{operation}: {type(exception).__name__}")
    return count


def _parse_time(text: str) -> datetime:
    """A time as S3 gives it: ISO 8601 in listings (``2026-11-26T10:00:00.000Z``), HTTP's
    form in headers, which botocore's parser reads."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return parse_timestamp(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)  # S3's are UTC


def _headed(project: str, filename: str, key: str, head: dict) -> StoredFile:
    """The StoredFile a HEAD describes."""
    return StoredFile(project, filename, head["ContentLength"], head["LastModified"].timestamp(),
                      key, head["ETag"])


def _pinned(stored: StoredFile) -> dict[str, str]:
    """Arguments that make a request fail unless the object is the content that was listed."""
    return {"IfMatch": stored.revision} if stored.revision else {}


def _from_s3_metadata(metadata: dict[str, str]) -> dict[str, str]:
    return {key.replace("-", "_"): value for key, value in metadata.items() if value}


def _s3_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """pypicloud's metadata as S3 user metadata: ``-`` for ``_`` in keys, ASCII values."""
    return {name.replace("_", "-"): _ascii(value) for name, value in metadata.items()}


def _ascii(value: str) -> str:
    """S3 metadata values as pypicloud writes them: NFKD, ASCII only, white space folded."""
    text = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    return re.sub(r"\s+", " ", text).strip()


def _hand_over(pages: queue.Queue, page, stopped: threading.Event) -> None:
    """Put a page in the queue, unless the lister has stopped taking them."""
    while not stopped.is_set():
        try:
            pages.put(page, timeout=0.1)
            return
        except queue.Full:
            continue
