"""Atomic file writes: a reader sees the old file or the complete new one, never a partial file.

Temp files are named ``.<name>.<pid>.<8 random chars>.tmp`` in the target's folder. A save
killed mid-write leaves one behind; the next save to the same target removes the stale ones
(see ``remove_stale_temps``). Nothing else in the folder is touched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
import time
from pathlib import Path

STALE_AFTER_S = 3600.0  # a temp file this old is stale whoever wrote it (saves take seconds)
MIN_AGE_S = 60.0  # a temp whose writer pid is gone here is stale once this old (the pid may live elsewhere)
NAME_MAX = 255  # bytes in one file name on ext4, xfs, btrfs, APFS and NTFS
_PID_DIGITS = 10
TEMP_OVERHEAD = len(".") + len(".") + _PID_DIGITS + len(".") + 8 + len(".tmp")
"""Bytes a temp name adds to the target name: a target name may have NAME_MAX - TEMP_OVERHEAD bytes."""


def check_target_name(path: str | os.PathLike[str]) -> Path:
    """Refuse a file name too long for its temp file (``OSError: File name too long`` only at the save)."""
    path = Path(path)
    size = len(os.fsencode(path.name))
    if size > NAME_MAX - TEMP_OVERHEAD:
        raise ValueError(
            f"the file name {path.name[:40]!r}... is {size} bytes long; at most {NAME_MAX - TEMP_OVERHEAD} bytes "
            f"are allowed (the folder's limit is {NAME_MAX}, and a save writes a temp file with a longer name first). "
            "Choose a shorter name."
        )
    return path


def _temp_pattern(name: str) -> re.Pattern[str]:
    """Our temp names for ``name``: with the writer's pid, or the pid-less form older versions wrote."""
    return re.compile(rf"\.{re.escape(name)}\.(?:(\d{{1,{_PID_DIGITS}}})\.)?[a-z0-9_]{{8}}\.tmp")


def _pid_alive(pid: int) -> bool:
    """The process exists on this machine (os.kill(pid, 0) sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temps(path: str | os.PathLike[str], now: float | None = None) -> list[Path]:
    """Delete stale temp files of earlier saves to ``path``; returns what was removed.

    Only regular files whose names match this module's pattern for this very target
    name are candidates. One is stale when it is older than STALE_AFTER_S, or older than
    MIN_AGE_S with a writer pid that no longer runs here (a pid-less older name counts as
    such). The current process's own temps are never removed.
    """
    path = Path(path)
    pattern, now = _temp_pattern(path.name), time.time() if now is None else now
    removed = []
    with contextlib.suppress(OSError), os.scandir(path.parent) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match is None:
                continue
            with contextlib.suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                pid = int(match.group(1)) if match.group(1) else None
                age = now - info.st_mtime
                dead = pid is None or (pid != os.getpid() and not _pid_alive(pid))
                if stat.S_ISREG(info.st_mode) and (age > STALE_AFTER_S or (dead and age > MIN_AGE_S)):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _check_target(path: Path) -> int:
    """The mode the new file gets; refuses a folder and a read-only file as targets."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"cannot save to {path}: it is a folder; choose a file name inside it")
    if not path.exists():
        return 0o644
    mode = path.stat().st_mode & 0o777
    if not mode & 0o222:
        raise PermissionError(
            errno.EACCES,
            f"refusing to replace {path}: the file is read-only (mode {mode:o}), so someone meant to keep it; "
            "save under another name, or make it writable (chmod u+w) first",
        )
    return mode


def atomic_write(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to a temp file in the same folder, fsync, then os.replace it over ``path``.

    The same folder keeps the rename on one filesystem (os.replace is atomic only there).
    An existing file's permissions are kept; a read-only target (no write bit) is refused,
    not replaced: the user made it read-only. A folder as target, an unwritable folder and
    a name too long for the temp file give errors that name ``path``, never the temp file.
    Stale temps of earlier killed saves to ``path`` are removed first (remove_stale_temps).
    """
    path = check_target_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = _check_target(path)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    except (IsADirectoryError, PermissionError) as err:
        if err.filename is None:  # our own message above
            raise
        raise PermissionError(
            errno.EACCES, f"cannot save {path}: the folder {path.parent} is not writable ({err.strerror})"
        ) from err
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError):  # e.g. a full disk: name the target, not the hidden temp file
            message = f"cannot save {path}: {err.strerror or err}"
            raise (type(err)(err.errno, message) if err.errno else type(err)(message)) from err
        raise
    return path
