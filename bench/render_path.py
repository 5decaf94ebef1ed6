"""Renders per second of the perturb path on the breeds world: generator, part segmenter and re-encode.

Times :func:`pipeline.stages.common.render_and_encode` on sweep-like latents of the builtin
breeds models with a segmenter trained on the world's own part maps, two ways in turns (so
their ratio holds on a loaded machine): as it runs now, the segmenter in channels-last passes
of ``pipeline.segmentation.model.CPU_CHUNK`` renders and the classifier in passes of
``pipeline.stages.common.CLASSIFIER_CPU_CHUNK``, and as it ran before, each in one pass over
the whole batch (the segmenter with contiguous weights). It checks that both give the same
images, label maps and activations, then times the new path as the workflow could run it on two cores: one job of
two threads, or two jobs of one thread side by side (separate processes started together).

Usage: python bench/render_path.py [--renders 2048] [--batch 512] [--rounds 3] [--segmenter model.pt]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.device import set_threads
from pipeline.models import load_classifier, load_generator
from pipeline.models.builtin import class_onehot
from pipeline.segmentation import GeneratorSegmenter, train_segmenter, world_labels
from pipeline.stages import common

GENERATOR = {"kind": "builtin", "name": "breeds-generator"}
CLASSIFIER = {"kind": "builtin", "name": "breeds-classifier"}
CLASSES = [0, 1, 2, 3, 4, 5]


class OnePassSegmenter:
    """The segmenter as it ran before: its classifier over the whole batch at once, contiguous."""

    def __init__(self, segmenter: GeneratorSegmenter):
        self.segmenter = segmenter
        self.model = segmenter.model
        self.part_names = segmenter.part_names

    @torch.no_grad()
    def label_maps(self, image_size: tuple[int, int]) -> torch.Tensor:
        contiguous = self.model.to(memory_format=torch.contiguous_format)
        scores = contiguous(self.segmenter.features.take())
        self.model.to(memory_format=torch.channels_last)
        scores = F.interpolate(scores, size=tuple(image_size), mode="bilinear", align_corners=False)
        return scores.argmax(dim=1).to(torch.uint8)


def trained_segmenter(folder: Path) -> Path:
    """A segmenter on 16 world-labelled renders; its quality does not change its cost."""
    world_labels(folder / "labels", generator=GENERATOR, classes=CLASSES, truncation=0.7, count=16, seed=1)
    settings = {
        "parts": [],
        "train": 16,
        "held_out": 0,
        "size": 64,
        "width": 16,
        "epochs": 40,
        "lr": 0.01,
        "weight_decay": 1e-3,
        "seed": 0,
        "batch_size": 64,
    }
    train_segmenter(
        folder / "model.pt",
        folder / "metrics.json",
        labels_dir=folder / "labels",
        generator=GENERATOR,
        segmentation=settings,
        device="cpu",
    )
    return folder / "model.pt"


def sweep_latents(generator: torch.nn.Module, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents [count, w_dim] of the default classes at truncation 0.7, each nudged along a random
    direction in three steps as a sweep moves them, and their classes."""
    rng = torch.Generator().manual_seed(0)
    classes = torch.arange(count // 3 + 1).repeat_interleave(3)[:count] % len(CLASSES)
    with torch.no_grad():
        w = generator.mapping(
            torch.randn(count, generator.z_dim, generator=rng), class_onehot(classes, generator.c_dim), 0.7
        )[:, 0]
    steps = torch.arange(count) % 3
    return w + 0.5 * steps[:, None] * torch.randn(count, w.shape[1], generator=rng), classes


def encode(generator, classifier, segmenter, w, classes, batch: int):
    started = time.perf_counter()
    encoded = common.render_and_encode(
        generator,
        classifier,
        w,
        batch_size=batch,
        device=torch.device("cpu"),
        label="bench",
        keep_images=True,
        mask_classes=classes,
        segmenter=segmenter,
    )
    return len(w) / (time.perf_counter() - started), encoded


def _job(model_path: Path, renders: int, batch: int, threads: int, start: Any, queue: Any) -> None:
    set_threads(threads)
    generator, classifier = load_generator(GENERATOR), load_classifier(CLASSIFIER)
    w, classes = sweep_latents(generator, renders)
    with GeneratorSegmenter(generator, model_path, torch.device("cpu")) as segmenter:
        encode(generator, classifier, segmenter, w[:batch], classes[:batch], batch)  # warm-up
        start.wait()
        started = time.perf_counter()
        encode(generator, classifier, segmenter, w, classes, batch)
        queue.put((started, time.perf_counter()))


def jobs_rate(model_path: Path, renders: int, batch: int, jobs: int, threads: int) -> float:
    """Renders/s of ``jobs`` processes of ``threads`` threads each rendering ``renders``, started together."""
    context = multiprocessing.get_context("spawn")
    start, queue = context.Barrier(jobs), context.Queue()
    processes = [
        context.Process(target=_job, args=(model_path, renders, batch, threads, start, queue)) for _ in range(jobs)
    ]
    for process in processes:
        process.start()
    spans = [queue.get() for _ in processes]
    for process in processes:
        process.join()
    return jobs * renders / (max(end for _, end in spans) - min(begin for begin, _ in spans))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renders", type=int, default=2048, help="renders per timing (default: 2048)")
    parser.add_argument("--batch", type=int, default=512, help="the rule's tuning.batch_size (default: 512)")
    parser.add_argument("--rounds", type=int, default=3, help="turns of each way (default: 3)")
    parser.add_argument(
        "--segmenter", type=Path, default=None, help="a trained segmentation/model.pt (default: train one)"
    )
    args = parser.parse_args()
    set_threads(2)
    model_path = args.segmenter or trained_segmenter(Path(tempfile.mkdtemp(prefix="render-path-bench-")))
    generator, classifier = load_generator(GENERATOR), load_classifier(CLASSIFIER)
    w, classes = sweep_latents(generator, args.renders)
    print(f"load average before: {os.getloadavg()[0]:.2f}; {args.renders} renders per timing, batches of {args.batch}")

    with GeneratorSegmenter(generator, model_path, torch.device("cpu")) as segmenter:
        # (segmenter, renders per classifier pass)
        ways = {
            "one pass each (before)": (OnePassSegmenter(segmenter), args.batch),
            "passes (now)": (segmenter, common.CLASSIFIER_CPU_CHUNK),
        }
        rates: dict[str, list[float]] = {name: [] for name in ways}
        outputs = {}
        for _ in range(args.rounds):
            for name, (way, classifier_chunk) in ways.items():
                common.CLASSIFIER_CPU_CHUNK = classifier_chunk
                rate, outputs[name] = encode(generator, classifier, way, w, classes, args.batch)
                rates[name].append(rate)
        before, now = (outputs[name] for name in ways)
        differing = int((before.masks != now.masks).sum())
        same_images = bool((before.images == now.images).all())
        print(
            f"same results: label pixels differing {differing} of {before.masks.size}, "
            f"max |r difference| {abs(before.r - now.r).max():.3g}, images equal {same_images}"
        )
        best = {name: max(values) for name, values in rates.items()}
        for name, rate in best.items():
            print(f"2 threads, segmenter and classifier in {name}: {rate:.0f} renders/s (best of {args.rounds})")
        print(f"speedup_now_over_before={best[list(ways)[1]] / best[list(ways)[0]]:.2f}")

    # Two-thread job vs two one-thread jobs, each way the same total of renders, in turns.
    side_by_side = {"one job of 2 threads": (1, 2), "two jobs of 1 thread": (2, 1)}
    totals: dict[str, list[float]] = {name: [] for name in side_by_side}
    for _ in range(args.rounds):
        for name, (jobs, threads) in side_by_side.items():
            totals[name].append(jobs_rate(model_path, args.renders // jobs, args.batch, jobs, threads))
    for name, values in totals.items():
        print(f"{name}: {max(values):.0f} renders/s together (best of {args.rounds})")
    ratio = max(totals["two jobs of 1 thread"]) / max(totals["one job of 2 threads"])
    print(f"two_one_thread_jobs_over_one_two_thread_job={ratio:.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
