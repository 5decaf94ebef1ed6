"""The part segmenter on the default world: held-out IoU, training time, and its cost per render.

Writes a labels folder from the world's own part maps (``--seed``), trains the segmenter on
its first K renders with the config's defaults, scores the rest, then times one batch of
renders three ways in one process: rendering and classifying, the classifier-saliency
object masks, and the segmenter's label maps from the same synthesis.

Usage: python bench/segmentation.py [--seed 1] [--width 16] [--threads 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from pipeline.device import set_threads
from pipeline.measures import object_masks
from pipeline.models import load_classifier, load_generator
from pipeline.segmentation import GeneratorSegmenter, train_segmenter, world_labels

GENERATOR = {"kind": "builtin", "name": "shapes-generator"}
CLASSIFIER = {"kind": "builtin", "name": "shapes-classifier"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="seed of the labelled latents (default: 1)")
    parser.add_argument("--train", type=int, default=16)
    parser.add_argument("--held-out", type=int, default=256)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch", type=int, default=512, help="renders timed at once (default: 512)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="where labels and model go (default: a temp dir)")
    args = parser.parse_args()
    set_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="segmentation-bench-"))
    world_labels(
        out / "labels",
        generator=GENERATOR,
        classes=[0, 1, 2, 3, 4],
        truncation=0.7,
        count=args.train + args.held_out,
        seed=args.seed,
    )
    settings = {
        "parts": [],
        "train": args.train,
        "held_out": args.held_out,
        "size": 128,
        "width": args.width,
        "epochs": 100,
        "lr": args.lr,
        "weight_decay": 1e-3,
        "seed": 0,
        "batch_size": 64,
    }
    record = train_segmenter(
        out / "model.pt",
        out / "metrics.json",
        labels_dir=out / "labels",
        generator=GENERATOR,
        segmentation=settings,
        device="cpu",
    )
    print(f"K={record['train']} held_out={record['held_out']} mean_iou={record['mean_iou']:.4f}")
    print(f"train_seconds={record['train_seconds']:.1f}")

    generator, classifier = load_generator(GENERATOR), load_classifier(CLASSIFIER)
    z = torch.randn(args.batch, generator.z_dim, generator=torch.Generator().manual_seed(0))
    ws = generator.mapping(z, torch.eye(generator.c_dim)[torch.arange(args.batch) % 5], truncation_psi=0.7)
    with torch.no_grad(), GeneratorSegmenter(generator, out / "model.pt", torch.device("cpu")) as segmenter:
        started = time.perf_counter()
        images = (generator.synthesis(ws) + 1) / 2
        classifier.features(images)
        render_seconds = time.perf_counter() - started
        started = time.perf_counter()
        object_masks(classifier, images, torch.zeros(args.batch, dtype=torch.int64))
        saliency_seconds = time.perf_counter() - started
        started = time.perf_counter()
        segmenter.label_maps(images.shape[-2:])
        segment_seconds = time.perf_counter() - started
    print(
        f"{args.batch} renders: render+classify {render_seconds:.2f} s, saliency masks {saliency_seconds:.2f} s, "
        f"segmenter {segment_seconds:.2f} s"
    )
    print(f"segmenter_over_saliency={segment_seconds / saliency_seconds:.2f}")
    print(f"segmenter_over_render={segment_seconds / render_seconds:.2f}")


if __name__ == "__main__":
    main()
