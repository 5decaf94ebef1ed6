"""The one registry of model adapters, keyed by the spec's ``kind``.

A spec is a plain dict from the config, e.g. ``{kind: builtin, name: shapes-classifier}``.
Adapters register a loader per kind; loading validates the spec and fails with one line
that names the offending key or file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline.models.cache import read_entry, trace, write_entry
from pipeline.models.protocols import Classifier, Generator

ClassifierLoader = Callable[[Mapping[str, Any]], Classifier]
GeneratorLoader = Callable[[Mapping[str, Any]], Generator]

WeightFiles = Callable[[Mapping[str, Any]], list[Path]]

_CLASSIFIERS: dict[str, ClassifierLoader] = {}
_GENERATORS: dict[str, GeneratorLoader] = {}
_WEIGHT_FILES: dict[tuple[str, str], WeightFiles] = {}
# (resolved path, size, mtime in ns) -> sha256, for this process; the disk cache serves others.
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


class ModelSpecError(ValueError):
    """A model spec names something that does not exist or cannot be loaded."""


def _no_files(spec: Mapping[str, Any]) -> list[Path]:
    return []


def register_classifier(
    kind: str, weight_files: WeightFiles = _no_files
) -> Callable[[ClassifierLoader], ClassifierLoader]:
    """Register a classifier loader; ``weight_files(spec)`` lists the files it reads."""
    return _register(_CLASSIFIERS, "classifier", kind, weight_files)


def register_generator(
    kind: str, weight_files: WeightFiles = _no_files
) -> Callable[[GeneratorLoader], GeneratorLoader]:
    """Register a generator loader; ``weight_files(spec)`` lists the files it reads."""
    return _register(_GENERATORS, "generator", kind, weight_files)


def _register(table: dict[str, Callable], role: str, kind: str, weight_files: WeightFiles) -> Callable:
    def decorate(loader: Callable) -> Callable:
        table[kind] = loader
        _WEIGHT_FILES[role, kind] = weight_files
        return loader

    return decorate


def load_classifier(spec: Mapping[str, Any]) -> Classifier:
    """Build the classifier that ``spec`` describes, in eval mode on the CPU."""
    return _load(_CLASSIFIERS, spec, "classifier")


def load_generator(spec: Mapping[str, Any]) -> Generator:
    """Build the generator that ``spec`` describes, in eval mode on the CPU."""
    return _load(_GENERATORS, spec, "generator")


def _load(table: Mapping[str, Callable], spec: Mapping[str, Any], role: str) -> Any:
    loader = _lookup(table, spec, role)
    trace("load", f"{role} {spec['kind']}")
    return loader(spec)


def classifier_kinds() -> list[str]:
    return sorted(_CLASSIFIERS)


def generator_kinds() -> list[str]:
    return sorted(_GENERATORS)


def _lookup(table: Mapping[str, Callable], spec: Mapping[str, Any], role: str) -> Callable:
    _ensure_adapters_imported()
    if not isinstance(spec, Mapping) or "kind" not in spec:
        raise ModelSpecError(f"{role}: a model spec needs a 'kind' key, got {spec!r}")
    kind = spec["kind"]
    if kind not in table:
        raise ModelSpecError(f"{role}.kind: unknown kind {kind!r}; known: {', '.join(sorted(table))}")
    return table[kind]


def _ensure_adapters_imported() -> None:
    # Adapters register themselves on import; importing here keeps `import pipeline.models`
    # free of side effects and heavy optional dependencies.
    from pipeline.models import adapters  # noqa: F401


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read once per (path, size, mtime) in this process and on this disk.

    A file rewritten in place gets a new mtime, so its old hash is never served for it.
    """
    resolved = Path(path).resolve()
    status = resolved.stat()
    key = (str(resolved), status.st_size, status.st_mtime_ns)
    if key not in _FILE_HASHES:
        stored = read_entry("sha256", key)
        if stored is None:
            stored = _hash_file(resolved)
            write_entry("sha256", key, stored)
        _FILE_HASHES[key] = stored
    return _FILE_HASHES[key]


def _hash_file(path: Path) -> str:
    trace("sha256", str(path))
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def spec_weights_sha256(spec: Mapping[str, Any], role: str) -> str:
    """The sha256 of every file a spec loads (``role``: classifier or generator).

    Snakemake rules pass it as a param, so replacing a weights file re-runs every stage
    downstream of that model. Builtin models resolve to the weights shipped in the package.
    """
    files = spec_weight_files(spec, role)
    return ",".join(file_sha256(f) if Path(f).is_file() else f"missing:{f}" for f in files)


def spec_weight_files(spec: Mapping[str, Any], role: str) -> list[Path]:
    """The files a spec loads (``role``: classifier or generator), for :func:`spec_weights_sha256`."""
    _lookup(_CLASSIFIERS if role == "classifier" else _GENERATORS, spec, role)
    return list(_WEIGHT_FILES[role, spec["kind"]](spec))
