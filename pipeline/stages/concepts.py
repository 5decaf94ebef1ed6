"""Stage 7: which units are selective for which image measure, tested against null controls."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.measures import tested_measures
from pipeline.stats import unit_concepts, unit_summary
from pipeline.store import read_parquet, write_parquet

log = logging.getLogger(__name__)


def find_concepts(
    changes_path: str | Path,
    nulls_path: str | Path,
    concepts_path: str | Path,
    summary_path: str | Path,
    *,
    measures: str | list[str],
    n_boot: int,
    q: float,
    min_effect: float,
    seed: int,
) -> None:
    """Write ``concepts/unit_concepts.parquet`` and ``concepts/unit_summary.parquet``."""
    changes = read_parquet(changes_path)
    nulls = read_parquet(nulls_path)
    if measures == "all":
        selected = tested_measures(changes.columns)
    else:
        available = [name for name in changes.columns if "." in name]
        unknown = [m for m in measures if m not in available]
        if unknown:
            raise ValueError(
                f"config key 'concepts.measures': unknown measure {unknown[0]!r}; known: {', '.join(available)}"
            )
        selected = list(measures)
    concepts = unit_concepts(changes, nulls, selected, n_boot=n_boot, seed=seed, q=q, min_effect=min_effect)
    summary = unit_summary(concepts, changes)
    log.info(
        "concepts: %d units x %d measures tested, %d selective pairs",
        changes["unit"].nunique(),
        len(selected),
        int(concepts["selective"].sum()),
    )
    write_parquet(concepts_path, concepts)
    write_parquet(summary_path, summary)
