"""Errors a user can act on. Each message is one line that says what is wrong and what to do."""


class PkgfsError(Exception):
    """A problem the user can fix; the CLI prints the message alone, no traceback."""

    exit_code = 1


class ConfigError(PkgfsError):
    """The config file or the command line is wrong."""

    exit_code = 2


class MountError(PkgfsError):
    """The mount point or FUSE itself is not usable."""


class StorageError(PkgfsError):
    """The store could not do what was asked."""


class NotFound(StorageError):
    """No such object in the store."""


class Changed(StorageError):
    """The file is no longer the content that was listed: another writer replaced it."""


class StorageUnavailable(StorageError):
    """The store cannot be reached, or did not answer in time."""


class AccessDenied(StorageError):
    """The store refused the credentials, or refused them this operation."""


class InvalidName(PkgfsError):
    """A name that cannot be stored where it was given: not a distribution, wrong project."""


class AlreadyExists(PkgfsError):
    """The store has that file, and overwriting is off."""


class NotEmpty(PkgfsError):
    """A project folder that still holds files."""


class ReadOnly(PkgfsError):
    """The mount is read-only."""


class StagingFailed(PkgfsError):
    """A copy could not be staged on local disk whole, so it is not stored."""


class Generated(PkgfsError):
    """A file the index generates: it cannot be written, renamed or removed."""


class ChangeInPlace(PkgfsError):
    """A stored file opened to be changed rather than replaced whole (``>>``, O_RDWR)."""


class Busy(PkgfsError):
    """A file being written, opened to be written by someone else too."""


class NotOpenForWriting(PkgfsError):
    """A write through a descriptor opened for reading."""


class CrossDevice(PkgfsError):
    """A rename that cannot be done in place; ``mv`` then copies and deletes instead."""
