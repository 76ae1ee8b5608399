"""Build package stores the way pypicloud writes them (shared/LAYOUT.md), to mount them."""

import hashlib
import json
import os
import re
import unicodedata

from pkgfs.names import parse_filename


def package_metadata(data: bytes, summary: str = "", requires_python: str = "") -> dict:
    metadata = {"hash_sha256": hashlib.sha256(data).hexdigest(),
                "hash_md5": hashlib.md5(data).hexdigest(),
                "summary": summary, "requires_python": requires_python}
    return {key: value for key, value in metadata.items() if value}


class FileStore:
    """``<dir>/<project>/<version>/<filename>`` with ``<filename>.meta`` beside it."""

    def __init__(self, directory):
        self.directory = str(directory)

    def add(self, filename: str, data: bytes, *, meta: str | None = "json",
            project: str | None = None, version: str | None = None, **fields) -> str:
        """Store a file; ``meta`` is "json", "malformed" or None (no .meta file)."""
        parsed = parse_filename(filename)
        folder = os.path.join(self.directory, project or parsed.project, version or parsed.version)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, filename)
        with open(path, "wb") as package:
            package.write(data)
        if meta == "json":
            with open(path + ".meta", "w") as meta_file:
                json.dump(package_metadata(data, **fields), meta_file)
        elif meta == "malformed":
            with open(path + ".meta", "w") as meta_file:
                meta_file.write("{not json")
        return path

    def stored(self, filename: str) -> tuple[bytes, dict | None] | None:
        """The bytes and .meta of a stored file, read straight from the directory."""
        parsed = parse_filename(filename)
        path = os.path.join(self.directory, parsed.project, parsed.version, filename)
        if not os.path.exists(path):
            return None
        meta = None
        if os.path.exists(path + ".meta"):
            with open(path + ".meta") as meta_file:
                meta = json.load(meta_file)
        with open(path, "rb") as package:
            return package.read(), meta

    def contents(self) -> list[str]:
        """Every file and folder in the store, relative to it."""
        found = []
        for folder, folders, files in os.walk(self.directory):
            relative = os.path.relpath(folder, self.directory)
            found += [os.path.normpath(os.path.join(relative, name)) for name in folders + files]
        return sorted(found)

    def state(self) -> dict[str, tuple]:
        """Every file in the store with its bytes' sha256 and its mtime: what a reader must
        never change."""
        found = {}
        for path in self.contents():
            full = os.path.join(self.directory, path)
            if os.path.isfile(full):
                with open(full, "rb") as stored:
                    found[path] = (hashlib.sha256(stored.read()).hexdigest(),
                                   os.stat(full).st_mtime_ns)
        return found

    def add_raw(self, relative_path: str, data: bytes = b"x") -> str:
        """Put anything at a path, for what is not a distribution."""
        path = os.path.join(self.directory, relative_path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as anything:
            anything.write(data)
        return path


class S3Store:
    """``<prefix>[<md5(filename)[:4]>/]<project>/<filename>``, metadata in the object."""

    def __init__(self, client, bucket: str, prefix: str = "", prepend_hash: bool = True):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.prepend_hash = prepend_hash

    def key(self, filename: str, project: str | None = None) -> str:
        project = project or parse_filename(filename).project
        hashed = hashlib.md5(filename.encode()).hexdigest()[:4] + "/" if self.prepend_hash else ""
        return f"{self.prefix}{hashed}{project}/{filename}"

    def add(self, filename: str, data: bytes, *, with_name: bool = True, **fields) -> str:
        """Store a file; ``with_name=False`` leaves out name and version, as older tools did."""
        parsed = parse_filename(filename)
        metadata = {key.replace("_", "-"): _ascii(value)
                    for key, value in package_metadata(data, **fields).items()}
        if with_name:
            metadata.update(name=parsed.project, version=parsed.version)
        key = self.key(filename)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, Metadata=metadata)
        return key

    def add_raw(self, key: str, data: bytes = b"x") -> str:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        return key

    def state(self) -> dict[str, tuple]:
        """Every object with its ETag, LastModified and metadata: what a reader must never
        change."""
        found = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for item in page.get("Contents", []):
                head = self.client.head_object(Bucket=self.bucket, Key=item["Key"])
                found[item["Key"]] = (head["ETag"], head["LastModified"], head["Metadata"])
        return found

    def stored(self, filename: str) -> tuple[bytes, dict] | None:
        """The bytes and S3 metadata of a stored file, read straight from the bucket."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(filename))
        except self.client.exceptions.NoSuchKey:
            return None
        return response["Body"].read(), response["Metadata"]

    def contents(self) -> list[str]:
        """Every key in the bucket, and every multipart upload still open."""
        keys = [item["Key"] for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket) for item in page.get("Contents", [])]
        uploads = self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        return sorted(keys) + [f"multipart upload of {upload['Key']}" for upload in uploads]


def wheel(name: str, version: str, summary: str = "", requires_python: str = "",
          padding: int = 0, requires: tuple[str, ...] = (), metadata: bytes | None = None,
          metadata_first: bool = False) -> bytes:
    """A real, installable wheel, with METADATA (given, or made) in its .dist-info; written
    last, as build tools do, unless ``metadata_first``."""
    import io
    import zipfile

    buffer = io.BytesIO()
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    if metadata is None:
        metadata = core_metadata(name, version, summary, requires_python, requires).encode()
    files = {f"{module}/__init__.py": f"VERSION = {version!r}\n".encode(),
             f"{module}/data.bin": os.urandom(padding),
             f"{dist_info}/METADATA": metadata,
             f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                                   b"Tag: py3-none-any\n"}
    if metadata_first:
        files = {f"{dist_info}/METADATA": files.pop(f"{dist_info}/METADATA"), **files}
    record = "".join(f"{path},,\n" for path in files) + f"{dist_info}/RECORD,,\n"
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, content in files.items():
            archive.writestr(path, content)
        archive.writestr(f"{dist_info}/RECORD", record)
    return buffer.getvalue()


def with_member_header(archive: bytes, member: str, *, flags: int | None = None,
                       method: int | None = None) -> bytes:
    """A zip with one member's general-purpose flags or compression method changed, in its
    local header and its central directory entry: how encrypted or Deflate64 entries look."""
    import io
    import struct
    import zipfile

    data = bytearray(archive)
    with zipfile.ZipFile(io.BytesIO(archive)) as parsed:
        info = parsed.getinfo(member)
        central = parsed.start_dir
    entries = [info.header_offset]  # the local header: flags at +6, method at +8
    position = data.index(b"PK\x01\x02" + bytes(), central)
    while data[position:position + 4] == b"PK\x01\x02":  # central entries: flags at +8
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, position + 28)
        if data[position + 46:position + 46 + name_length].decode() == member:
            entries.append(position + 2)
        position += 46 + name_length + extra_length + comment_length
    for offset in entries:
        if flags is not None:
            struct.pack_into("<H", data, offset + 6, flags)
        if method is not None:
            struct.pack_into("<H", data, offset + 8, method)
    return bytes(data)


def sdist(name: str, version: str, summary: str = "", requires_python: str = "") -> bytes:
    """A real .tar.gz sdist with PKG-INFO."""
    import io
    import tarfile

    buffer = io.BytesIO()
    text = core_metadata(name, version, summary, requires_python).encode()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        member = tarfile.TarInfo(f"{name.replace('-', '_')}-{version}/PKG-INFO")
        member.size = len(text)
        archive.addfile(member, io.BytesIO(text))
    return buffer.getvalue()


def core_metadata(name, version, summary, requires_python, requires=()) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Summary: {summary}"] if summary else []
    lines += [f"Requires-Python: {requires_python}"] if requires_python else []
    lines += [f"Requires-Dist: {requirement}" for requirement in requires]
    return "\n".join(lines) + "\n\nlong description\n"


def _ascii(value: str) -> str:
    """pypicloud's S3 metadata values: NFKD, non-ASCII dropped, white space folded."""
    text = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    return re.sub(r"\s+", " ", text)
