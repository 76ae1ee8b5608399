"""``pkgfs mount`` and ``pkgfs umount``: the user's errors are one line, never a traceback."""

import argparse
import logging
import os
import sys

from . import mount
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
    return top


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s pkgfs %(levelname)s: %(message)s", stream=sys.stderr)
    log.setLevel(logging.DEBUG if getattr(arguments, "debug", False) else logging.INFO)
    try:
        if arguments.command == "umount":
            mount.unmount(arguments.mountpoint)
            return 0
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
