"""Throughput of the world renderers (``pipeline.world.sample``) in images per second.

Every world named is timed in the same run, so their ratio holds even on a loaded machine;
the load average before and after is printed with the figures.

Usage: python bench/world_throughput.py [--worlds shapes breeds] [--batch-sizes 256 1024 4096] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

import pipeline.world as world
from pipeline.device import set_threads


def measure(world_name: str, batch_size: int, image_size: int, min_seconds: float, seed: int) -> tuple[float, int]:
    """Render batches of ``batch_size`` for at least ``min_seconds``; return (images/s, batches)."""
    world.sample(batch_size, seed, image_size=image_size, world=world_name)  # warm-up: allocator and kernels
    batches, start = 0, time.perf_counter()
    while True:
        world.sample(batch_size, seed + 1 + batches, image_size=image_size, world=world_name)
        batches += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return batches * batch_size / elapsed, batches


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", default=list(world.WORLDS), choices=world.WORLDS)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--image-size", type=int, default=world.IMAGE_SIZE)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2, the CI machine's cores)")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="time spent per world and batch size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    set_threads(args.threads)
    classes = ", ".join(f"{name} {len(world.class_names(name))}" for name in args.worlds)
    print(f"world renderers, {args.image_size}x{args.image_size} RGB; classes: {classes}")
    machine = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {args.threads} thread(s) of {os.cpu_count()} CPU(s), {machine}")
    print(f"load average (1, 5, 15 min) before: {load_average()}")
    print(f"{'world':>8}  {'batch size':>10}  {'images/s':>10}  {'batches':>7}")
    # Worlds take turns at each batch size, so a change of load falls on both alike.
    for batch_size in args.batch_sizes:
        for world_name in args.worlds:
            rate, batches = measure(world_name, batch_size, args.image_size, args.min_seconds, args.seed)
            print(f"{world_name:>8}  {batch_size:>10}  {rate:>10,.0f}  {batches:>7}")
    print(f"load average (1, 5, 15 min) after: {load_average()}")


if __name__ == "__main__":
    main()
