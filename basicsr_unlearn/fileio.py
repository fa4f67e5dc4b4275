"""Atomic writes: a killed process never leaves a truncated checkpoint, LMDB or report behind.

A write goes to a hidden sibling ``.<name>.tmp<pid>`` renamed onto the target at the end. A process killed by
SIGKILL cannot remove its temporary; the next write to the same target removes those of dead processes.
"""
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` (file or folder) to write; rename it onto ``path`` on success.

    On an exception the temporary is removed and ``path`` is left as it was; temporaries of ``path`` left by dead
    processes are removed first (:func:`remove_stale_temporaries`).

    Example:
        >>> with atomic_path('/tmp/atomic_doctest/report.txt') as tmp:
        ...     _ = tmp.write_text('done')
        >>> Path('/tmp/atomic_doctest/report.txt').read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    try:
        fault_point(tmp)
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the ``.<name>.tmp<pid>`` siblings of ``path`` whose writer process is dead; returns them.

    Only this host's process table is consulted: a temporary whose pid is alive (or reused) is kept.
    """
    path = Path(path)
    pattern = re.compile(rf'\.{re.escape(path.name)}\.tmp(\d+)')
    removed = []
    for entry in path.parent.glob(f'.{path.name}.tmp*'):
        found = pattern.fullmatch(entry.name)
        if found and int(found.group(1)) != os.getpid() and not _alive(int(found.group(1))):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def fault_point(tmp: Path) -> None:
    """Test hook for fault tests: pause before writing ``tmp`` when it matches ``BASICSR_UNLEARN_HOLD_BEFORE_WRITE``.

    With the env var set to a glob (e.g. ``*/training_states/.20.state.tmp*``), the writer touches
    ``BASICSR_UNLEARN_HOLD_MARKER`` ("about to write") and waits until that file is removed, so a test can kill
    it at a known point instead of sleeping. Unset (always, outside tests): returns at once.
    """
    pattern, marker = os.environ.get('BASICSR_UNLEARN_HOLD_BEFORE_WRITE'), os.environ.get('BASICSR_UNLEARN_HOLD_MARKER')
    if not pattern or not marker or not tmp.match(pattern):
        return
    Path(marker).write_text(str(os.getpid()))
    while os.path.exists(marker):
        time.sleep(0.01)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: object) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (numpy scalars must be converted by the caller)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + '\n')
