"""The config file: read once at start into typed, validated values.

A ``[pkgfs]`` section, or a pypicloud server ini's ``[app:main]`` unchanged.
Option names and defaults are those of pypicloud's storage reference; its newer
``storage.*`` spellings are aliases.
"""

import configparser
import logging
import os
from dataclasses import dataclass, field

from .errors import ConfigError

log = logging.getLogger(__name__)

SECTIONS = ("pkgfs", "app:main")
CHECKED_PREFIXES = ("pkgfs.", "aws.", "storage.")

# Each option, then the other spellings that mean the same.
ALIASES = {
    "pypi.storage": (),
    "storage.dir": (),
    "aws.bucket": ("storage.bucket",),
    "aws.prefix": ("storage.prefix",),
    "aws.prepend_hash": ("storage.prepend_hash",),
    "aws.region": ("storage.region_name", "storage.region"),
    "aws.access_key": ("storage.aws_access_key_id", "storage.access_key"),
    "aws.secret_key": ("storage.aws_secret_access_key", "storage.secret_key"),
    "aws.endpoint_url": ("storage.endpoint_url",),
    "aws.expire_after": ("storage.expire_after",),
    "aws.buffer_time": ("storage.buffer_time",),
    "pkgfs.cache_ttl": (),
    "pkgfs.timeout": (),
    "pkgfs.list_timeout": (),
    "pkgfs.list_concurrency": (),
    "pkgfs.read_ahead": (),
    "pkgfs.cache_dir": (),
    "pkgfs.index": (),
    "pkgfs.presigned_urls": (),
    "pypi.allow_overwrite": (),
}

FILE_KINDS = ("file", "pypicloud.storage.FileStorage", "pypicloud.storage.files.FileStorage")
S3_KINDS = ("s3", "pypicloud.storage.S3Storage", "pypicloud.storage.s3.S3Storage")

DEFAULT_CACHE_TTL = 60.0
DEFAULT_TIMEOUT = 10.0
DEFAULT_LIST_TIMEOUT = 60.0
DEFAULT_LIST_CONCURRENCY = 4
DEFAULT_READ_AHEAD_MIB = 256


def default_store_dir() -> str:
    """Where ``pkgfs mount DIR`` without ``-c`` keeps its file store."""
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data_home, "pkgfs", "store")


@dataclass(frozen=True)
class FileStoreConfig:
    directory: str


@dataclass(frozen=True)
class S3StoreConfig:
    bucket: str
    prefix: str = ""
    prepend_hash: bool = True
    region: str | None = None
    endpoint_url: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    expire_after: int = 86400
    buffer_time: int = 600


