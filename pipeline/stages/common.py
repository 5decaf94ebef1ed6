"""What the stages share: the job wrapper, code versions, the models and samples a stage
runs on, and the render -> re-encode core."""

from __future__ import annotations

import ast
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pipeline
from pipeline.device import autocast, resolve_device, run_with_backoff

# The job wrapper lives apart so that stages without models start without importing torch.
from pipeline.job import run_stage  # noqa: F401
from pipeline.models import load_classifier, load_generator
from pipeline.models.protocols import Classifier, Generator

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(pipeline.__file__).resolve().parent
PACKAGE_NAME = pipeline.__name__


def code_version(*names: str) -> str:
    """sha256 over the sources of the named modules of ``pipeline`` and every module they import.

    ``names`` are dotted paths below the package (``"stages.link"``). Which modules count is
    read from the code itself (:func:`imported_modules`), so a rule that passes the result as
    a param re-runs exactly when code its stage runs changes. A name that does not exist
    hashes as absent rather than failing the whole workflow's parse.
    """
    digest = hashlib.sha256()
    for name in sorted(imported_modules(*names)):
        file = module_file(name)
        digest.update(name.encode())
        digest.update(file.read_bytes() if file is not None else b"<absent>")
    return digest.hexdigest()


def module_file(name: str) -> Path | None:
    """The source of module ``name`` (dotted, below ``pipeline``; "" is the package itself)."""
    path = PACKAGE_ROOT.joinpath(*name.split(".")) if name else PACKAGE_ROOT
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(*names: str) -> set[str]:
    """``names`` and every ``pipeline`` module they import, directly or not, with their packages.

    Imports are read with :mod:`ast` wherever they stand (module level or inside a
    function), without running anything. Names are dotted paths below ``pipeline``; the
    package's own ``__init__`` is ``""``.
    """
    found: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        parts = name.split(".") if name else []
        pending += [".".join(parts[:depth]) for depth in range(len(parts))]
        file = module_file(name)
        if file is not None:
            pending += _imports_of(file, name)
    return found


