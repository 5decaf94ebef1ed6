"""What Snakemake recorded about the outputs in a working folder: which inputs made each.

Removing a damaged intermediate artifact alone does not make Snakemake rebuild it: the
artifacts made from it still exist and look up to date, so nothing asks for it. Its
dependents have to go too. Snakemake keeps, for each output it made, a JSON record under
``.snakemake/metadata/`` (file name: the output path, urlsafe base64, split into folders of
``@``-prefixed parts when long) whose ``input`` lists the job's inputs, or null for a job with
more than a hundred; this reads those records.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from pathlib import Path


def recorded_inputs(metadata_dir: str | Path) -> dict[str, list[str] | None]:
    """Output path -> its job's input paths (None where Snakemake did not record them)."""
    root = Path(metadata_dir)
    if not root.is_dir():
        return {}
    records: dict[str, list[str] | None] = {}
    for file in root.rglob("*"):
        if not file.is_file():
            continue
        encoded = "".join(part.removeprefix("@") for part in file.relative_to(root).parts)
        try:
            output = base64.urlsafe_b64decode(encoded).decode()
            inputs = json.loads(file.read_text()).get("input")
        except (binascii.Error, UnicodeDecodeError, ValueError, OSError, AttributeError):
            continue
        records[output] = None if inputs is None else [str(path) for path in inputs]
    return records


def dependents(paths: Iterable[str], records: dict[str, list[str] | None]) -> list[str]:
    """Every recorded output made, directly or through others, from any of ``paths``.

    An output whose inputs were not recorded counts as made from everything.
    """
    found: set[str] = set()
    frontier = {str(path) for path in paths}
    while frontier:
        frontier = {
            output
            for output, inputs in records.items()
            if output not in found and (inputs is None or frontier.intersection(inputs))
        } - set(paths)
        found |= frontier
    return sorted(found)
