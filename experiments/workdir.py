"""A run's workdir: its marker (``run.json``), its lock, atomic writes and storage errors.

A workdir of ours holds ``run.json`` (the run's dataset, fusion and config),
written before anything else. A fresh run goes only into a new or empty
directory; ``--resume`` only into one that holds a run, with the same
settings. One run at a time holds ``run.lock`` (``fcntl.flock``, with the
holder's pid and host written in it); the kernel drops the lock when its
holder dies, so a lock left by a killed run is taken over (and said so).
"""

import errno
import fcntl
import json
import os
import re
import socket
import tempfile
import time
from typing import Any, Mapping, Optional

MARKER = "run.json"
LOCK = "run.lock"
CHECKPOINTS = "checkpoints"
# Names a directory may hold and still count as empty (what a run that died at once leaves).
_EMPTY_OK = (LOCK,)
# Marker keys that must agree for a resume (besides the config).
_RUN_KEYS = ("dataset", "fusion")


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class WorkdirError(Exception):
    """The workdir cannot be used; the message is one line saying what to do."""


def atomic_write(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file in the same directory and a rename.

    A crash or a full disk leaves either the old file or the new one, never a
    truncated or empty one.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # As open() would create it (mkstemp makes it private).
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --- storage faults as one line ---------------------------------------------------------------

_HINTS = {
    errno.ENOSPC: ("no space left on device", "free space there, then continue with --resume"),
    errno.EDQUOT: ("disk quota exceeded", "free space there, then continue with --resume"),
    errno.EROFS: ("read-only file system", "choose a --workdir on a writable file system"),
    errno.EACCES: ("permission denied", "make it writable for this user or choose another --workdir"),
    errno.EPERM: ("permission denied", "make it writable for this user or choose another --workdir"),
    errno.ENOTDIR: ("not a directory", "a path above it is a file: choose another --workdir"),
}
# TensorStore (Orbax's array store) reports OS errors inside its ValueError's text.
_TEXT_PATTERNS = (
    (re.compile(r"No space left on device|RESOURCE_EXHAUSTED", re.I), errno.ENOSPC),
    (re.compile(r"Disk quota exceeded", re.I), errno.EDQUOT),
    (re.compile(r"Read-only file system", re.I), errno.EROFS),
    (re.compile(r"Permission denied|PERMISSION_DENIED", re.I), errno.EACCES),
)
_QUOTED_PATH = re.compile(r'(?:local file|Failed writing:|file) "([^"]+)"')


def storage_fault(error: BaseException, workdir: Optional[str] = None) -> Optional[str]:
    """One line for a storage fault anywhere in ``error``'s chain (what, which path, what to do), or None."""
    seen = set()
    current = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _HINTS:
            what, hint = _HINTS[current.errno]
            path = current.filename or workdir or "the workdir"
            return f"{what}: {path}; {hint}."
        text = str(current)
        for pattern, code in _TEXT_PATTERNS:
            if pattern.search(text):
                what, hint = _HINTS[code]
                match = _QUOTED_PATH.search(text)
                path = match.group(1) if match else (workdir or "the workdir")
                path = path.split(".orbax-checkpoint-tmp")[0]  # The checkpoint being written, not its parts.
                return f"{what}: {path}; {hint}."
        current = current.__cause__ or current.__context__
    return None


# --- the lock ---------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: Mapping) -> str:
    since = holder.get("since")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if isinstance(since, (int, float)) else ""
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}{when}"


class WorkdirLock:
    """An exclusive lock on a workdir: ``flock`` on ``run.lock``, which names its holder.

    ``acquire`` fails at once (no waiting) when another process holds it.
    """

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK)
        self.fd: Optional[int] = None
        self.recovered: Optional[str] = None  # The stale holder taken over, described.
        self.marker_missing = False  # Set by open_workdir: a resumed run without run.json yet.

    def _read(self, fd) -> dict:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            text = os.read(fd, 4096).decode("utf-8", "replace").strip()
            return json.loads(text) if text else {}
        except (OSError, ValueError):
            return {"pid": "?", "host": "?"}

    def acquire(self) -> "WorkdirLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WorkdirError(
                    f"--workdir {self.workdir} is in use by another run ({_describe(self._read(fd))}); "
                    "wait for it to end or stop it, or choose another --workdir."
                ) from None
            except OSError as error:  # A file system without flock (some network mounts): trust the pid.
                if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                holder = self._read(fd)
                if (
                    holder.get("host") == socket.gethostname()
                    and isinstance(holder.get("pid"), int)
                    and holder["pid"] != os.getpid()
                    and _pid_alive(holder["pid"])
                ):
                    raise WorkdirError(
                        f"--workdir {self.workdir} is in use by another run ({_describe(holder)}); "
                        "wait for it to end or stop it, or choose another --workdir."
                    ) from None
            previous = self._read(fd)
            if previous:
                self.recovered = _describe(previous)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(
                fd,
                (json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}) + "\n").encode(),
            )
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)  # A clean exit leaves no holder to report as stale.
        except OSError:
            pass
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