def default_cache_dir() -> str:
    """Local disk for files being copied in and for what the index extracts."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(cache_home, "pkgfs")


@dataclass(frozen=True)
class Config:
    store: FileStoreConfig | S3StoreConfig
    cache_ttl: float = DEFAULT_CACHE_TTL  # seconds a listing is trusted
    timeout: float = DEFAULT_TIMEOUT  # seconds one storage request may take, retries included
    list_timeout: float = DEFAULT_LIST_TIMEOUT  # seconds a lookup waits for a listing
    list_concurrency: int = DEFAULT_LIST_CONCURRENCY  # S3: parts of the store listed at once
    read_ahead_mib: int = DEFAULT_READ_AHEAD_MIB  # S3: what all reads may hold read ahead
    allow_overwrite: bool = False  # may a copy replace a stored file of the same name
    cache_dir: str = field(default_factory=default_cache_dir)
    index: bool = True  # generate index.html, index.json and <wheel>.metadata
    presigned_urls: bool = False  # S3: index pages link to presigned URLs

    @property
    def staging_dir(self) -> str:
        return os.path.join(self.cache_dir, "staging")

    @property
    def index_cache_dir(self) -> str:
        return os.path.join(self.cache_dir, "index")


def default_config() -> Config:
    return Config(FileStoreConfig(default_store_dir()))


def load_config(path: str) -> Config:
    options = _read_options(path)
    config = _parse(options, os.path.dirname(os.path.abspath(path)))
    secret = getattr(config.store, "secret_key", None)
    if secret and os.stat(path).st_mode & 0o077:
        log.warning("config file %s holds a secret key and other users can read it: "
                    "chmod 600 %s", path, path)
    return config


def _read_options(path: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as config_file:
            parser.read_file(config_file)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found: pass an existing file with -c") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    except configparser.Error as error:
        first_line = str(error).splitlines()[0]
        raise ConfigError(f"config file {path} is not a valid INI file: {first_line}") from None
    section = next((name for name in SECTIONS if parser.has_section(name)), None)
    if section is None:
        raise ConfigError(f"config file {path} has no [pkgfs] or [app:main] section")
    here = os.path.dirname(os.path.abspath(path))
    # pypicloud's ini files say %(here)s for the config file's folder.
    return {key: value.replace("%(here)s", here) for key, value in parser.items(section)}


def _parse(raw: dict[str, str], here: str) -> Config:
    options = _canonical_options(raw)
    kind = options.get("pypi.storage", "file")
    if kind in FILE_KINDS:
        store = _file_store(options, here)
    elif kind in S3_KINDS:
        store = _s3_store(options)
    else:
        raise ConfigError(f"pypi.storage = {kind} is not a storage pkgfs supports: use file or s3")
    return Config(
        store,
        cache_ttl=_number(options, "pkgfs.cache_ttl", DEFAULT_CACHE_TTL, minimum=0),
        timeout=_number(options, "pkgfs.timeout", DEFAULT_TIMEOUT, minimum=0.1),
        list_timeout=_number(options, "pkgfs.list_timeout", DEFAULT_LIST_TIMEOUT, minimum=0.1),
        list_concurrency=int(_number(options, "pkgfs.list_concurrency",
                                     DEFAULT_LIST_CONCURRENCY, minimum=1, integer=True,
                                     unit="requests")),
        read_ahead_mib=int(_number(options, "pkgfs.read_ahead", DEFAULT_READ_AHEAD_MIB,
                                   minimum=1, integer=True, unit="MiB")),
        allow_overwrite=_boolean(options, "pypi.allow_overwrite", False),
        cache_dir=os.path.join(here, os.path.expanduser(
            options.get("pkgfs.cache_dir") or default_cache_dir())),
        index=_boolean(options, "pkgfs.index", True),
        presigned_urls=_presigned_urls(options, store),
    )


def _canonical_options(raw: dict[str, str]) -> dict[str, str]:
    """The options under their canonical names; unknown ones are named in a warning."""
    canonical = {alias: name for name, aliases in ALIASES.items() for alias in (name, *aliases)}
    options: dict[str, str] = {}
    for key, value in raw.items():
        name = canonical.get(key)
        if name is None:
            if key.startswith(CHECKED_PREFIXES):
                log.warning("unknown option %s in the config file is ignored: "
                            "check its spelling", key)
            continue
        if name in options:
            raise ConfigError(f"{name} is set twice (as {key} too): keep one of them")
        options[name] = value.strip()
    return options


def _presigned_urls(options: dict[str, str], store) -> bool:
    wanted = _boolean(options, "pkgfs.presigned_urls", False)
    if wanted and not isinstance(store, S3StoreConfig):
        raise ConfigError("pkgfs.presigned_urls needs s3 storage: a file store has no URLs")
    if wanted and not _boolean(options, "pkgfs.index", True):
        raise ConfigError("pkgfs.presigned_urls needs pkgfs.index = true: the index has the URLs")
    return wanted


def _file_store(options: dict[str, str], here: str) -> FileStoreConfig:
    directory = options.get("storage.dir")
    if not directory:
        raise ConfigError("storage.dir is required for file storage: set it to the store's folder")
    return FileStoreConfig(os.path.join(here, os.path.expanduser(directory)))


def _s3_store(options: dict[str, str]) -> S3StoreConfig:
    bucket = options.get("aws.bucket")
    if not bucket:
        raise ConfigError("aws.bucket is required for s3 storage: set it to the bucket's name")
    if "." in bucket:
        raise ConfigError(f"aws.bucket = {bucket}: a bucket name must not contain '.' "
                          "(S3's TLS certificate does not cover it); use another bucket")
    expire_after = int(_number(options, "aws.expire_after", 86400, minimum=1, integer=True))
    buffer_time = int(_number(options, "aws.buffer_time", 600, minimum=0, integer=True))
    if buffer_time >= expire_after:
        raise ConfigError(f"aws.buffer_time ({buffer_time}) must be less than "
                          f"aws.expire_after ({expire_after})")
    access_key = options.get("aws.access_key") or None
    secret_key = options.get("aws.secret_key") or None
    if bool(access_key) != bool(secret_key):
        raise ConfigError("aws.access_key and aws.secret_key go together: set both or neither")
    return S3StoreConfig(
        bucket=bucket,
        prefix=options.get("aws.prefix", ""),
        prepend_hash=_boolean(options, "aws.prepend_hash", True),
        region=options.get("aws.region") or None,
        endpoint_url=options.get("aws.endpoint_url") or None,
        access_key=access_key,
        secret_key=secret_key,
        expire_after=expire_after,
        buffer_time=buffer_time,
    )


_TRUE = ("true", "yes", "on", "1", "y", "t")
_FALSE = ("false", "no", "off", "0", "n", "f")


def _boolean(options: dict[str, str], name: str, default: bool) -> bool:
    value = options.get(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigError(f"{name} = {value} is not a boolean: use true or false")


def _number(options: dict[str, str], name: str, default: float, *, minimum: float,
            integer: bool = False, unit: str = "seconds") -> float:
    value = options.get(name)
    if value is None:
        return default
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        kind = f"a {'whole ' if integer else ''}number of {unit}"
        raise ConfigError(f"{name} = {value} is not {kind}") from None
    if not number >= minimum:  # also refuses nan
        raise ConfigError(f"{name} = {value} must be at least {minimum:g}")
    return number
