"""One live run per experiment or results folder: a lock taken before BasicSR creates (or archives) the folder.

BasicSR's ``make_exp_dirs`` renames an existing ``experiments/<name>`` to ``<name>_archived_<time>`` while a run that
still writes there keeps its old paths, so two runs of one ``name`` overwrite each other's checkpoints. The launchers
(``config.parse_options``, rank 0) therefore take ``experiments/.<name>.lock`` (``results/.<name>.lock`` for tests)
first: an exclusive ``flock`` held for the life of the process, which the kernel releases when the process dies,
even by SIGKILL. The file records the holder's pid, host, start time and command, quoted when a second run is
refused. A lock left by a dead process is simply taken over (``--auto_resume`` continues that run); a live holder
is never overridden.

Example:
    >>> lock = acquire('/tmp/lock_doctest/experiments/demo')
    >>> acquire('/tmp/lock_doctest/experiments/demo') == lock  # the same process may ask again
    True
    >>> release('/tmp/lock_doctest/experiments/demo')
"""
import fcntl
import json
import logging
import os
import socket
import sys
import time
from os import path as osp

_HELD: dict[str, int] = {}  # lock file -> open descriptor holding the flock (until exit or release)


def lock_file(folder: str | os.PathLike) -> str:
    """The lock of ``folder``: a hidden sibling ``.<name>.lock`` (it survives BasicSR's archiving rename)."""
    folder = osp.abspath(folder)
    return osp.join(osp.dirname(folder), f'.{osp.basename(folder)}.lock')


def _holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        return json.loads(os.read(fd, 1 << 16).decode() or '{}')
    except ValueError:
        return {}


def acquire(folder: str | os.PathLike) -> str:
    """Lock ``folder`` for this process; returns the lock file.

    Raises:
        RuntimeError: another live process holds the lock; the message names its pid, host, start time and command.
    """
    path = lock_file(folder)
    if path in _HELD:
        return path
    os.makedirs(osp.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise RuntimeError(
            f"{folder}: in use by another run (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started "
            f"{holder.get('start', '?')}: {holder.get('cmd', '?')}); lock {path}. Wait for it to end or choose "
            "another name (a dead run's lock is taken over automatically, e.g. by --auto_resume)") from None
    previous = _holder(fd)
    if previous:
        logging.getLogger('basicsr').info(f"{folder}: taking over the lock of ended run pid {previous.get('pid')} "
                                          f"on {previous.get('host')} (started {previous.get('start')})")
    record = {'pid': os.getpid(), 'host': socket.gethostname(), 'start': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
              'cmd': ' '.join(sys.argv)}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    _HELD[path] = fd
    return path


def release(folder: str | os.PathLike) -> None:
    """Give up the lock of ``folder`` held by this process (a no-op when not held); the file stays."""
    fd = _HELD.pop(lock_file(folder), None)
    if fd is not None:
        os.close(fd)  # closing the last descriptor releases the flock
