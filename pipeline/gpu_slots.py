"""One GPU per local job: a file-lock slot allocator over the machine's GPUs.

Snakemake's local executor bounds how many GPU jobs run at once (``--resources gpu=N``)
but never says which GPU a job should use, and it sets no ``CUDA_VISIBLE_DEVICES``, so
every job would land on ``cuda:0``. A stage therefore claims a slot before CUDA
initialises: it takes an exclusive ``flock`` on ``<lock_dir>/gpu<i>.lock`` for the first
free ``i`` and sets ``CUDA_VISIBLE_DEVICES=i``, so ``cuda`` inside the job means its own GPU.
The kernel drops the lock when the process ends, even on SIGKILL, so a killed job never
leaves a slot taken and nothing has to be cleaned up.

When ``CUDA_VISIBLE_DEVICES`` is already set (SLURM sets it for ``--gpus`` jobs; a user may
set it by hand) the claim does nothing. When every slot is taken, the claim waits for one,
which serialises GPU jobs instead of piling them onto one device.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

SLOTS_ENV = "PIPELINE_GPU_SLOTS"
LOCK_DIR_ENV = "PIPELINE_GPU_LOCK_DIR"

# The open lock file is the claim, so it is kept referenced for the life of the process.
_claim: tuple[int, IO[bytes]] | None = None


def count_gpus() -> int:
    """GPUs on this machine, found without initialising CUDA.

    ``PIPELINE_GPU_SLOTS`` overrides the count (e.g. to leave a GPU free for a desktop);
    otherwise ``nvidia-smi -L`` is asked, and a machine without it has no GPU slots.
    """
    override = os.environ.get(SLOTS_ENV)
    if override is not None:
        if not override.isdigit():
            raise ValueError(f"{SLOTS_ENV}: expected a non-negative integer, got {override!r}")
        return int(override)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return 0
    return sum(line.startswith("GPU ") for line in listing.splitlines())


def default_lock_dir() -> Path:
    """One lock directory per user and machine, shared by every job of every run.

    It is not below ``$TMPDIR``: Snakemake points each job's ``TMPDIR`` at its ``tmpdir``
    resource, which may differ between runs that share the GPUs.
    """
    return Path(os.environ.get(LOCK_DIR_ENV) or f"/tmp/pipeline-gpu-slots-{os.getuid()}")


def claim_gpu_slot(
    num_slots: int | None = None,
    lock_dir: str | Path | None = None,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
) -> int | None:
    """Pin this process to one free GPU for its lifetime; return the GPU index, or None.

    Returns None without claiming when ``CUDA_VISIBLE_DEVICES`` is already set or there is no
    GPU. Must run before anything initialises CUDA, because CUDA reads the variable once.
    Waits (polling every ``poll_s``) while all slots are taken; ``timeout_s`` bounds the wait.
    """
    global _claim
    if _claim is not None:
        return _claim[0]
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return None
    num_slots = count_gpus() if num_slots is None else num_slots
    if num_slots <= 0:
        return None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("claim_gpu_slot: CUDA is already initialised; claim the GPU slot before any CUDA call")

    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    waiting_logged = False
    while True:
        for slot in range(num_slots):
            handle = open(lock_dir / f"gpu{slot}.lock", "ab")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            _claim = (slot, handle)
            os.environ["CUDA_VISIBLE_DEVICES"] = str(slot)
            log.info("GPU slot %d of %d claimed (CUDA_VISIBLE_DEVICES=%d)", slot, num_slots, slot)
            return slot
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{lock_dir}: all {num_slots} GPU slots stayed taken for {timeout_s}s")
        if not waiting_logged:
            log.warning("all %d GPU slots in %s are taken; waiting for one", num_slots, lock_dir)
            waiting_logged = True
        time.sleep(poll_s)
