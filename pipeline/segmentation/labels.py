"""A labels folder: renders' latents beside their part maps (format in docs/artifacts.md).

    labels/
      parts.yaml          parts: [name, ...]   label k is the k-th name, 0 the background
      latents.npy         float [N, num_ws, w_dim] or [N, w_dim]: what render i was made from
      maps/00000.png      the part map of render 0 in the colours of PALETTE, or
      maps/00000.npy      the same as an integer array [H, W]
      images/00000.png    the render itself, for the person who paints the map (not read)

Every render ``i < N`` needs exactly one map; maps are read back exactly (a colour that is
not a label's, e.g. from an anti-aliased brush, is an error naming the file and pixel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

PARTS_FILE = "parts.yaml"
LATENTS_FILE = "latents.npy"
MAPS_DIR = "maps"
IMAGES_DIR = "images"
MAX_LABELS = 64


class LabelsError(ValueError):
    """A labels folder that cannot be used, with one line naming the file or key."""


def palette(count: int = MAX_LABELS) -> np.ndarray:
    """uint8 ``[count, 3]`` RGB colours: label 0 black, then colours far apart (the bits of k spread over R, G, B)."""
    colours = np.zeros((count, 3), dtype=np.uint8)
    for label in range(count):
        value, red, green, blue = label, 0, 0, 0
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[label] = red, green, blue
    return colours


PALETTE = palette()


@dataclass(frozen=True)
class LabelSet:
    latents: np.ndarray  # float32 [N, num_ws, w_dim] or [N, w_dim]
    maps: np.ndarray  # uint8 [N, H, W]
    part_names: list[str]


def map_name(index: int) -> str:
    return f"{index:05d}"


def read_part_names(folder: str | Path) -> list[str]:
    path = Path(folder) / PARTS_FILE
    if not path.is_file():
        raise LabelsError(f"{path}: not found; a labels folder names its parts there (parts: [name, ...])")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise LabelsError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from error
    names = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise LabelsError(f"{path}: key 'parts' must be a non-empty list of part names")
    if len(set(names)) != len(names) or len(names) >= MAX_LABELS:
        raise LabelsError(f"{path}: key 'parts' must hold distinct names, fewer than {MAX_LABELS}")
    return names


def read_labels(folder: str | Path, part_names: Sequence[str] | None = None) -> LabelSet:
    """Read and check a labels folder; ``part_names`` (from the config) must equal parts.yaml's."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LabelsError(f"{folder}: labels folder not found")
    names = read_part_names(folder)
    if part_names is not None and list(part_names) != names:
        raise LabelsError(
            f"config key 'segmentation.parts' {list(part_names)} does not match {folder / PARTS_FILE} {names}"
        )
    latents_path = folder / LATENTS_FILE
    if not latents_path.is_file():
        raise LabelsError(f"{latents_path}: not found; every map needs the latent it was rendered from")
    try:
        latents = np.load(latents_path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise LabelsError(f"{latents_path}: not a NumPy array ({error})") from error
    if latents.ndim not in (2, 3) or not np.issubdtype(latents.dtype, np.floating) or len(latents) == 0:
        raise LabelsError(
            f"{latents_path}: expected float [N, num_ws, w_dim] or [N, w_dim], got {latents.dtype} "
            f"{list(latents.shape)}"
        )
    if not np.isfinite(latents).all():
        raise LabelsError(f"{latents_path}: contains NaN or Inf")
    maps_dir = folder / MAPS_DIR
    files = sorted(maps_dir.glob("*.png")) + sorted(maps_dir.glob("*.npy")) if maps_dir.is_dir() else []
    by_index: dict[int, Path] = {}
    for path in files:
        if not path.stem.isdigit():
            raise LabelsError(f"{path}: map files are named by their render's index, e.g. {map_name(0)}.png")
        index = int(path.stem)
        if index in by_index:
            raise LabelsError(f"{path}: render {index} has two maps ({by_index[index].name} too)")
        if index >= len(latents):
            raise LabelsError(f"{path}: no latent for render {index}; {latents_path} holds {len(latents)} rows")
        by_index[index] = path
    missing = [i for i in range(len(latents)) if i not in by_index]
    if missing:
        raise LabelsError(f"{maps_dir / map_name(missing[0])}.png: missing; every latent needs its part map")
    maps = [read_map(by_index[i], len(names)) for i in range(len(latents))]
    shape = maps[0].shape
    for index, label_map in enumerate(maps):
        if label_map.shape != shape:
            raise LabelsError(f"{by_index[index]}: map is {list(label_map.shape)}, the first map is {list(shape)}")
    return LabelSet(latents.astype(np.float32), np.stack(maps), names)


def read_map(path: Path, num_parts: int) -> np.ndarray:
    """One part map as uint8 [H, W]; labels above ``num_parts`` or colours outside the palette fail."""
    if path.suffix == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise LabelsError(f"{path}: not a NumPy array ({error})") from error
        if values.ndim != 2 or not np.issubdtype(values.dtype, np.integer):
            raise LabelsError(f"{path}: expected an integer map [H, W], got {values.dtype} {list(values.shape)}")
        bad = (values < 0) | (values > num_parts)
        if bad.any():
            y, x = np.argwhere(bad)[0]
            raise LabelsError(f"{path}: unknown label {values[y, x]} at pixel ({y}, {x}); labels are 0..{num_parts}")
        return values.astype(np.uint8)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise LabelsError(f"{path}: not a readable PNG")
    rgb = image[..., ::-1].astype(np.int64)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    known = PALETTE[: num_parts + 1].astype(np.int64)
    known_codes = (known[:, 0] << 16) | (known[:, 1] << 8) | known[:, 2]
    order = np.argsort(known_codes)
    positions = np.clip(np.searchsorted(known_codes[order], codes), 0, len(order) - 1)
    matched = known_codes[order][positions] == codes
    if not matched.all():
        y, x = np.argwhere(~matched)[0]
        raise LabelsError(
            f"{path}: unknown label colour {tuple(int(c) for c in rgb[y, x])} at pixel ({y}, {x}); "
            f"the {num_parts + 1} label colours are listed in docs/artifacts.md"
        )
    return order[positions].astype(np.uint8)


def write_map(path: str | Path, label_map: np.ndarray) -> None:
    """A part map as a PNG in the palette's colours (what :func:`read_map` reads back)."""
    colours = PALETTE[np.asarray(label_map, dtype=np.int64)]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(colours[..., ::-1])):
        raise OSError(f"{path}: could not write the PNG")


def write_image(path: str | Path, image: np.ndarray) -> None:
    """uint8 [H, W, 3] RGB as a PNG."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1])):
        raise OSError(f"{path}: could not write the PNG")


def write_labels_folder(
    folder: str | Path,
    latents: np.ndarray,
    part_names: Sequence[str],
    images: np.ndarray | None = None,
    maps: np.ndarray | None = None,
) -> None:
    """Write parts.yaml, latents.npy, and optionally the renders and their part maps (PNG)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PARTS_FILE).write_text(yaml.safe_dump({"parts": list(part_names)}, sort_keys=False))
    np.save(folder / LATENTS_FILE, np.asarray(latents, dtype=np.float32))
    for index in range(len(latents)):
        if images is not None:
            write_image(folder / IMAGES_DIR / f"{map_name(index)}.png", images[index])
        if maps is not None:
            write_map(folder / MAPS_DIR / f"{map_name(index)}.png", maps[index])
