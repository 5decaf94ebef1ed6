"""The sampled latents and the classifier's activations on them, as the stages after extract read them.

Nothing here imports torch, so a stage without models starts without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.store import read_zarr


@dataclass(frozen=True)
class Samples:
    """The sampled latents and the classifier's activations on them: what the stages after
    extract read, by split (probe, test, train) and over the accepted samples only."""

    latents_path: str | Path
    activations_path: str | Path

    def rows(self, split: str) -> np.ndarray:
        """Ids of the accepted samples of ``split``, ascending."""
        latents, _ = read_zarr(self.latents_path, ["split"])
        activations, _ = read_zarr(self.activations_path, ["accepted"])
        return np.flatnonzero(activations["accepted"] & (latents["split"] == split))

    def read(
        self, split: str, latents: Sequence[str] = (), activations: Sequence[str] = ()
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The rows of ``split`` (:meth:`rows`) and the named arrays of both stores at those rows."""
        rows = self.rows(split)
        arrays: dict[str, np.ndarray] = {}
        for path, names in ((self.latents_path, latents), (self.activations_path, activations)):
            if names:
                read, _ = read_zarr(path, list(names))
                arrays |= {name: read[name][rows] for name in names}
        return rows, arrays
