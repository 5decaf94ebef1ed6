"""The paper's unit-tuning loop, re-implemented as the baseline for the perturbation benchmark.

``paper_loop`` does what the published tuning script does for every base sample and unit:
a linear predict in NumPy (as sklearn's ``LinearRegression.predict``), one synthesis call
for the unit's ``steps`` images, conversion to uint8 and PIL, one PNG per image written
into a zip per (sample, unit), and, where ``encode`` is set, one classifier call per image
(the paper's scripts encode renders that way when they compute activations).

Run as a script, it measures three things side by side on one device with the same
models and prints them as ``key=value`` lines, the last two being the ratios:

- the paper loop (images/s),
- the batched path of the perturbation stage, end to end: ``sweep_latents``, then
  ``render_and_encode`` (render, re-encode, uint8 copies and object masks, in batches) at
  each precision, then the image measures of every render and the Zarr and Parquet writes;
  the best precision counts (``batched_images_per_s``), and the render/re-encode part alone
  is reported too,
- the same work laid out as the workflow runs it (``workflow_*``): perturb jobs render a
  chunk of units and write its Zarr store one after another on the device, while measure
  jobs (two threads each, as the rule asks) read finished chunks, measure them and write
  their tables on the other host cores. The final two ratios use this figure; the
  one-process figures (``batched_end_to_end_*``) are printed beside it,
- the bare generator + classifier forward at the best batch size and precision.

Usage: python bench/paper_loop.py --device cuda [--quick] [--generator-spec JSON] [--classifier-spec JSON]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline.device import autocast, resolve_device, set_threads
from pipeline.measures import measure_sweeps
from pipeline.models import load_classifier, load_generator
from pipeline.stages.common import render_and_encode, synthesize
from pipeline.stages.link import AffineLink
from pipeline.stages.perturb import sweep_latents, sweep_values
from pipeline.store import read_zarr, write_parquet, write_zarr

# bench/stylegan2_like.py, importable as a top-level module when this file runs as a script.
STYLEGAN2_LIKE_256 = {"kind": "python", "entrypoint": "stylegan2_like:StyleGAN2Like", "kwargs": {"c_dim": 1000}}
RESNET50 = {"kind": "torchvision", "name": "resnet50", "weights": None}
# The measure rule's threads (workflow/rules/measure.smk).
MEASURE_JOB_THREADS = 2
QUICK_GENERATOR = {"kind": "python", "entrypoint": "pipeline.models.builtin.generator:ShapesGenerator"}
QUICK_CLASSIFIER = {
    "kind": "torchvision",
    "name": "resnet18",
    "weights": None,
    "preprocess": {"resize": 64, "crop": 56},
}


def paper_loop(
    classifier: Any,
    generator: Any,
    link_W: np.ndarray,
    link_b: np.ndarray,
    r_base: np.ndarray,
    units: Sequence[int],
    ranges: np.ndarray,
    steps: int,
    *,
    device: torch.device | str = "cpu",
    encode: bool = True,
    out_dir: str | Path | None = None,
) -> np.ndarray:
    """Tune ``units`` one at a time on each base sample, the way the paper's script does.

    ``link_W [w_dim, U]``, ``link_b [w_dim]``: the linear link; ``r_base [P, U]``: base
    activations; ``ranges [K, 2]``: each unit's (low, high). Zips go to ``out_dir`` or, if
    it is None, to memory (the PNG encoding is paid either way). Returns the re-encoded
    value of the tuned unit, float32 [P, K, steps] (NaN where ``encode`` is off).
    """
    achieved = np.full((len(r_base), len(units), steps), np.nan, dtype=np.float32)
    for sample, r in enumerate(r_base):
        for k, unit in enumerate(units):
            trajectory = np.repeat(r[None].astype(np.float64), steps, axis=0)
            trajectory[:, unit] = np.linspace(ranges[k][0], ranges[k][1], steps)
            w = trajectory @ link_W.T.astype(np.float64) + link_b
            ws = torch.tensor(np.tile(w, generator.num_ws).reshape(steps, generator.num_ws, -1)).float().to(device)
            with torch.no_grad():
                images = generator.synthesis(ws)
            images = ((images + 1) * (255 / 2.0)).permute(0, 2, 3, 1).clamp(0, 255).to(torch.uint8).cpu().numpy()
            archive = io.BytesIO()
            with zipfile.ZipFile(archive, "w") as members:
                for step, image in enumerate(images):
                    picture = Image.fromarray(image)
                    png = io.BytesIO()
                    picture.save(png, "PNG")
                    members.writestr(f"sample_{sample}_unit_{unit}_step_{step}.png", png.getvalue())
                    if encode:
                        x = torch.from_numpy(np.array(picture)).permute(2, 0, 1)[None].float().div(255).to(device)
                        with torch.no_grad():
                            achieved[sample, k, step] = classifier.features(x)[0, unit].item()
            if out_dir is not None:
                Path(out_dir, f"sample_{sample}_unit_{unit}.zip").write_bytes(archive.getvalue())
    return achieved


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], Any], device: torch.device) -> float:
    _synchronise(device)
    started = time.perf_counter()
    function()
    _synchronise(device)
    return time.perf_counter() - started


def base_activations(classifier: Any, generator: Any, samples: int, truncation: float, device: torch.device):
    """r [P, U] and w [P, w_dim] of ``samples`` truncated renders of class 0."""
    z = torch.randn(samples, generator.z_dim, generator=torch.Generator().manual_seed(0)).to(device)
    c = torch.zeros(samples, generator.c_dim, device=device)
    if generator.c_dim:
        c[:, 0] = 1
    with torch.no_grad():
        w = generator.mapping(z, c, truncation_psi=truncation)[:, 0]
        r = classifier.features(synthesize(generator, w))
    return r, w


def bare_forward(classifier, generator, w: torch.Tensor, batch_sizes: Sequence[int], precisions: Sequence[str], device):
    """images/s of synthesis + features per (precision, batch size), and r of the first batch per precision."""
    rates: dict[tuple[str, int], float] = {}
    features: dict[str, torch.Tensor] = {}

    def forward(batch: torch.Tensor, precision: str) -> torch.Tensor:
        with torch.no_grad(), autocast(device, precision):
            return classifier.features(synthesize(generator, batch))

    for precision in precisions:
        features[precision] = forward(w[: batch_sizes[0]], precision).float()
        for batch_size in batch_sizes:
            batch = w[:batch_size]
            forward(batch, precision)
            repeats = max(1, len(w) // batch_size)
            seconds = timed(lambda: [forward(batch, precision) for _ in range(repeats)], device)  # noqa: B023
            rates[precision, batch_size] = repeats * len(batch) / seconds
    return rates, features


def compare(
    classifier_spec: dict,
    generator_spec: dict,
    device: torch.device,
    *,
    units: int,
    samples: int,
    paper_samples: int,
    steps: int,
    batch_size: int,
    chunk_units: int,
    host_threads: int,
    precisions: Sequence[str] = (),
    truncation: float = 0.7,
) -> dict[str, float]:
    """Measure the paper loop, the batched perturbation path and the bare forward; return the figures."""
    classifier = load_classifier(classifier_spec).to(device)
    generator = load_generator(generator_spec).to(device)
    r, w = base_activations(classifier, generator, samples, truncation, device)
    # Throughput does not depend on how well the link fits, so a random one near the samples' w will do.
    rng = torch.Generator().manual_seed(1)
    weight = (torch.randn(generator.w_dim, classifier.num_units, generator=rng) / classifier.num_units).to(device)
    bias = (w.mean(0) - r.mean(0) @ weight.T).to(device)
    link = AffineLink(weight, bias).to(device)
    unit_ids = np.arange(units)
    r_cpu = r.cpu().numpy()
    low, high = r_cpu[:, unit_ids].min(axis=0), r_cpu[:, unit_ids].max(axis=0)
    ranges = np.stack([low, high], axis=1)
    w_np, b_np = weight.cpu().numpy(), bias.cpu().numpy()

    def run_paper(encode: bool, n: int = paper_samples) -> None:
        paper_loop(classifier, generator, w_np, b_np, r_cpu[:n], unit_ids, ranges, steps, device=device, encode=encode)

    run_paper(True, 1)
    paper_images = paper_samples * units * steps
    figures = {
        "paper_loop_render_only_images_per_s": paper_images / timed(lambda: run_paper(False), device),
        "paper_loop_images_per_s": paper_images / timed(lambda: run_paper(True), device),
    }

    available = ["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"]
    unavailable = [p for p in precisions if p not in available]
    if unavailable:
        raise ValueError(f"--precisions: {unavailable[0]} does not run on {device.type}; choose from {available}")
    precisions = [p for p in available if p in precisions] if precisions else available
    values = torch.from_numpy(sweep_values(low, high, steps))
    sweep = sweep_latents(link, r, unit_ids, values.to(device)).reshape(-1, generator.w_dim)
    mask_classes = torch.zeros(len(sweep), dtype=torch.int64)
    out = Path(tempfile.mkdtemp(prefix="bench-perturb-"))
    rendered: dict[str, dict[str, np.ndarray]] = {}  # each precision's last renders of the whole sweep

    def render(rows: slice, precision: str) -> dict[str, np.ndarray]:
        """The renders of ``sweep[rows]`` (whole sweeps) as the perturb stage stores them."""
        encoded = render_and_encode(
            generator, classifier, sweep[rows], batch_size=batch_size, device=device, label="bench",
            keep_images=True, mask_classes=mask_classes[rows], precision=precision,
        )  # fmt: skip
        height, width = encoded.images.shape[1:3]
        return {
            "images": encoded.images.reshape(-1, steps, height, width, 3),
            "masks": encoded.masks.reshape(-1, steps, height, width),
            "r": encoded.r,
        }

    def run_batched(n: int, precision: str, measure: bool = True) -> None:
        arrays = rendered[precision] = render(slice(0, n), precision)
        if not measure:
            return
        table = measure_sweeps(arrays["images"], arrays["masks"])
        write_zarr(out / "renders.zarr", arrays)
        write_parquet(out / "table.parquet", table)

    # A chunk holds chunk_units units' sweeps over all samples, in (unit, sample, step) order.
    chunk = chunk_units * samples * steps

    def measure_job(store: Path) -> None:
        arrays, _ = read_zarr(store, ["images", "masks"])
        table = measure_sweeps(arrays["images"], arrays["masks"], threads=MEASURE_JOB_THREADS)
        write_parquet(store.with_suffix(".parquet"), table)

    def run_workflow(precision: str) -> None:
        with ThreadPoolExecutor(max_workers=max(1, host_threads // MEASURE_JOB_THREADS)) as measure_jobs:
            jobs = []
            for index, start in enumerate(range(0, len(sweep), chunk)):
                store = out / f"chunk-{index}.zarr"
                write_zarr(store, render(slice(start, min(start + chunk, len(sweep))), precision))
                jobs.append(measure_jobs.submit(measure_job, store))
            for job in jobs:
                job.result()

    for precision in precisions:
        run_batched(min(len(sweep), steps * max(1, batch_size // steps)), precision)  # warm-up, whole sweeps
        seconds = timed(lambda: run_batched(len(sweep), precision, measure=False), device)  # noqa: B023
        figures[f"batched_render_encode_{precision}_images_per_s"] = len(sweep) / seconds
        seconds = timed(lambda: run_batched(len(sweep), precision), device)  # noqa: B023
        figures[f"batched_end_to_end_{precision}_images_per_s"] = len(sweep) / seconds
        seconds = timed(lambda: run_workflow(precision), device)  # noqa: B023
        figures[f"workflow_end_to_end_{precision}_images_per_s"] = len(sweep) / seconds
    best = max(precisions, key=lambda precision: figures[f"batched_end_to_end_{precision}_images_per_s"])
    figures["batched_images_per_s"] = figures[f"batched_end_to_end_{best}_images_per_s"]
    best = max(precisions, key=lambda precision: figures[f"workflow_end_to_end_{precision}_images_per_s"])
    figures["workflow_images_per_s"] = figures[f"workflow_end_to_end_{best}_images_per_s"]

    # Where the host's time goes: the best precision's renders measured with every host thread, and written.
    images, masks = rendered[best]["images"], rendered[best]["masks"]
    seconds = timed(lambda: measure_sweeps(images, masks, threads=host_threads), device)
    figures["host_measure_images_per_s"] = len(sweep) / seconds
    seconds = timed(lambda: write_zarr(out / "renders.zarr", {"images": images, "masks": masks}), device)
    figures["host_zarr_write_images_per_s"] = len(sweep) / seconds

    rates, features = bare_forward(
        classifier, generator, sweep, sorted({batch_size, 2 * batch_size}), precisions, device
    )
    for (precision, size), rate in rates.items():
        figures[f"bare_forward_{precision}_batch{size}_images_per_s"] = rate
    if "fp32" in features:
        reference = features["fp32"]
        for precision in precisions[1:]:
            error = (features[precision] - reference).abs().max() / reference.abs().max().clamp_min(1e-12)
            figures[f"autocast_{precision}_max_relative_feature_error"] = float(error)
        figures["bare_forward_fp32_images_per_s"] = max(rate for (p, _), rate in rates.items() if p == "fp32")
    figures["bare_forward_images_per_s"] = max(rates.values())
    figures["one_process_fraction_of_bare_forward"] = (
        figures["batched_images_per_s"] / figures["bare_forward_images_per_s"]
    )
    figures["speedup_vs_paper_loop"] = figures["workflow_images_per_s"] / figures["paper_loop_images_per_s"]
    figures["fraction_of_bare_forward"] = figures["workflow_images_per_s"] / figures["bare_forward_images_per_s"]
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="small models and counts, for a CPU smoke run")
    parser.add_argument("--classifier-spec", type=json.loads, help="registry spec as JSON (default: ResNet50)")
    parser.add_argument("--generator-spec", type=json.loads, help="registry spec as JSON (default: StyleGAN2-like 256)")
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--samples", type=int, default=16, help="base samples for the batched path")
    parser.add_argument("--paper-samples", type=int, default=2, help="base samples for the (slow) paper loop")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-units", type=int, default=2, help="units per perturb job in the workflow layout")
    parser.add_argument(
        "--precisions", nargs="*", default=[], choices=["fp32", "bf16", "fp16"], help="default: all the device runs"
    )
    parser.add_argument("--threads", type=int, default=2, help="host threads (torch, and the measure jobs in all)")
    args = parser.parse_args(argv)

    set_threads(args.threads)
    device = resolve_device(args.device)
    classifier_spec = args.classifier_spec or (QUICK_CLASSIFIER if args.quick else RESNET50)
    generator_spec = args.generator_spec or (QUICK_GENERATOR if args.quick else STYLEGAN2_LIKE_256)
    torch.manual_seed(0)
    figures = compare(
        classifier_spec,
        generator_spec,
        device,
        units=args.units,
        samples=args.samples,
        paper_samples=args.paper_samples,
        steps=args.steps,
        batch_size=args.batch_size,
        chunk_units=args.chunk_units,
        host_threads=args.threads,
        precisions=args.precisions,
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device={device} ({name}), torch {torch.__version__}")
    print(f"classifier={json.dumps(classifier_spec)}")
    print(f"generator={json.dumps(generator_spec)}")
    for key, value in figures.items():
        print(f"{key}={value:.4g}")


if __name__ == "__main__":
    main()
