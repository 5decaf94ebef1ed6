"""What planning a run may reuse instead of recomputing: weight hashes and model descriptions.

Snakemake parses the workflow once per plan and once more in every cluster job, and every
model stage names the sha256 of its weights, so without a cache a multi-gigabyte generator
pickle would be hashed again each time. Entries live in memory for the process and as small
files under :func:`cache_dir`, each written atomically, so concurrent jobs may share them.

``PIPELINE_TRACE=<file>`` appends one line per costly event (a file hashed, a model loaded)
to that file: how a test or a user checks that a plan hashes each file once and loads no
model.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pipeline.store import atomic_path

CACHE_DIR_VARIABLE = "PIPELINE_CACHE_DIR"
TRACE_VARIABLE = "PIPELINE_TRACE"
# Beside Snakemake's own state in the working directory, so `rm -rf .snakemake` clears it too.
DEFAULT_CACHE_DIR = ".snakemake/pipeline-cache"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_VARIABLE) or DEFAULT_CACHE_DIR)


def trace(event: str, detail: str) -> None:
    """Record a costly event where ``PIPELINE_TRACE`` names a file; nothing otherwise."""
    path = os.environ.get(TRACE_VARIABLE)
    if path:
        with open(path, "a") as handle:
            handle.write(f"{event} {detail}\n")


def entry_path(section: str, key: Any) -> Path:
    """The file of the entry ``key`` (any JSON-able value) in ``section``."""
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_dir() / section / f"{name}.json"


def read_entry(section: str, key: Any) -> Any | None:
    """The value stored under ``key``, or None when there is none or it cannot be read."""
    try:
        return json.loads(entry_path(section, key).read_text())["value"]
    except (OSError, ValueError, KeyError):
        return None


def write_entry(section: str, key: Any, value: Any) -> None:
    """Store ``value``; a cache that cannot be written (read-only disk) only costs recomputation."""
    try:
        with atomic_path(entry_path(section, key)) as tmp:
            tmp.write_text(json.dumps({"key": key, "value": value}, sort_keys=True))
    except OSError:
        pass
