"""Commands for people: look at what a finished run's link and units do.

    python -m pipeline visualize --run results/default --unit 12 --sample 40 --out strip.png
    python -m pipeline render-activation --run results/default --npy r.npy --out image.png
    python -m pipeline label --configfile my.yaml --out labels --count 16 --parts ear eye nose
    python -m pipeline label --out labels --parts ear eye nose --check

Both read a run's artifacts (docs/artifacts.md): the generator and classifier specs stored
in ``latents.zarr`` and ``activations.zarr``, the link, and the unit ranges.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pipeline.models import ModelSpecError, load_classifier, load_generator
from pipeline.stages.common import prepare_device, render_and_encode, render_images
from pipeline.stages.link import load_link
from pipeline.stages.perturb import sweep_latents, sweep_values
from pipeline.store import read_parquet, read_zarr


def _artifact(run: Path, name: str) -> Path:
    path = run / name
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; is --run a finished run's results directory?")
    return path


def _save_figure(images: np.ndarray, titles: list[str], heading: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(images), figsize=(1.6 * len(images), 2.0), squeeze=False)
    for axis, image, title in zip(axes[0], images, titles, strict=True):
        axis.imshow(image, interpolation="nearest")
        axis.set_title(title, fontsize=8)
        axis.axis("off")
    figure.suptitle(heading, fontsize=9)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=150)
    plt.close(figure)


def visualize(run: Path, unit: int, sample: int, steps: int, out: Path, device: str, batch_size: int) -> None:
    """Sweep ``unit`` of ``sample`` over its tuning range, render, re-encode, save a strip."""
    latents, latent_attrs = read_zarr(_artifact(run, "latents.zarr"), ["class"])
    activations, activation_attrs = read_zarr(_artifact(run, "activations.zarr"), ["r"])
    ranges = read_parquet(_artifact(run, "units/ranges.parquet")).set_index("unit")
    link = load_link(_artifact(run, "link/model.pt"))
    if not 0 <= sample < len(activations["r"]):
        raise ValueError(f"--sample: {sample} is out of range; the run has {len(activations['r'])} samples")
    if unit not in ranges.index:
        raise ValueError(f"--unit: {unit} is out of range; the classifier has {len(ranges)} units")
    if steps < 2:
        raise ValueError(f"--steps: need at least 2, got {steps}")

    torch_device = prepare_device(device)
    generator = load_generator(latent_attrs["generator"]).to(torch_device)
    classifier = load_classifier(activation_attrs["classifier"]).to(torch_device)
    values = sweep_values(ranges.loc[[unit], "low"].to_numpy(), ranges.loc[[unit], "high"].to_numpy(), steps)
    r = torch.from_numpy(activations["r"][[sample]])
    w = sweep_latents(link, r, [unit], torch.from_numpy(values)).reshape(steps, -1)
    encoded = render_and_encode(
        generator, classifier, w, batch_size=batch_size, device=torch_device, label="visualize", keep_images=True
    )
    titles = [f"set {v:.3g}\ngot {a:.3g}" for v, a in zip(values[0], encoded.r[:, unit], strict=True)]
    heading = f"unit {unit}, sample {sample} (class {int(latents['class'][sample])})"
    _save_figure(encoded.images, titles, heading, out)


def render_activation(run: Path, npy: Path, out: Path, device: str, batch_size: int) -> None:
    """Render activation vectors ([U] or [B, U] in a .npy file) through the run's link."""
    if not npy.exists():
        raise FileNotFoundError(f"{npy}: not found")
    r = np.load(npy, allow_pickle=False)
    r = r[None] if r.ndim == 1 else r
    link = load_link(_artifact(run, "link/model.pt"))
    if r.ndim != 2 or r.shape[1] != link.weight.shape[1]:
        units = link.weight.shape[1]
        raise ValueError(f"{npy}: expected activations [U] or [B, U] with U={units}, got shape {list(r.shape)}")
    if not np.isfinite(r).all():
        raise ValueError(f"{npy}: activations contain NaN or Inf")
    _, latent_attrs = read_zarr(_artifact(run, "latents.zarr"), [])
    torch_device = prepare_device(device)
    generator = load_generator(latent_attrs["generator"]).to(torch_device)
    with torch.no_grad():
        w = link(torch.from_numpy(r.astype(np.float32)))
    images = render_images(generator, w, batch_size=batch_size, device=torch_device)
    _save_figure(images, [f"row {k}" for k in range(len(images))], f"{npy.name} through the link", out)


