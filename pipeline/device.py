"""Device choice, precision, thread settings and out-of-memory backoff for batched model calls."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator

import torch

from pipeline.gpu_slots import claim_gpu_slot

log = logging.getLogger(__name__)

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = ("fp32", *_AUTOCAST_DTYPES)


def resolve_device(name: str = "auto") -> torch.device:
    """Turn the config's ``device`` (auto | cpu | cuda | cuda:N) into a torch device.

    ``auto`` takes CUDA when present. Snakemake assigns no GPU to a job, so for ``auto``
    and ``cuda`` the job first claims a free GPU slot (see :mod:`pipeline.gpu_slots`), which
    sets ``CUDA_VISIBLE_DEVICES`` before CUDA starts; ``cuda`` then means that device.
    """
    if not isinstance(name, str) or not _DEVICE_PATTERN.match(name):
        raise ValueError(f"device: expected auto, cpu, cuda or cuda:N, got {name!r}")
    if name in ("auto", "cuda"):
        claim_gpu_slot()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device: {name!r} requested but CUDA is not available")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device: {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context that runs model calls at ``precision`` (fp32 | bf16 | fp16) on ``device``.

    fp32 runs as the models are; bf16 and fp16 are torch autocast, which keeps reductions
    and other sensitive operations in fp32. fp16 exists only on CUDA; bf16 also on the CPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision: fp16 needs a CUDA device, the job runs on {device}; use bf16 or fp32")
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[precision])


def set_threads(threads: int) -> None:
    """Use exactly the cores Snakemake granted this job."""
    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def batch_slices(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def run_with_backoff(
    step: Callable[[slice], None],
    n: int,
    batch_size: int,
    min_batch_size: int = 1,
) -> int:
    """Call ``step`` on consecutive slices of ``range(n)``; halve the batch on CUDA OOM.

    Returns the batch size that finally worked, so callers can keep using it.
    """
    start = 0
    while start < n:
        stop = min(start + batch_size, n)
        try:
            step(slice(start, stop))
        except (torch.OutOfMemoryError, RuntimeError) as error:
            if not is_oom(error) or batch_size <= min_batch_size:
                raise
            batch_size = max(min_batch_size, batch_size // 2)
            log.warning("CUDA out of memory at batch %d; retrying with batch size %d", stop - start, batch_size)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        start = stop
    return batch_size
