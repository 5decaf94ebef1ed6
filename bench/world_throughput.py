"""Throughput of the shapes-world renderer (``pipeline.world.sample``) in images per second.

Usage: python bench/world_throughput.py [--batch-sizes 256 1024 4096] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

import pipeline.world as world
from pipeline.device import set_threads


def measure(batch_size: int, image_size: int, min_seconds: float, seed: int) -> tuple[float, int]:
    """Render batches of ``batch_size`` for at least ``min_seconds``; return (images/s, batches)."""
    world.sample(batch_size, seed, image_size=image_size)  # warm-up: allocator and kernels
    batches, start = 0, time.perf_counter()
    while True:
        world.sample(batch_size, seed + 1 + batches, image_size=image_size)
        batches += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return batches * batch_size / elapsed, batches


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--image-size", type=int, default=world.IMAGE_SIZE)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2, the CI machine's cores)")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="time spent per batch size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    set_threads(args.threads)
    print(f"shapes-world renderer, {args.image_size}x{args.image_size} RGB, {len(world.SHAPES)} classes")
    machine = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {args.threads} thread(s) of {os.cpu_count()} CPU(s), {machine}")
    print(f"{'batch size':>10}  {'images/s':>10}  {'batches':>7}")
    for batch_size in args.batch_sizes:
        rate, batches = measure(batch_size, args.image_size, args.min_seconds, args.seed)
        print(f"{batch_size:>10}  {rate:>10,.0f}  {batches:>7}")


if __name__ == "__main__":
    main()
