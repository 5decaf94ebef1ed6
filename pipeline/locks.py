"""Snakemake's lock on a working folder, and clearing it when the run that took it is gone.

Snakemake locks the folder for the length of a run and leaves the lock behind when the run
is killed; the next run then stops until someone runs ``snakemake --unlock``. The lock does
not say who took it, so each run records its host and process id next to it
(:func:`record_owner`), and the next run clears the lock itself only when that process, on
this host, no longer exists (:func:`clear_stale_lock`). A lock taken on another host (a
shared file system), by a live run or without a record is left alone, with one line saying
what to do; Snakemake then stops a run that needs the lock, while a dry run goes ahead.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

OWNER_FILE = "run-owner.json"


def _lock_files(state: Path) -> list[Path]:
    locks = state / "locks"
    return sorted(locks.glob("*.lock")) if locks.is_dir() else []


def record_owner(state: str | Path, pid: int | None = None) -> None:
    """Note which process holds the lock Snakemake just took in ``state`` (``.snakemake``)."""
    state = Path(state)
    state.mkdir(parents=True, exist_ok=True)
    owner = {"host": socket.gethostname(), "pid": pid or os.getpid()}
    (state / OWNER_FILE).write_text(json.dumps(owner) + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A reused id that is no Snakemake does not hold the lock.
    cmdline = Path(f"/proc/{pid}/cmdline")
    return not cmdline.exists() or b"snakemake" in cmdline.read_bytes()


def clear_stale_lock(state: str | Path) -> str | None:
    """Remove the lock in ``state`` if its owner has ended; one line on what was done or is to do."""
    state = Path(state)
    locks = _lock_files(state)
    if not locks:
        return None
    try:
        owner = json.loads((state / OWNER_FILE).read_text())
        host, pid = owner["host"], int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return (
            "This folder is locked by a run that left no record; if no other run is active here, "
            "run `snakemake --unlock` once, then this command again."
        )
    if host != socket.gethostname():
        return (
            f"This folder is locked by a run on host {host} (pid {pid}); if it has ended, "
            "run `snakemake --unlock` once, then this command again."
        )
    if _alive(pid):
        return f"Another run (pid {pid}) is working in this folder; wait for it to end, or stop it."
    for lock in locks:
        lock.unlink(missing_ok=True)
    return f"Removed the lock left by an earlier run (pid {pid}) that ended without releasing it."


def is_locked(state: str | Path) -> bool:
    """Whether a run holds (or a dead one left) Snakemake's lock in ``state``."""
    return bool(_lock_files(Path(state)))
