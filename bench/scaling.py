"""Is the perturbation stage's cost linear in units x samples x steps?

Runs the stage's work (sweep latents through a link, render and re-encode in batches with
object masks, then the image measures) on the default world at two sizes, once each after a
warm-up, and prints the seconds per render of both. With cost = fixed + per-render x renders,
the ratio of the per-render figures is 1 for a linear cost; a ratio above 1 means the
larger run paid more per render (memory pressure, a non-linear step), below 1 that a fixed
cost is being spread.

Usage: python bench/scaling.py [--device cpu] [--small 16,8,3] [--large 64,16,6] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from pipeline.device import resolve_device, set_threads
from pipeline.measures import measure_sweeps
from pipeline.models import load_classifier, load_generator
from pipeline.stages.common import render_and_encode, synthesize
from pipeline.stages.link import AffineLink
from pipeline.stages.perturb import sweep_latents, sweep_values

CLASSIFIER = {"kind": "builtin", "name": "shapes-classifier"}
GENERATOR = {"kind": "builtin", "name": "shapes-generator"}


def size(text: str) -> tuple[int, int, int]:
    units, samples, steps = (int(part) for part in text.split(","))
    return units, samples, steps


def perturbation_seconds(classifier, generator, link, r, classes, units, steps, *, batch_size, device) -> float:
    """Wall seconds for the perturbation stage's work on ``units`` over the base samples ``r``."""
    low, high = r[:, units].min(0).values.numpy(), r[:, units].max(0).values.numpy()
    started = time.perf_counter()
    values = torch.from_numpy(sweep_values(low, high, steps))
    w = sweep_latents(link, r, units, values)  # [K, P, S, w_dim]
    k, p = len(units), len(r)
    mask_classes = np.broadcast_to(classes[None, :, None], (k, p, steps)).reshape(-1)
    encoded = render_and_encode(
        generator, classifier, w.reshape(-1, w.shape[-1]), batch_size=batch_size, device=device,
        label="scaling", keep_images=True, mask_classes=torch.from_numpy(np.ascontiguousarray(mask_classes)),
    )  # fmt: skip
    height, width = encoded.images.shape[1:3]
    measure_sweeps(
        encoded.images.reshape(k * p, steps, height, width, 3), encoded.masks.reshape(k * p, steps, height, width)
    )
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--small", type=size, default=(16, 8, 3), help="units,samples,steps")
    parser.add_argument("--large", type=size, default=(64, 16, 6), help="units,samples,steps")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    set_threads(args.threads)
    device = resolve_device(args.device)
    classifier = load_classifier(CLASSIFIER).to(device)
    generator = load_generator(GENERATOR).to(device)
    samples = max(args.small[1], args.large[1])
    classes = np.arange(samples) % 5
    z = torch.randn(samples, generator.z_dim, generator=torch.Generator().manual_seed(0)).to(device)
    c = torch.nn.functional.one_hot(torch.from_numpy(classes), generator.c_dim).float().to(device)
    with torch.no_grad():
        w = generator.mapping(z, c, truncation_psi=0.7)[:, 0]
        r = classifier.features(synthesize(generator, w)).cpu()
    # Throughput does not depend on how well the link fits; a random one near the samples' w will do.
    weight = torch.randn(generator.w_dim, classifier.num_units, generator=torch.Generator().manual_seed(1))
    weight /= classifier.num_units
    link = AffineLink(weight, w.cpu().mean(0) - r.mean(0) @ weight.T)

    def run(units: int, n_samples: int, steps: int) -> float:
        return perturbation_seconds(
            classifier, generator, link, r[:n_samples], classes[:n_samples], list(range(units)), steps,
            batch_size=args.batch_size, device=device,
        )  # fmt: skip

    run(*args.small)  # warm-up: first calls pay for allocations and thread pools
    figures = {}
    for name, (units, n_samples, steps) in (("small", args.small), ("large", args.large)):
        seconds = run(units, n_samples, steps)
        renders = units * n_samples * steps
        figures |= {
            f"{name}_size": f"{units}x{n_samples}x{steps}",
            f"{name}_renders": renders,
            f"{name}_seconds": round(seconds, 3),
            f"{name}_ms_per_render": round(1000 * seconds / renders, 4),
        }
    figures["renders_ratio"] = figures["large_renders"] / figures["small_renders"]
    figures["seconds_ratio"] = round(figures["large_seconds"] / figures["small_seconds"], 3)
    figures["per_render_cost_ratio"] = round(figures["large_ms_per_render"] / figures["small_ms_per_render"], 3)
    print(f"device={device} ({platform.processor() or 'cpu'}), torch {torch.__version__}, threads {args.threads}")
    for key, value in figures.items():
        print(f"{key}={value}")


if __name__ == "__main__":
    main()