# --- opening a workdir ------------------------------------------------------------------------


def read_marker(workdir: str) -> dict:
    path = os.path.join(workdir, MARKER)
    try:
        with open(path) as f:
            marker = json.load(f)
        if not isinstance(marker, dict) or not isinstance(marker.get("config"), dict):
            raise ValueError("no config in it")
        return marker
    except (ValueError, UnicodeDecodeError) as error:
        raise WorkdirError(f"{path} is damaged ({error}); restore it, or choose another --workdir.") from None


def write_marker(workdir: str, marker: Mapping[str, Any]) -> None:
    atomic_write(os.path.join(workdir, MARKER), json.dumps(dict(marker), indent=2) + "\n")


def _has_run(workdir: str) -> bool:
    """A run of ours: the marker, or (written before the marker existed) a checkpoint directory."""
    return os.path.exists(os.path.join(workdir, MARKER)) or os.path.isdir(os.path.join(workdir, CHECKPOINTS))


def _differences(stored: Mapping, current: Mapping, ignore=()) -> list:
    return [
        f"{k}: {stored.get(k)!r} -> {current.get(k)!r}"
        for k in sorted(set(stored) | set(current))
        if k not in ignore and stored.get(k) != current.get(k)
    ]


def probe_writable(directory: str) -> None:
    """Writes, syncs and removes a small file in ``directory``: storage faults show before training."""
    fd, path = tempfile.mkstemp(dir=directory, prefix=".write-probe-")
    try:
        os.write(fd, b"\0" * 65536)
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(path)


def check_workdir(workdir: str, *, resume: bool) -> None:
    """Refuses, reading only, a workdir that this run may not use (see :func:`open_workdir`)."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir {workdir} is a file, not a directory; choose another --workdir.")
    if resume and not os.path.isdir(workdir):
        raise WorkdirError(
            f"--resume: --workdir {workdir} does not exist; check the path, or drop --resume to start a new run there."
        )
    if not os.path.isdir(workdir):
        return
    names = sorted(n for n in os.listdir(workdir) if n not in _EMPTY_OK)
    if not _has_run(workdir):
        if resume:
            raise WorkdirError(
                f"--resume: --workdir {workdir} holds no run (no {MARKER}); check the path, "
                "or drop --resume to start a new run in a new or empty directory."
            )
        if names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise WorkdirError(
                f"--workdir {workdir} is not empty and holds no run of ours ({shown}); "
                "nothing was touched: choose a new or empty --workdir."
            )
    elif not resume:
        raise WorkdirError(f"--workdir {workdir} already holds a run; pass --resume or choose another.")


def open_workdir(workdir: str, *, resume: bool, marker: Mapping[str, Any], layout_keys=(), say=print) -> WorkdirLock:
    """Checks, locks and marks ``workdir`` for a run; returns the held lock.

    Nothing is written into a directory that is refused. ``marker`` is what
    ``run.json`` holds: ``dataset``, ``fusion`` and ``config`` (JSON values).
    Once locked, the marker is written (a fresh run) or compared (a resume),
    and the workdir and its checkpoint directory are probed for writing.

    Raises:
      WorkdirError: the path is a file; a fresh run into a non-empty directory
        (holding a run, or files not ours); ``--resume`` where there is no run,
        or a run with other settings; the lock is held by another run.
      OSError: a storage fault (read-only, no space, permission denied).
    """
    check_workdir(workdir, resume=resume)
    os.makedirs(workdir, exist_ok=True)
    lock = WorkdirLock(workdir).acquire()
    try:
        if lock.recovered:
            say(
                f"note: took over the lock of --workdir {workdir} left by {lock.recovered}, which is no longer running."
            )
        marker_path = os.path.join(workdir, MARKER)
        if resume and os.path.exists(marker_path):
            stored = read_marker(workdir)
            differing = _differences({k: stored.get(k) for k in _RUN_KEYS}, {k: marker.get(k) for k in _RUN_KEYS})
            differing += _differences(stored["config"], marker["config"], ignore=layout_keys)
            if differing:
                raise WorkdirError(
                    f"the run in {workdir} was started with other settings ({', '.join(differing)}); "
                    "resume it with its own settings, or use another --workdir."
                )
        elif not resume and _has_run(workdir):  # Another run marked it between the check and the lock.
            raise WorkdirError(f"--workdir {workdir} already holds a run; pass --resume or choose another.")
        probe_writable(workdir)  # Before the marker: a full disk leaves the directory as good as empty.
        if not resume:
            write_marker(workdir, marker)
        elif not os.path.exists(marker_path):  # Checkpoints from before run.json: marked once one restores.
            lock.marker_missing = True
        checkpoints = os.path.join(workdir, CHECKPOINTS)
        os.makedirs(checkpoints, exist_ok=True)
        probe_writable(checkpoints)
    except BaseException:
        lock.release()
        raise
    return lock
