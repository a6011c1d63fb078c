"""prodinf's own files kept private: folders 0700, files 0600, whatever the umask.

``PRODINF_HOME`` holds the embedded job store (every submitted param, URIs with their
passwords included, is stored as given and only masked when shown), the broker's
messages, the outbox's mails and the logs: nobody but the user prodinf runs as may read
them. Each is created private where it is made, and what an older prodinf (or a umask
of 022) left wider is tightened when a process starts, with a warning.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

__all__ = [
    "OWN_FILES",
    "PRIVATE_FILE",
    "PRIVATE_FOLDER",
    "open_private",
    "private_file",
    "private_folder",
    "secure_home",
    "tighten",
]

log = logging.getLogger(__name__)

#: Mode of prodinf's own files.
PRIVATE_FILE = 0o600
#: Mode of prodinf's own folders.
PRIVATE_FOLDER = 0o700
#: prodinf's own files directly in PRODINF_HOME (globs): the embedded store with its
#: WAL, shared-memory and journal files, and the scheduler's schedule.
OWN_FILES = ("prodinf.sqlite*", "celerybeat-schedule*")
#: prodinf's own folders in PRODINF_HOME; their subfolders and files are tightened too.
_OWN_FOLDERS = ("broker", "outbox", "logs")


def tighten(path: Path, mode: int) -> None:
    """Take from ``path`` every permission ``mode`` does not grant, logging a warning
    when it had any (nothing if it does not exist; a warning if it cannot be changed)."""
    try:
        current = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    if not current & ~mode:
        return
    try:
        os.chmod(path, current & mode)
    except OSError as exc:
        log.warning("%s is mode %o, open to others, and could not be changed: %s",
                    path, current, exc.strerror)  # fmt: skip
        return
    log.warning("%s was mode %o, open to others: made %o", path, current, current & mode)


def private_folder(path: Path) -> Path:
    """``path``, created (with missing parents) if need be, the folder itself 0700."""
    path.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    tighten(path, PRIVATE_FOLDER)
    return path


def private_file(path: Path) -> Path:
    """``path``, created empty with mode 0600 if it does not exist, else tightened."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        tighten(path, PRIVATE_FILE)
    return path


def open_private(path: Path | str, append: bool = False) -> int:
    """A file descriptor of ``path`` opened for writing, created 0600 (truncated unless
    ``append``); an existing file is tightened first."""
    tighten(Path(path), PRIVATE_FILE)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    return os.open(path, flags, PRIVATE_FILE)


def secure_home(home: Path) -> None:
    """Make PRODINF_HOME private: the folder (created if missing) and its own folders
    (``broker/``, ``outbox/``, ``logs/``, and the folders in them) 0700; the store's and
    the scheduler's files in it and the logs 0600. The messages and mails inside the
    0700 folders are out of others' reach whatever their modes (and are many: not
    looked at one by one); others' files in home are left as they are."""
    private_folder(home)
    for pattern in OWN_FILES:
        for path in home.glob(pattern):
            if path.is_file():
                tighten(path, PRIVATE_FILE)
    for name in _OWN_FOLDERS:
        folder = home / name
        if not folder.is_dir():
            continue
        tighten(folder, PRIVATE_FOLDER)
        for entry in os.scandir(folder):
            if entry.is_dir(follow_symlinks=False):
                tighten(Path(entry.path), PRIVATE_FOLDER)
            elif name == "logs" and entry.is_file(follow_symlinks=False):
                tighten(Path(entry.path), PRIVATE_FILE)
