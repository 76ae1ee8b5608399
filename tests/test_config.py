import logging

import pytest

from pkgfs.config import (
    DEFAULT_CACHE_TTL,
    Config,
    FileStoreConfig,
    S3StoreConfig,
    load_config,
)
from pkgfs.errors import ConfigError


def config_from(tmp_path, text: str) -> Config:
    path = tmp_path / "pkgfs.conf"
    path.write_text(text)
    return load_config(str(path))


def test_file_storage_is_the_default(tmp_path):
    config = config_from(tmp_path, "[pkgfs]\nstorage.dir = /srv/packages\n")
    assert config == Config(FileStoreConfig("/srv/packages"), cache_ttl=DEFAULT_CACHE_TTL)


@pytest.mark.parametrize("kind", ["file", "pypicloud.storage.FileStorage"])
def test_file_storage_spellings(tmp_path, kind):
    config = config_from(tmp_path, f"[pkgfs]\npypi.storage = {kind}\nstorage.dir = /srv/p\n")
    assert config.store == FileStoreConfig("/srv/p")


def test_relative_storage_dir_and_here_are_the_config_files_folder(tmp_path):
    assert config_from(tmp_path, "[pkgfs]\nstorage.dir = packages\n").store == \
        FileStoreConfig(str(tmp_path / "packages"))
    assert config_from(tmp_path, "[pkgfs]\nstorage.dir = %(here)s/pk\n").store == \
        FileStoreConfig(str(tmp_path / "pk"))


def test_s3_options_and_defaults(tmp_path):
    config = config_from(tmp_path, "[pkgfs]\npypi.storage = s3\naws.bucket = my-bucket\n")
    assert config.store == S3StoreConfig(bucket="my-bucket")
    assert config.store.prepend_hash is True
    assert (config.store.expire_after, config.store.buffer_time) == (86400, 600)


def test_every_s3_option(tmp_path):
    config = config_from(tmp_path, """[pkgfs]
pypi.storage = pypicloud.storage.S3Storage
aws.bucket = b1
aws.prefix = packages/
aws.prepend_hash = false
aws.region = eu-west-1
aws.access_key = AKID
aws.secret_key = s3cr3t
aws.endpoint_url = http://127.0.0.1:9000
aws.expire_after = 3600
aws.buffer_time = 60
pkgfs.cache_ttl = 5
pkgfs.timeout = 2.5
""")
    assert config == Config(S3StoreConfig(
        bucket="b1", prefix="packages/", prepend_hash=False, region="eu-west-1",
        endpoint_url="http://127.0.0.1:9000", access_key="AKID", secret_key="s3cr3t",
        expire_after=3600, buffer_time=60), cache_ttl=5, timeout=2.5)
    assert "s3cr3t" not in repr(config)


def test_pypicloud_server_ini_with_newer_spellings(tmp_path):
    config = config_from(tmp_path, """[app:main]
use = egg:pypicloud
pyramid.reload_templates = False
pypi.default_read = authenticated
pypi.storage = s3
storage.bucket = b2
storage.prefix = p/
storage.prepend_hash = no
storage.region_name = us-west-2
storage.aws_access_key_id = AKID
storage.aws_secret_access_key = SECRET
storage.endpoint_url = http://127.0.0.1:1
storage.expire_after = 100
storage.buffer_time = 10

[server:main]
use = egg:waitress#main

[formatter_generic]
format = %(levelname)s %(asctime)s [%(name)s] %(message)s
""")
    assert config.store == S3StoreConfig(
        bucket="b2", prefix="p/", prepend_hash=False, region="us-west-2",
        endpoint_url="http://127.0.0.1:1", access_key="AKID", secret_key="SECRET",
        expire_after=100, buffer_time=10)


