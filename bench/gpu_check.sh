#!/usr/bin/env bash
# The prepared GPU check for the real-model adapters and the batched perturbation path.
# Its three steps are bounded by timeouts that add up to 5 minutes; from the repository root:
#
#   bash bench/gpu_check.sh                    # DEVICE=cuda by default
#   DEVICE=cpu BENCH_ARGS="--quick --units 4 --samples 4 --batch-size 16" bash bench/gpu_check.sh
#
# It installs nothing from the internet. Packages the device image lacks (zarr, numcodecs,
# donfig, crc32c) travel as wheels in .whl/ and are installed from there into a temporary
# folder. With STYLEGAN_CODE_DIR pointing at a StyleGAN3 or StyleGAN-XL checkout, that
# checkout's bias_act CUDA op is compiled through the adapter's patch and compared with its
# reference implementation. The last two lines are speedup_vs_paper_loop=<x> and
# fraction_of_bare_forward=<y>.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/gpu-check-site .whl/*.whl
  export PYTHONPATH=/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi

echo "== adapters on $DEVICE"
timeout 60 "$PYTHON" - "$DEVICE" <<'PYTHON'
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from pipeline.models import load_classifier, load_generator
from tests.stylegan_fixture.make_pickle import CODE_DIR, write_network_pickle

warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit's deprecation notices
device = torch.device(sys.argv[1])
images = torch.rand(8, 3, 256, 256, device=device)
resnet = load_classifier({"kind": "torchvision", "name": "resnet50", "weights": None}).to(device)
with torch.no_grad():
    r = resnet.features(images)
    maps = resnet.spatial_features(images)
    head_error = (resnet.head(r) - resnet.logits(images)).abs().max().item()
print(f"torchvision resnet50: r {tuple(r.shape)}, maps {tuple(maps.shape)}, head vs logits max error {head_error:.2e}")

try:
    import timm  # noqa: F401
except ImportError:
    print("timm: not installed, skipped")
else:
    model = load_classifier({"kind": "timm", "name": "resnet50"}).to(device)
    with torch.no_grad():
        print(f"timm resnet50: r {tuple(model.features(images).shape)}, head {model.head is not None}")

with tempfile.TemporaryDirectory() as folder:
    traced = Path(folder) / "traced.pt"
    body = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU()).eval()
    torch.jit.trace(body, torch.rand(1, 3, 32, 32)).save(str(traced))
    scripted = load_classifier({"kind": "torchscript", "path": str(traced), "input_size": 32}).to(device)
    with torch.no_grad():
        print(f"torchscript: r {tuple(scripted.features(images).shape)}")

    network = write_network_pickle(Path(folder) / "network.pkl")
    generator = load_generator({"kind": "stylegan_pkl", "path": str(network), "code_dir": str(CODE_DIR)}).to(device)
    z = torch.randn(4, generator.z_dim, device=device)
    c = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3], device=device), generator.c_dim).float()
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        out = generator.synthesis(generator.mapping(z, c, truncation_psi=0.7))
    fallbacks = [str(w.message) for w in caught if "reference implementation" in str(w.message)]
    print(f"stylegan_pkl fixture: images {tuple(out.shape)} {out.dtype}; fallback warnings: {len(fallbacks)}")
PYTHON

if [[ -n "${STYLEGAN_CODE_DIR:-}" && "$DEVICE" == cuda* ]]; then
  echo "== custom CUDA op of $STYLEGAN_CODE_DIR through the patch"
  timeout 90 "$PYTHON" - "$STYLEGAN_CODE_DIR" <<'PYTHON'
import sys
import time

import torch

sys.path.insert(0, sys.argv[1])
from torch_utils.ops import bias_act  # noqa: E402

from pipeline.models.adapters.stylegan import patch_custom_ops  # noqa: E402

print("patched:", ", ".join(patch_custom_ops()))
x = torch.randn(64, 512, 32, 32, device="cuda")
b = torch.randn(512, device="cuda")
started = time.perf_counter()
fast = bias_act.bias_act(x, b, act="lrelu")
torch.cuda.synchronize()
built = bias_act._plugin is not None
reference = bias_act.bias_act(x, b, act="lrelu", impl="ref")
error = (fast - reference).abs().max().item()
print(f"extension built and used: {built} ({time.perf_counter() - started:.0f} s); max error vs reference {error:.2e}")
PYTHON
fi

echo "== perturbation throughput on $DEVICE"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options
timeout 150 "$PYTHON" bench/paper_loop.py --device "$DEVICE" ${BENCH_ARGS:-}