def _imports_of(file: Path, name: str) -> list[str]:
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    imported: list[str] = []
    for node in ast.walk(ast.parse(file.read_bytes(), filename=str(file))):
        if isinstance(node, ast.Import):
            imported += [_below_package(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = _below_package(node.module or "")
            if module is None:
                continue
            imported.append(module)
            # `from pipeline.x import y` may name a submodule y rather than an attribute.
            imported += [
                submodule
                for alias in node.names
                if module_file(submodule := f"{module}.{alias.name}" if module else alias.name) is not None
            ]
    return [module for module in imported if module is not None]


def _below_package(module: str) -> str | None:
    """``pipeline.x.y`` -> ``x.y``, ``pipeline`` -> ``""``; None for other packages."""
    if module == PACKAGE_NAME:
        return ""
    if module.startswith(f"{PACKAGE_NAME}."):
        return module.removeprefix(f"{PACKAGE_NAME}.")
    return None


def load_models(
    classifier_spec: Mapping[str, Any] | None,
    generator_spec: Mapping[str, Any] | None,
    device: torch.device,
) -> tuple[Classifier | None, Generator | None]:
    """Load the models a stage needs (``None`` specs are skipped) onto ``device``."""
    classifier = load_classifier(classifier_spec).to(device) if classifier_spec is not None else None
    generator = load_generator(generator_spec).to(device) if generator_spec is not None else None
    return classifier, generator


def open_segmenter(generator: Generator, model_path: str | Path | None, device: torch.device) -> Any:
    """The part segmenter hooked on ``generator`` when ``model_path`` names one, else None
    (the regions then come from the classifier's saliency)."""
    if not model_path:
        return None
    from pipeline.segmentation import GeneratorSegmenter

    segmenter = GeneratorSegmenter(generator, model_path, device)
    log.info("regions: parts %s from the generator's features (%s)", ", ".join(segmenter.part_names), model_path)
    return segmenter


def region_attrs(segmenter: Any) -> dict[str, Any]:
    """What made a renders store's masks: ``regions`` (segmentation or saliency) and the part names."""
    if segmenter is None:
        return {"regions": "saliency"}
    return {"regions": "segmentation", "part_names": list(segmenter.part_names)}


def prepare_device(name: str) -> torch.device:
    device = resolve_device(name)
    log.info("device: %s", device)
    return device


@dataclass(frozen=True)
class ModelSetup:
    """What a model stage runs on: the model specs (None: not needed), the device and the precision.

    A rule's ``models`` param (``model_stage()`` in workflow/rules/common.smk) holds exactly
    these, so a job builds it with :meth:`from_params` and a test with the constructor.
    """

    classifier: Mapping[str, Any] | None
    generator: Mapping[str, Any] | None
    device: str = "auto"
    precision: str = "fp32"

    @classmethod
    def from_params(cls, models: Mapping[str, Any]) -> ModelSetup:
        """From a rule's ``models`` param: each role's ``{spec, sha256}``, ``device`` and ``precision``."""
        return cls(
            classifier=models["classifier"]["spec"] if "classifier" in models else None,
            generator=models["generator"]["spec"] if "generator" in models else None,
            device=models["device"],
            precision=models["precision"],
        )

    def load(self, segmentation_path: str | Path | None = None) -> Models:
        """Load the models; with ``segmentation_path`` also the part segmenter hooked on the generator."""
        device = prepare_device(self.device)
        classifier, generator = load_models(self.classifier, self.generator, device)
        segmenter = open_segmenter(generator, segmentation_path, device)
        return Models(classifier, generator, device, self.precision, segmenter)


@dataclass(frozen=True)
class Models:
    """The loaded models of a :class:`ModelSetup`, on their device."""

    classifier: Classifier | None
    generator: Generator | None
    device: torch.device
    precision: str
    segmenter: Any = None  # pipeline.segmentation.GeneratorSegmenter, or None: regions from saliency

    def encode(
        self,
        w: torch.Tensor,
        *,
        batch_size: int,
        label: str,
        keep_images: bool = False,
        mask_classes: torch.Tensor | None = None,
    ) -> Encoded:
        """:func:`render_and_encode` with these models, device and precision."""
        return render_and_encode(
            self.generator,
            self.classifier,
            w,
            batch_size=batch_size,
            device=self.device,
            label=label,
            keep_images=keep_images,
            mask_classes=mask_classes,
            precision=self.precision,
            segmenter=self.segmenter,
        )


def broadcast_ws(generator: Generator, w: torch.Tensor) -> torch.Tensor:
    """w [B, w_dim] -> ws [B, num_ws, w_dim]: the link predicts one w that every layer uses."""
    if w.ndim != 2 or w.shape[1] != generator.w_dim:
        raise ValueError(f"generator: expected latents of shape [B, {generator.w_dim}], got {list(w.shape)}")
    return w.unsqueeze(1).expand(-1, generator.num_ws, -1)


def synthesize(generator: Generator, w: torch.Tensor) -> torch.Tensor:
    """w [B, w_dim] -> images float [B, 3, H, W] in [0, 1]."""
    images = generator.synthesis(broadcast_ws(generator, w))
    if images.ndim != 4 or images.shape[0] != w.shape[0] or images.shape[1] != 3:
        raise ValueError(f"generator: synthesis returned shape {list(images.shape)}, expected [{w.shape[0]}, 3, H, W]")
    return ((images.float() + 1.0) / 2.0).clamp_(0.0, 1.0)


def pack_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [B, 3, H, W] in [0, 1] -> uint8 [B, H, W, 3] on the images' device."""
    return (images * 255.0).round_().to(torch.uint8).permute(0, 2, 3, 1)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float [B, 3, H, W] in [0, 1] -> uint8 [B, H, W, 3] in host memory."""
    return pack_uint8(images).cpu().numpy()


def check_finite(name: str, values: np.ndarray) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        rows = int(bad.reshape(len(values), -1).any(axis=1).sum())
        raise ValueError(f"{name}: {rows} of {len(values)} rows contain NaN or Inf")


# Renders per classifier pass on a CPU: a pass's activations stay in the cache (the breeds
# classifier re-encodes about 1.4x the renders per second of one pass over 512, with the
# same activations; bench/render_path.py).
CLASSIFIER_CPU_CHUNK = 64


def classify(classifier: Classifier, images: torch.Tensor) -> torch.Tensor:
    """``classifier.features`` of images [B, 3, H, W], in passes of CLASSIFIER_CPU_CHUNK on a CPU."""
    if images.device.type != "cpu" or len(images) <= CLASSIFIER_CPU_CHUNK:
        return classifier.features(images)
    return torch.cat([classifier.features(part) for part in images.split(CLASSIFIER_CPU_CHUNK)])


@dataclass
class Encoded:
    """Renders of a batch of latents and what the classifier says about them."""

    r: np.ndarray  # float32 [N, U]
    logits: np.ndarray | None  # float32 [N, C]; None without a head
    images: np.ndarray | None  # uint8 [N, H, W, 3] when kept
    masks: np.ndarray | None  # when computed: bool object masks, or uint8 part label maps [N, H, W]


def render_and_encode(
    generator: Generator,
    classifier: Classifier,
    w: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    label: str,
    keep_images: bool = False,
    mask_classes: torch.Tensor | None = None,
    precision: str = "fp32",
    segmenter: Any = None,
) -> Encoded:
    """Render latents ``w [N, w_dim]`` and re-encode them with the classifier, in batches.

    Images go from the generator to the classifier as float tensors on ``device``, under
    ``precision`` (:func:`pipeline.device.autocast`). With ``mask_classes [N]`` the object
    masks for those classes are computed too (in fp32: they are a measurement), or, with a
    ``segmenter`` (:class:`pipeline.segmentation.GeneratorSegmenter` on this generator),
    uint8 part label maps from the generator's features of the same synthesis. Batches
    shrink on CUDA out-of-memory, and every batch logs a progress line.

    On CUDA the results of a batch travel to pinned host memory with asynchronous copies,
    and the host unpacks them only after it has queued the next batch, so the device never
    waits for the host's copying, packing or logging.
    """
    n = len(w)
    out: dict[str, np.ndarray] = {"r": np.empty((n, classifier.num_units), dtype=np.float32)}
    pending: list[_Transfer] = []
    started = time.perf_counter()

    def unpack(transfer: _Transfer) -> None:
        for name, host in transfer.wait().items():
            if name not in out:
                out[name] = np.empty((n, *host.shape[1:]), dtype=host.dtype)
            out[name][transfer.rows] = host
        elapsed = time.perf_counter() - started
        log.info("%s: %d/%d renders (%.0f/s)", label, transfer.rows.stop, n, transfer.rows.stop / max(elapsed, 1e-9))

    def step(rows: slice) -> None:
        spatial = None
        results: dict[str, torch.Tensor] = {}
        with torch.no_grad(), autocast(device, precision):
            batch = synthesize(generator, w[rows].to(device, non_blocking=True))
            if mask_classes is not None and segmenter is None and hasattr(classifier, "features_and_spatial"):
                features, spatial = classifier.features_and_spatial(batch)
                spatial = spatial.float()
            else:
                features = classify(classifier, batch)
            results["r"] = features.float()
            if classifier.head is not None:
                results["logits"] = classifier.head(features).float()
        if keep_images:
            results["images"] = pack_uint8(batch)
        if mask_classes is not None and segmenter is not None:
            results["masks"] = segmenter.label_maps(batch.shape[-2:])
        elif mask_classes is not None:
            from pipeline.measures import object_masks

            results["masks"] = object_masks(classifier, batch, mask_classes[rows].to(device), spatial=spatial)
        pending.append(_Transfer.start(rows, results))
        while len(pending) > 1:
            unpack(pending.pop(0))

    run_with_backoff(step, n, batch_size)
    for transfer in pending:
        unpack(transfer)
    check_finite(f"{label}: classifier activations", out["r"])
    return Encoded(r=out["r"], logits=out.get("logits"), images=out.get("images"), masks=out.get("masks"))


@dataclass
class _Transfer:
    """Device -> host copies of one batch's results, possibly still in flight."""

    rows: slice
    host: dict[str, torch.Tensor]
    done: torch.cuda.Event | None

    @classmethod
    def start(cls, rows: slice, results: Mapping[str, torch.Tensor]) -> _Transfer:
        if not all(tensor.is_cuda for tensor in results.values()):
            return cls(rows, {name: tensor.cpu() for name, tensor in results.items()}, None)
        host = {}
        for name, tensor in results.items():
            host[name] = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            host[name].copy_(tensor, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return cls(rows, host, done)

    def wait(self) -> dict[str, np.ndarray]:
        if self.done is not None:
            self.done.synchronize()
        return {name: tensor.numpy() for name, tensor in self.host.items()}


def render_images(generator: Generator, w: torch.Tensor, *, batch_size: int, device: torch.device) -> np.ndarray:
    """Latents w [N, w_dim] -> uint8 images [N, H, W, 3], in batches, without re-encoding."""
    images: np.ndarray | None = None

    def step(rows: slice) -> None:
        nonlocal images
        with torch.no_grad():
            batch = to_uint8(synthesize(generator, w[rows].to(device)))
        if images is None:
            images = np.empty((len(w), *batch.shape[1:]), dtype=np.uint8)
        images[rows] = batch

    run_with_backoff(step, len(w), batch_size)
    return images


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def tile(images: np.ndarray, gap: int = 2, fill: int = 255) -> np.ndarray:
    """uint8 [rows, cols, H, W, 3] -> one uint8 image with ``gap`` pixels between tiles."""
    rows, cols, height, width, _ = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (0, gap), (0, gap), (0, 0)), constant_values=fill)
    canvas = padded.transpose(0, 2, 1, 3, 4).reshape(rows * (height + gap), cols * (width + gap), 3)
    return np.ascontiguousarray(canvas[: rows * (height + gap) - gap, : cols * (width + gap) - gap])


def difference_image(original: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """Signed difference of uint8 images as uint8, mid-grey where nothing changed: 128 + (changed - original) / 2."""
    delta = changed.astype(np.int16) - original.astype(np.int16)
    return np.clip(128 + delta // 2, 0, 255).astype(np.uint8)
