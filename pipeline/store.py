"""All artifact IO: Zarr stores, Parquet tables and JSON, each written atomically and checked.

Every writer writes to a temporary sibling and renames it into place, so a killed job
never leaves a file that looks complete. Every Zarr store carries a manifest (each file's
size and sha256) and every Parquet file its row count and per-page checksums, and every
reader checks them: Zarr reads a missing chunk as its fill value without complaint, so
without the manifest a lost file would become zeros in every later stage. A reader that
finds an artifact damaged removes it before it fails, so that the next run rebuilds it
instead of failing on it again; :func:`damaged_artifacts` does the cheap part of the same
check over a whole results folder before a run plans its jobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

# Byte shuffle suits one-byte images and masks (smaller and faster than bit shuffle there);
# bit shuffle suits float activations.
ZSTD_BYTES = zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")
ZSTD_WORDS = zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")
TARGET_CHUNK_BYTES = 4 << 20
# The manifest inside each Zarr store, and the Parquet metadata key holding the row count.
MANIFEST = "manifest.json"
ROWS_KEY = "pipeline.rows"
# Files that others put into a finished store (Snakemake's marker of a directory output).
FOREIGN_FILES = {MANIFEST, ".snakemake_timestamp"}


class ArtifactError(RuntimeError):
    """An artifact is damaged: a file its manifest lists is missing, truncated or altered."""


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
        _write_manifest(Path(tmp))


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _store_files(root: Path) -> list[str]:
    """The store's own files, relative to its root, in a fixed order."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() not in FOREIGN_FILES
    )


def _write_manifest(root: Path) -> None:
    files = {
        name: {"size": (root / name).stat().st_size, "sha256": _file_digest(root / name)} for name in _store_files(root)
    }
    (root / MANIFEST).write_text(json.dumps({"format": 1, "files": files}, indent=1, sort_keys=True) + "\n")


def zarr_damage(path: str | Path, names: Iterable[str] | None = None, checksums: bool = True) -> str | None:
    """What is wrong with a Zarr store against its manifest, or None when nothing is.

    Checks the files of the named arrays (all with ``names=None``) and the group's metadata:
    each must exist with its recorded size and, with ``checksums``, its recorded sha256.
    """
    root = Path(path)
    manifest_path = root / MANIFEST
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except FileNotFoundError:
        return f"its {MANIFEST} is missing"
    except (ValueError, KeyError, TypeError):
        return f"its {MANIFEST} is unreadable"
    if names is not None:
        prefixes = tuple(f"{name}/" for name in names)
        files = {name: entry for name, entry in files.items() if "/" not in name or name.startswith(prefixes)}
    for name, entry in files.items():
        file = root / name
        if not file.is_file():
            return f"{name} is missing"
        size = file.stat().st_size
        if size != entry["size"]:
            return f"{name} has {size} bytes, its manifest says {entry['size']}"
        if checksums and _file_digest(file) != entry["sha256"]:
            return f"{name} does not match its checksum"
    return None


def _manifest_arrays(root: Path) -> list[str]:
    files = json.loads((root / MANIFEST).read_text())["files"]
    return sorted(
        name.removesuffix("/zarr.json") for name in files if name.count("/") == 1 and name.endswith("/zarr.json")
    )


