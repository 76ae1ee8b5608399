"""pypicloud's S3 storage: ``<prefix>[<hash>/]<project>/<filename>``, metadata in the object."""

import hashlib
import logging
import os
import re
import threading
import time
import unicodedata
from typing import Callable, Iterator

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError as BotoConnectionError,
    NoCredentialsError,
)

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
from .s3_reader import S3Reader

log = logging.getLogger(__name__)

_HASH_FOLDER = re.compile(r"^[0-9a-f]{4}$")

# A multipart upload begun this long ago was abandoned (seconds): a day.
ABANDONED_AFTER = 86400.0

_TRANSFER = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=16 << 20,
                           max_concurrency=4)

_ACCESS_CODES = {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId",
                 "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
# A conditional write (If-None-Match: *) that found the key taken, or raced another.
_TAKEN_CODES = ("(PreconditionFailed)", "(ConditionalRequestConflict)", "(412)", "(409)")


class _Taken(StorageError):
    """A conditional upload found its key taken."""


class S3Storage(Storage):
    def __init__(self, bucket: str, *, prefix: str = "", prepend_hash: bool = True,
                 region: str | None = None, endpoint_url: str | None = None,
                 access_key: str | None = None, secret_key: str | None = None,
                 timeout: float = 10.0, figures: Figures | None = None,
                 abandoned_after: float = ABANDONED_AFTER):
        self.bucket = bucket
        self.prefix = prefix
        self.prepend_hash = prepend_hash
        self.region = region
        self.endpoint = endpoint_url or "AWS S3"
        self._failed_uploads: dict[str, float] = {}  # key -> when its upload failed
        self._only_new: set[str] = set()  # keys being stored that must not exist yet
        self.abandoned_after = abandoned_after
        self._lock = threading.Lock()
        session = boto3.session.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region)
        self.client = session.client("s3", endpoint_url=endpoint_url, config=BotoConfig(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"mode": "standard", "max_attempts": 3},
            max_pool_connections=32,
            # S3-compatible stores (MinIO, Ceph, moto) rarely resolve bucket subdomains.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        ))
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
        self._abort_failed_uploads()
        pages = iter(self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix))
        # Each page is a request: fetch each through _call, so its errors translate.
        while (page := self._listed_page(pages)) is not None:
            for item in page.get("Contents", []):
                found = self._stored_file(item)
                if found is not None:
                    yield found

    def _listed_page(self, pages) -> dict | None:
        try:
            return self._call(next, pages, None)
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

    def key(self, project: str, filename: str) -> str:
        hashed = hashlib.md5(filename.encode()).hexdigest()[:4] + "/" if self.prepend_hash else ""
        return f"{self.prefix}{hashed}{project}/{filename}"

    def store(self, project: str, filename: str, source: str, metadata: dict[str, str], *,
              replace: bool) -> StoredFile:
        key = self.key(project, filename)
        s3_metadata = _s3_metadata(metadata)
        s3_metadata.update(name=project, version=parse_filename(filename).version)
        self._abort_failed_uploads()
        # The transfer manager uploads in parts above the threshold: S3 shows
        # the object only once the whole of it is there. Without replace, the
        # PUT (or the multipart upload's completion) is conditional.
        with self._lock:
            if not replace:
                self._only_new.add(key)
        try:
            self._call(self.client.upload_file, source, self.bucket, key,
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
        return self._stored_as(project, filename, key, os.path.getsize(source),
                               metadata["hash_sha256"])

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
        key = self.key(project, filename)
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
        response = self._get(stored, start, start + length - 1)
        return Fetched(self._call(response["Body"].read), _from_s3_metadata(response["Metadata"]))

    def url(self, stored: StoredFile, expires_in: int) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": stored.location},
            ExpiresIn=expires_in)

    def open_stream(self, stored: StoredFile, start: int):
        """The body of a GET of a stored file from ``start`` to its end."""
        return self._get(stored, start, None)["Body"]

    def _get(self, stored: StoredFile, start: int, end: int | None) -> dict:
        """A ranged GET, pinned to the content that was listed, that got what it asked for."""
        response = self._call(self.client.get_object, Bucket=self.bucket, Key=stored.location,
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
        return StorageError(f"S3 error {code or 'unknown'} on bucket {self.bucket}")


# What pkgfs status calls each S3 operation: by HTTP method, LIST apart.
_KINDS = {"ListObjectsV2": "LIST", "ListMultipartUploads": "LIST", "GetObject": "GET",
          "HeadObject": "HEAD", "HeadBucket": "HEAD", "PutObject": "PUT", "UploadPart": "PUT",
          "CreateMultipartUpload": "POST", "CompleteMultipartUpload": "POST",
          "DeleteObject": "DELETE", "AbortMultipartUpload": "DELETE"}


def _counted_into(figures: Figures):
    def count(model, http_response, **_) -> None:
        figures.request(_KINDS.get(model.name, model.name))
        if http_response.status_code >= 400:
            figures.failed(f"{model.name}: HTTP {http_response.status_code}")
    return count


def _failure_into(figures: Figures):
    def count(event_name: str, exception: Exception, **_) -> None:
        operation = event_name.rpartition(".")[2]  # after-call-error.s3.<operation>
        figures.request(_KINDS.get(operation, operation))
        figures.failed(f"{operation}: {type(exception).__name__}")
    return count


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