def label(args: argparse.Namespace) -> str:
    """Render samples to paint into a labels folder, or (``--check``) read the painted maps back."""
    import yaml

    from pipeline.segmentation.labels import read_labels
    from pipeline.segmentation.train import render_for_labelling

    if args.check:
        labels = read_labels(args.out, args.parts or None)
        counts = np.bincount(labels.maps.ravel(), minlength=len(labels.part_names) + 1)
        fractions = ", ".join(
            f"{name} {c / counts.sum():.3f}" for name, c in zip(labels.part_names, counts[1:], strict=True)
        )
        return f"{args.out}: {len(labels.maps)} labelled renders {list(labels.maps.shape[1:])}; pixel share {fractions}"
    if args.configfile is None or not args.configfile.is_file():
        raise FileNotFoundError(f"--configfile: {args.configfile} not found; it names the generator to render")
    config = yaml.safe_load(args.configfile.read_text()) or {}
    if "generator" not in config:
        raise ValueError(f"{args.configfile}: key 'generator' missing")
    files = render_for_labelling(
        args.out,
        generator=config["generator"],
        classes=config.get("classes") or [0],
        truncation=float((config.get("samples") or {}).get("truncation", 1.0)),
        count=args.count,
        part_names=args.parts,
        seed=args.seed,
    )
    return f"{len(files)} renders to paint in {files[0].parent}; put their maps in {args.out / 'maps'}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run", type=Path, required=True, help="a run's results directory, e.g. results/default")
    common.add_argument("--out", type=Path, required=True, help="the PNG to write")
    common.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    common.add_argument("--batch-size", type=int, default=64, help="renders per generator call (default: 64)")

    strip = commands.add_parser("visualize", parents=[common], help="render a unit's tuning strip for one sample")
    strip.add_argument("--unit", type=int, required=True, help="the unit to sweep")
    strip.add_argument("--sample", type=int, required=True, help="row of latents.zarr ('sample' in tables)")
    strip.add_argument("--steps", type=int, default=5, help="images from the unit's low to high value (default: 5)")

    vector = commands.add_parser("render-activation", parents=[common], help="render activation vectors from a .npy")
    vector.add_argument("--npy", type=Path, required=True, help="float array [U] or [B, U]")

    labels = commands.add_parser(
        "label", help="render K samples into a labels folder to paint, or --check the painted maps"
    )
    labels.add_argument("--out", type=Path, required=True, help="the labels folder (docs/artifacts.md)")
    labels.add_argument("--configfile", type=Path, help="a run config naming the generator, classes and truncation")
    labels.add_argument("--count", type=int, default=16, help="renders to label (default: 16)")
    labels.add_argument("--parts", nargs="+", default=[], help="the part names, label 1 first")
    labels.add_argument("--seed", type=int, default=0, help="seed of the rendered latents (default: 0)")
    labels.add_argument("--check", action="store_true", help="read the painted maps back and summarise them")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "label":
            print(label(args))
            return 0
        if args.command == "visualize":
            visualize(args.run, args.unit, args.sample, args.steps, args.out, args.device, args.batch_size)
        else:
            render_activation(args.run, args.npy, args.out, args.device, args.batch_size)
    except (FileNotFoundError, ValueError, ModelSpecError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(args.out)
    return 0