def test_unknown_keys_are_named_in_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        config_from(tmp_path, "[pkgfs]\nstorage.dir = /x\nstorage.dri = /y\naws.bukcet = b\n"
                              "pkgfs.cache_tll = 3\npypi.default_read = everyone\n")
    warned = " ".join(record.getMessage() for record in caplog.records)
    assert "storage.dri" in warned and "aws.bukcet" in warned and "pkgfs.cache_tll" in warned
    assert "pypi.default_read" not in warned


@pytest.mark.parametrize("text, message", [
    ("[other]\nx = 1\n", "no [pkgfs] or [app:main] section"),
    ("not an ini", "not a valid INI file"),
    ("[pkgfs]\npypi.storage = gcs\n", "pypi.storage = gcs is not a storage pkgfs supports"),
    ("[pkgfs]\npypi.storage = file\n", "storage.dir is required"),
    ("[pkgfs]\npypi.storage = s3\n", "aws.bucket is required"),
    ("[pkgfs]\npypi.storage = s3\naws.bucket = my.bucket\n", "must not contain '.'"),
    ("[pkgfs]\npypi.storage = s3\naws.bucket = b\naws.prepend_hash = maybe\n",
     "aws.prepend_hash = maybe is not a boolean"),
    ("[pkgfs]\npypi.storage = s3\naws.bucket = b\naws.expire_after = soon\n",
     "aws.expire_after = soon is not a whole number"),
    ("[pkgfs]\npypi.storage = s3\naws.bucket = b\naws.expire_after = 0\n", "at least 1"),
    ("[pkgfs]\npypi.storage = s3\naws.bucket = b\naws.buffer_time = 90000\n",
     "must be less than aws.expire_after"),
    ("[pkgfs]\npypi.storage = s3\naws.bucket = b\naws.access_key = A\n", "set both or neither"),
    ("[pkgfs]\npypi.storage = s3\naws.bucket = b\nstorage.bucket = c\n", "aws.bucket is set twice"),
    ("[pkgfs]\nstorage.dir = /x\npkgfs.cache_ttl = -1\n", "pkgfs.cache_ttl = -1 must be at least 0"),
    ("[pkgfs]\nstorage.dir = /x\npkgfs.cache_ttl = nan\n", "must be at least 0"),
    ("[pkgfs]\nstorage.dir = /x\npkgfs.timeout = 0\n", "pkgfs.timeout = 0 must be at least"),
    ("[pkgfs]\nstorage.dir = /x\npkgfs.presigned_urls = true\n", "needs s3 storage"),
    ("[pkgfs]\npypi.storage = s3\naws.bucket = b\npkgfs.presigned_urls = true\n"
     "pkgfs.index = false\n", "needs pkgfs.index = true"),
    ("[pkgfs]\nstorage.dir = /x\npkgfs.index = sometimes\n", "pkgfs.index = sometimes is not a boolean"),
    ("[pkgfs]\nstorage.dir = /x\npypi.allow_overwrite = 2\n", "pypi.allow_overwrite = 2 is not"),
])
def test_bad_configs_get_one_line_errors(tmp_path, text, message):
    with pytest.raises(ConfigError) as raised:
        config_from(tmp_path, text)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "absent.conf"))


def test_a_secret_others_can_read_is_warned_about(tmp_path, caplog):
    path = tmp_path / "pkgfs.conf"
    path.write_text("[pkgfs]\npypi.storage = s3\naws.bucket = b1\n"
                    "aws.access_key = AKID\naws.secret_key = s3cr3t-value\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        load_config(str(path))
    assert f"chmod 600 {path}" in caplog.text
    assert "s3cr3t-value" not in caplog.text

    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        load_config(str(path))
    assert caplog.text == ""


def test_the_example_config_loads_and_documents_every_key():
    from pathlib import Path

    from pkgfs.config import ALIASES

    example = Path(__file__).resolve().parent.parent / "pkgfs.conf.example"
    config = load_config(str(example))
    assert config.store == FileStoreConfig(str(example.parent / "packages"))
    text = example.read_text()
    for key, aliases in ALIASES.items():
        for name in (key, *aliases):
            assert name in text, f"pkgfs.conf.example does not mention {name}"
