"""Build StyleGAN-XL's ImageNet generator with random weights, for the throughput benchmark.

No pretrained network can be downloaded where the benchmark runs, so this builds the
architecture from a checkout of the StyleGAN-XL repository the way its progressive training
does: a 16×16 stem with ``train.py``'s ImageNet settings (``--cfg stylegan3-t --syn_layers 10``,
channel base and maximum doubled for XL, z 64, w 512, 1,000 classes), then one
superresolution stage per doubling (``--superres --up_factor 2 --head_layers 7``). Each stage
is pickled, because the next one loads its stem from a pickle. At 256×256 the generator has
233 M parameters and 32 ws, as the published ImageNet-256 network does.

Usage: python bench/stylegan_xl_random.py CODE_DIR OUT_DIR [--resolution 256]

CODE_DIR is a StyleGAN-XL checkout (its mapping network reads
``in_embeddings/tf_efficientnet_lite0.pkl`` from it, which needs ``dill``); the last line
printed is the pickle to pass as ``{"kind": "stylegan_pkl", "path": ..., "code_dir": CODE_DIR}``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from pathlib import Path

STEM_RESOLUTION = 16
STEM_KWARGS = {
    "z_dim": 64,
    "c_dim": 1000,
    "w_dim": 512,
    "img_channels": 3,
    "mapping_kwargs": {"num_layers": 2, "rand_embedding": False},
    "channel_base": 2 * 32768,
    "channel_max": 2 * 512,
    "conv_kernel": 3,
    "use_radial_filters": False,
    "num_layers": 10,
    "magnitude_ema_beta": 0.5 ** (2048 / 20e3),
}
HEAD_LAYERS = 7


def build(code_dir: Path, out_dir: Path, resolution: int, seed: int = 0) -> Path:
    """Pickle every stage up to ``resolution`` into ``out_dir``; return the last one's path."""
    if resolution < STEM_RESOLUTION or resolution & (resolution - 1):
        raise ValueError(f"--resolution: a power of two from {STEM_RESOLUTION}, got {resolution}")
    out_dir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(code_dir))
    os.chdir(code_dir)  # the class embedding is read from a path relative to the checkout
    import torch
    from training.networks_stylegan3_resetting import Generator, SuperresGenerator

    torch.manual_seed(seed)
    generator = Generator(img_resolution=STEM_RESOLUTION, **STEM_KWARGS).eval()
    size, path = STEM_RESOLUTION, out_dir / f"stylegan-xl-{STEM_RESOLUTION}.pkl"
    while True:
        # The superresolution stage loads its stem through the repository's legacy loader, which wants G too.
        path.write_bytes(pickle.dumps({"G": generator, "G_ema": generator}))
        if size == resolution:
            break
        size *= 2
        generator = SuperresGenerator(img_resolution=size, path_stem=str(path), head_layers=HEAD_LAYERS, up_factor=2)
        generator = generator.eval()
        path = out_dir / f"stylegan-xl-{size}.pkl"
    parameters = sum(p.numel() for p in generator.parameters())
    print(f"{size}x{size}: {parameters / 1e6:.0f} M parameters, {generator.num_ws} ws")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("code_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    print(build(args.code_dir.resolve(), args.out_dir.resolve(), args.resolution))


if __name__ == "__main__":
    main()
