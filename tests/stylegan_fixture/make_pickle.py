"""Write tiny network pickles the way StyleGAN2-ADA, StyleGAN3 and StyleGAN-XL do."""

import copy
import pickle
import sys
from pathlib import Path

import torch

FIXTURE = Path(__file__).resolve().parent
CODE_DIR = FIXTURE / "code"
DISCRIMINATOR_ONLY = FIXTURE / "discriminator_only"
_FIXTURE_PACKAGES = ("dnnlib", "torch_utils", "training", "pg_modules")


def write_network_pickle(
    path,
    *,
    c_dim=4,
    per_class_w_avg=True,
    with_discriminator=True,
    with_g_ema=True,
    discriminator_as_g_ema=False,
    z_dim=8,
    w_dim=8,
    img_resolution=16,
    seed=0,
):
    """Pickle ``{G, D, G_ema, training_set_kwargs}`` to ``path`` and return ``path``.

    ``w_avg`` is filled with distinct values per class (or one global value) so that
    truncation toward it can be told apart from truncation toward zero. The fixture's
    modules are imported only while pickling and removed from ``sys.modules`` afterwards,
    so loading has to find them through the adapter's ``code_dir``.
    ``discriminator_as_g_ema`` stores the discriminator under ``G_ema``: a G_ema that
    needs a module the loading environment lacks.
    """
    sys.path[:0] = [str(CODE_DIR), str(DISCRIMINATOR_ONLY)]
    try:
        from training.networks_tiny import Generator

        torch.manual_seed(seed)
        generator = Generator(z_dim, c_dim, w_dim, img_resolution, per_class_w_avg=per_class_w_avg).eval()
        generator.mapping.w_avg.copy_(torch.randn_like(generator.mapping.w_avg))
        data = {"G": generator, "training_set_kwargs": {"resolution": img_resolution, "use_labels": c_dim > 0}}
        if with_g_ema:
            data["G_ema"] = copy.deepcopy(generator)
        if with_discriminator or discriminator_as_g_ema:
            from training.networks_disc import Discriminator

            data["G_ema" if discriminator_as_g_ema else "D"] = Discriminator()
        with open(path, "wb") as handle:
            pickle.dump(data, handle)
    finally:
        for entry in (str(CODE_DIR), str(DISCRIMINATOR_ONLY)):
            sys.path.remove(entry)
        forget_fixture_modules()
    return Path(path)


def forget_fixture_modules():
    """Drop the fixture's packages and the modules rebuilt from pickled source."""
    for name in list(sys.modules):
        top = name.split(".")[0]
        if top in _FIXTURE_PACKAGES or top.startswith("_persistent_module_"):
            del sys.modules[name]
