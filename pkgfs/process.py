"""Is a process a live pkgfs daemon? (Pid files and staging folders outlive killed daemons.)"""


def is_pkgfs_daemon(pid: int) -> bool:
    """True while ``pid`` runs pkgfs; a zombie, or a reused pid, is not ours."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            arguments = cmdline.read().split(b"\0")
        with open(f"/proc/{pid}/stat", "rb") as process_stat:
            state = process_stat.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return b"pkgfs" in arguments and state != b"Z"