def _discard(path: Path, problem: str) -> ArtifactError:
    """Remove a damaged artifact, so the next run rebuilds it, and say so in one line."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    return ArtifactError(f"{path}: damaged ({problem}); removed it, so the next run rebuilds it")


def read_zarr(path: str | Path, names: list[str] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read all (or the named) arrays of a Zarr group, plus its attributes."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: Zarr store not found")
    problem = zarr_damage(path, names)
    if problem:
        raise _discard(path, problem)
    try:
        group = zarr.open_group(path, mode="r")
        # The manifest names the arrays; listing the group would warn about every file
        # that is not Zarr's own (the manifest, Snakemake's timestamp).
        keys = names if names is not None else _manifest_arrays(path)
        return {k: np.asarray(group[k][...]) for k in keys}, dict(group.attrs)
    except KeyError as error:
        raise KeyError(f"{path}: no array {error}") from None
    except Exception as error:  # a decoder's error names no file; this one does
        raise _discard(path, f"{type(error).__name__}: {error}") from None


def write_parquet(path: str | Path, frame: pd.DataFrame | pa.Table, metadata: Mapping[str, str] | None = None) -> None:
    """Write exactly one Parquet file, atomically, with deterministic bytes for equal input.

    Each page carries a CRC and the metadata the row count, which :func:`read_parquet` checks.
    """
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    extra = {key: str(value) for key, value in (metadata or {}).items()}
    extra[ROWS_KEY] = str(table.num_rows)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_page_checksum=True)


def parquet_damage(path: str | Path) -> str | None:
    """What is wrong with a Parquet file's footer or row count, or None; reads no data pages."""
    try:
        metadata = pq.read_metadata(path)
    except (OSError, pa.ArrowException) as error:
        return str(error).splitlines()[0]
    recorded = (metadata.metadata or {}).get(ROWS_KEY.encode())
    if recorded is None:
        return f"its row count ({ROWS_KEY}) is not recorded"
    if int(recorded) != metadata.num_rows:
        return f"it has {metadata.num_rows} rows, its metadata says {int(recorded)}"
    return None


def _read_checked_parquet(path: Path, columns: list[str] | None) -> pa.Table:
    if not path.exists():
        raise FileNotFoundError(f"{path}: Parquet table not found")
    problem = parquet_damage(path)
    if problem is None:
        try:
            return pq.read_table(path, columns=columns, page_checksum_verification=True)
        except (OSError, pa.ArrowException) as error:
            problem = str(error).splitlines()[0]
    raise _discard(path, problem)


def read_parquet(path: str | Path | list[str | Path], columns: list[str] | None = None) -> pd.DataFrame:
    """Read one Parquet file, or several (e.g. per-chunk tables) as one frame, checking each."""
    paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
    tables = [_read_checked_parquet(p, columns) for p in paths]
    if len(tables) == 1:
        return tables[0].to_pandas()
    # Per-file metadata (the row count) differs; the first file's stands for the frame.
    return pa.concat_tables(tables, promote_options="default").to_pandas()


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


def damaged_artifacts(root: str | Path) -> list[tuple[Path, str]]:
    """Every Zarr store and Parquet file under ``root`` whose sizes or footer are wrong.

    The cheap half of the readers' checks (no checksums, no data pages), quick enough to run
    over a whole results folder before each run: it finds deleted and truncated files.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    damaged = []
    for path in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue  # temporaries of writes in flight, Snakemake's markers
        if path.suffix == ".zarr" and path.is_dir():
            problem = zarr_damage(path, checksums=False)
        elif path.suffix == ".parquet" and path.is_file():
            problem = parquet_damage(path)
        else:
            continue
        if problem:
            damaged.append((path, problem))
    return damaged


def discard_damaged(root: str | Path, made_from: Callable[[list[str]], list[str]] | None = None) -> list[str]:
    """Remove every damaged artifact under ``root``, and what was made from it; one line for each.

    ``made_from`` maps artifact paths to the paths of everything made from them (see
    :mod:`pipeline.provenance`): a missing intermediate artifact is rebuilt only when what
    was made from it is missing too.
    """
    lines = []
    for path, problem in damaged_artifacts(root):
        later = [Path(p) for p in (made_from([str(path)]) if made_from else []) if Path(p).exists()]
        for artifact in later:
            if artifact.is_dir() and not artifact.is_symlink():
                shutil.rmtree(artifact, ignore_errors=True)
            else:
                artifact.unlink(missing_ok=True)
        line = str(_discard(path, problem))
        if later:
            line = line.replace(
                "removed it, so the next run rebuilds it",
                f"removed it and the {len(later)} artifacts made from it, so the next run rebuilds them",
            )
        lines.append(line)
    return lines


def discard_temporaries(root: str | Path) -> int:
    """Remove the temporary siblings that writes killed mid-way left under ``root``; how many.

    Only safe while no other run writes there: the caller checks the folder's lock first.
    """
    root = Path(root)
    if not root.is_dir():
        return 0
    leftovers = [p for p in root.rglob(".*.tmp-*") if p.name.startswith(".")]
    for path in leftovers:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return len(leftovers)
