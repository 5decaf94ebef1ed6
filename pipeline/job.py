"""The job wrapper every stage runs in; nothing here imports torch.

A job of a stage without models (``units``) then starts in the time numpy, pandas and Zarr
take to import, instead of also paying for torch and every model adapter.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _use_threads(threads: int) -> None:
    """Use exactly the cores Snakemake granted this job, in torch only where a stage loaded it."""
    threads = max(1, int(threads))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        from pipeline.device import set_threads

        set_threads(threads)


def _in_workflow_job() -> bool:
    """Whether this process is a job of Snakemake's script directive (it injects ``snakemake``)."""
    return hasattr(sys.modules.get("__main__"), "snakemake")


def run_stage(function: Callable[..., Any], *, log_path: str | Path | None, threads: int, **kwargs: Any) -> Any:
    """Run one stage function as a workflow job: log to ``log_path`` and stderr, use ``threads``.

    A failure is logged as one line naming the error before it propagates, so the job's log
    file says why it failed even where the scheduler's output is lost. The logging setup is
    undone afterwards, so calling this in-process (tests, notebooks) leaves no trace.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    root = logging.getLogger()
    previous_handlers, previous_level = root.handlers[:], root.level
    formatter = logging.Formatter(LOG_FORMAT)
    for handler in handlers:
        handler.setFormatter(formatter)
    root.handlers[:] = handlers
    root.setLevel(logging.INFO)
    _use_threads(threads)
    started = time.perf_counter()
    try:
        result = function(**kwargs)
        log.info("%s finished in %.1f s", function.__name__, time.perf_counter() - started)
        return result
    except Exception as error:
        logging.getLogger(function.__module__).error("%s: %s", type(error).__name__, error)
        raise
    except KeyboardInterrupt:
        if not _in_workflow_job():
            raise
        # Ctrl-C reaches every job at once; each says so in one line, not a torch traceback.
        logging.getLogger(function.__module__).error("%s interrupted", function.__name__)
        raise SystemExit(130) from None
    finally:
        root.handlers[:] = previous_handlers
        root.setLevel(previous_level)
        for handler in handlers:
            handler.close()
