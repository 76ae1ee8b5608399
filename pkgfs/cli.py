"""``pkgfs mount`` and ``pkgfs umount``: the user's errors are one line, never a traceback."""

import argparse
import glob
import json
import logging
import os
import sys

from . import mount, status
from .config import default_config, default_store_dir, load_config
from .errors import PkgfsError

log = logging.getLogger("pkgfs")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="pkgfs", description="Mount a pypicloud-style package store as a directory tree.")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mount_command = commands.add_parser(
        "mount", help="mount a store; returns once the mount is ready",
        description="Mount a store. Without -c, mounts the file store in "
                    f"{default_store_dir()} (created if missing).")
    mount_command.add_argument("mountpoint", metavar="MOUNTPOINT")
    mount_command.add_argument("-c", "--config", metavar="FILE",
                               help="INI file with a [pkgfs] or pypicloud [app:main] section")
    mount_command.add_argument("-f", "--foreground", action="store_true",
                               help="stay in the foreground and log to the terminal")
    mount_command.add_argument("--read-only", action="store_true", help="refuse every write")
    mount_command.add_argument("--allow-other", action="store_true",
                               help="let other users use the mount (needs user_allow_other "
                                    "in /etc/fuse.conf unless run as root)")
    mount_command.add_argument("--debug", action="store_true", help="log every operation")
    mount_command.add_argument("-o", dest="fuse_options", action="append", default=[],
                               metavar="OPTIONS", help="comma-separated FUSE mount options")
    mount_command.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)

    umount_command = commands.add_parser("umount", help="unmount and stop its daemon")
    umount_command.add_argument("mountpoint", metavar="MOUNTPOINT")

    status_command = commands.add_parser(
        "status", help="what each mount of this user is doing",
        description="For each mount of this user (or MOUNTPOINT's): its store, the age of its "
                    "listing, files and projects, store requests by kind, failed requests, "
                    "copies stored and refused, and the daemon's memory.")
    status_command.add_argument("mountpoint", metavar="MOUNTPOINT", nargs="?")
    status_command.add_argument("--json", action="store_true", help="one JSON list, for monitoring")
    return top


# What mount(8) passes that is not FUSE's: handled by mount(8) itself, or meaningless here.
_MOUNT_ONLY = {"rw", "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group",
               "_netdev", "nofail", "dev", "nodev", "suid", "nosuid", "exec", "noexec",
               "atime", "noatime", "relatime", "strictatime", "sync", "async"}


def from_mount_helper(argv: list[str]) -> list[str]:
    """``mount -t fuse.pkgfs CONFIG MOUNTPOINT -o OPTIONS`` (fstab) runs ``pkgfs CONFIG
    MOUNTPOINT -o OPTIONS``: the same as ``pkgfs mount MOUNTPOINT -c CONFIG`` with ``ro``
    and ``allow_other`` as their flags. CONFIG ``default`` mounts the default store."""
    if len(argv) < 2 or argv[0] in ("mount", "umount", "status") or argv[0].startswith("-"):
        return argv
    source, mountpoint, rest = argv[0], argv[1], argv[2:]
    command = ["mount", mountpoint] + (["-c", source] if source != "default" else [])
    options = []
    while rest:
        word = rest.pop(0)
        if word == "-o" and rest:
            options += rest.pop(0).split(",")
        elif word.startswith("-o"):
            options += word[2:].split(",")
        else:
            command.append(word)
    fuse_options = []
    for option in filter(None, options):
        if option == "ro":
            command.append("--read-only")
        elif option == "allow_other":
            command.append("--allow-other")
        elif option not in _MOUNT_ONLY and not option.startswith(("x-", "comment=")):
            fuse_options.append(option)
    return command + (["-o", ",".join(fuse_options)] if fuse_options else [])


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(from_mount_helper(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(format="%(asctime)s pkgfs %(levelname)s: %(message)s", stream=sys.stderr)
    log.setLevel(logging.DEBUG if getattr(arguments, "debug", False) else logging.INFO)
    try:
        if arguments.command == "umount":
            mount.unmount(arguments.mountpoint)
            return 0
        if arguments.command == "status":
            return run_status(arguments)
        return run_mount(arguments)
    except PkgfsError as error:
        print(f"pkgfs: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130


def run_mount(arguments: argparse.Namespace) -> int:
    if not arguments.foreground:
        return mount.start_daemon(daemon_arguments(arguments), arguments.mountpoint)
    if arguments.config:
        config = load_config(arguments.config)
    else:
        config = default_config()
        os.makedirs(config.store.directory, exist_ok=True)
    options = mount.MountOptions(
        mountpoint=os.path.abspath(arguments.mountpoint),
        read_only=arguments.read_only,
        allow_other=arguments.allow_other,
        debug=arguments.debug,
        fuse_options=tuple(option for group in arguments.fuse_options
                           for option in group.split(",") if option),
    )
    mount.serve(config, options, arguments.ready_fd)
    return 0


def run_status(arguments: argparse.Namespace) -> int:
    if arguments.mountpoint:
        paths = [mount.state_file(arguments.mountpoint, "status")]
    else:
        paths = sorted(glob.glob(os.path.join(mount.state_dir(), "*.status")))
    mounts = [found for found in map(status.read_status, paths) if found is not None]
    for found in mounts:
        if not status.is_alive(found["pid"]):
            found["state"] = "its daemon is gone: a stale mount; run pkgfs umount on it"
    if arguments.json:
        print(json.dumps(mounts, indent=1))
    elif not mounts:
        print("no pkgfs mount of this user" + (f" on {arguments.mountpoint}"
                                               if arguments.mountpoint else ""))
    else:
        print("\n\n".join("\n".join(status.lines(found)) for found in mounts))
    return 0 if mounts or not arguments.mountpoint else 1


def daemon_arguments(arguments: argparse.Namespace) -> list[str]:
    """The same mount command, with absolute paths, for the daemon to run."""
    argv = ["mount", os.path.abspath(arguments.mountpoint)]
    if arguments.config:
        argv += ["-c", os.path.abspath(arguments.config)]
    argv += [flag for flag, wanted in (("--read-only", arguments.read_only),
                                       ("--allow-other", arguments.allow_other),
                                       ("--debug", arguments.debug)) if wanted]
    for group in arguments.fuse_options:
        argv += ["-o", group]
    return argv
