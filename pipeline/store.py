"""All artifact IO: Zarr stores, Parquet tables and JSON, each written atomically.

Every writer writes to a temporary sibling and renames it into place, so a killed job
never leaves a file that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import zarr

# Byte shuffle suits one-byte images and masks (smaller and faster than bit shuffle there);
# bit shuffle suits float activations.
ZSTD_BYTES = zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")
ZSTD_WORDS = zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")
TARGET_CHUNK_BYTES = 4 << 20


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary sibling of ``path``; on success rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def _chunks_for(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunk along the first axis so that a chunk holds about TARGET_CHUNK_BYTES."""
    if not shape:
        return ()
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * itemsize or 1
    rows = max(1, min(shape[0], TARGET_CHUNK_BYTES // row_bytes))
    return (rows, *shape[1:])


def write_zarr(path: str | Path, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any] | None = None) -> None:
    """Write named arrays (and JSON-able attributes) as one Zarr v3 group, atomically."""
    with atomic_path(path) as tmp:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        for name, value in arrays.items():
            value = np.ascontiguousarray(value)
            if value.dtype.kind in "OUS":
                value = value.astype(str).astype(object)
                array = group.create_array(name, shape=value.shape, dtype=str)
            else:
                array = group.create_array(
                    name,
                    shape=value.shape,
                    dtype=value.dtype,
                    chunks=_chunks_for(value.shape, value.dtype.itemsize) or None,
                    compressors=ZSTD_BYTES if value.dtype.itemsize == 1 else ZSTD_WORDS,
                )
            array[...] = value
        group.attrs.update(dict(attrs or {}))


def read_zarr(path: str | Path, names: list[str] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read all (or the named) arrays of a Zarr group, plus its attributes."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: Zarr store not found")
    group = zarr.open_group(path, mode="r")
    keys = names if names is not None else sorted(group.array_keys())
    return {k: np.asarray(group[k][...]) for k in keys}, dict(group.attrs)


def write_parquet(path: str | Path, frame: pd.DataFrame | pa.Table, metadata: Mapping[str, str] | None = None) -> None:
    """Write exactly one Parquet file, atomically, with deterministic bytes for equal input."""
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    if metadata:
        extra = {key: str(value) for key, value in metadata.items()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_parquet(path: str | Path | list[str | Path]) -> pd.DataFrame:
    """Read one Parquet file, or several (e.g. per-chunk tables) as one frame."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    for p in paths:
        if not Path(p).exists():
            raise FileNotFoundError(f"{p}: Parquet table not found")
    return ds.dataset([str(p) for p in paths], format="parquet").to_table().to_pandas()


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: JSON file not found")
    return json.loads(Path(path).read_text())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
