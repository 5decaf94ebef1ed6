"""Throughput of the shipped builtin generators (mapping + synthesis at truncation 0.7) in images per second.

The generators named take turns at each batch size in one run, so their ratio holds even
on a loaded machine; the load average before and after is printed with the figures.

Usage: python bench/generator_throughput.py [--names shapes-generator breeds-generator] [--batch-sizes 128 512]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from pipeline.device import set_threads
from pipeline.models.builtin import class_onehot, load_builtin

GENERATORS = ("shapes-generator", "breeds-generator")


@torch.no_grad()
def measure(generator: torch.nn.Module, batch_size: int, min_seconds: float) -> tuple[float, int]:
    """Render batches of ``batch_size`` for at least ``min_seconds``; return (images/s, batches)."""
    rng = torch.Generator().manual_seed(0)
    c = class_onehot(torch.arange(batch_size) % generator.c_dim, generator.c_dim)

    def render() -> None:
        generator.synthesis(generator.mapping(torch.randn(batch_size, generator.z_dim, generator=rng), c, 0.7))

    render()  # warm-up: allocator and kernels
    batches, start = 0, time.perf_counter()
    while True:
        render()
        batches += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return batches * batch_size / elapsed, batches


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", nargs="+", default=list(GENERATORS), choices=GENERATORS)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2, the CI machine's cores)")
    parser.add_argument("--min-seconds", type=float, default=5.0, help="time spent per generator and batch size")
    args = parser.parse_args(argv)

    set_threads(args.threads)
    generators = {name: load_builtin(name) for name in args.names}
    machine = platform.processor() or platform.machine()
    print(f"builtin generators at truncation 0.7; torch {torch.__version__}, {args.threads} thread(s)")
    print(f"of {os.cpu_count()} CPU(s), {machine}; load average (1, 5, 15 min) before: {load_average()}")
    print(f"{'generator':>18}  {'batch size':>10}  {'images/s':>10}  {'batches':>7}")
    for batch_size in args.batch_sizes:
        for name, generator in generators.items():
            rate, batches = measure(generator, batch_size, args.min_seconds)
            print(f"{name:>18}  {batch_size:>10}  {rate:>10,.0f}  {batches:>7}")
    print(f"load average (1, 5, 15 min) after: {load_average()}")


if __name__ == "__main__":
    main()
