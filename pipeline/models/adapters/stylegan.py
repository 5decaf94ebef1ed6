"""``kind: stylegan_pkl``: G_ema from a StyleGAN2-ADA, StyleGAN3 or StyleGAN-XL network pickle.

Spec::

    {kind: stylegan_pkl, path: networks/imagenet256.pkl, code_dir: external/stylegan-xl,
     noise_mode: const, force_fp32: true, class_average_truncation: true,
     class_average_samples: 10000, custom_ops: true}

Those pickles rebuild their networks from source code stored inside the pickle, which
imports ``dnnlib`` and ``torch_utils`` from the repository that trained them. ``code_dir``
is a checkout of that repository; it is put on ``sys.path`` only while the pickle loads and
is never copied into this project.

Unpickling runs code. Load pickles only from paths in your own config; the sha256 of every
pickle is logged when it loads, and the workflow hashes it as a rule parameter.

Published StyleGAN-XL pickles also hold the discriminator, pickled by reference to modules
(``pg_modules``, ``feature_networks``, timm 0.4.12 classes) that newer environments cannot
import. The unpickler here stands in a placeholder for anything that fails to import, then
checks that none of the placeholders ended up inside G_ema: the discriminator may be
broken, the generator may not.

The custom CUDA ops of these repositories import the compiled extension by name after
``torch.utils.cpp_extension.load``, which fails on recent PyTorch. ``patch_custom_ops``
makes that import find the module ``load`` returned; where the extension still cannot be
built, the ops fall back to their reference implementation with a warning. On the CPU the
reference implementation is the only one, so nothing changes there.
"""

from __future__ import annotations

import importlib
import io
import logging
import pickle
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from pipeline.models.registry import ModelSpecError, file_sha256, register_generator

log = logging.getLogger(__name__)

_SPEC_KEYS = {
    "kind",
    "path",
    "code_dir",
    "noise_mode",
    "force_fp32",
    "class_average_truncation",
    "class_average_samples",
    "custom_ops",
}
_NOISE_MODES = ("const", "none", "random")
_CODE_PACKAGES = ("dnnlib", "torch_utils")
_PATCHED = "_pipeline_patched"


class StyleGANGenerator(torch.nn.Module):
    """A StyleGAN G_ema seen through the Generator protocol.

    ``mapping`` applies truncation toward the average w of each sample's class. StyleGAN-XL
    tracks that average per class in ``mapping.w_avg`` [c_dim, w_dim]. StyleGAN2-ADA and
    StyleGAN3 track a single average over all classes; for a conditional one of those, the
    class average is computed once per class by mapping ``class_average_samples`` seeded z
    vectors of that class and averaging them, then cached. With
    ``class_average_truncation=False`` the network's own truncation is used unchanged.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        noise_mode: str = "const",
        force_fp32: bool = True,
        class_average_truncation: bool = True,
        class_average_samples: int = 10_000,
    ) -> None:
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        self.z_dim = int(network.z_dim)
        self.c_dim = int(network.c_dim)
        self.w_dim = int(network.w_dim)
        self.num_ws = int(network.num_ws)
        self.img_resolution = int(getattr(network, "img_resolution", 0)) or None
        self.noise_mode = noise_mode
        self.force_fp32 = force_fp32
        self.class_average_truncation = class_average_truncation
        self.class_average_samples = class_average_samples
        self._sampled_centres: dict[int, torch.Tensor] = {}

    def mapping(self, z: torch.Tensor, c: torch.Tensor | None, truncation_psi: float = 1.0) -> torch.Tensor:
        """z [B, z_dim], one-hot c [B, c_dim] (None if unconditional) -> ws [B, num_ws, w_dim].

        Truncation moves each w toward the average w of its class.
        """
        if c is None:
            if self.c_dim:
                raise ValueError(f"generator: a conditional generator (c_dim {self.c_dim}) needs one-hot classes c")
            c = z.new_zeros(z.shape[0], 0)
        if not self.class_average_truncation:
            with _own_precision(z):
                return self.network.mapping(z.float(), c.float(), truncation_psi=truncation_psi)
        with _own_precision(z):
            ws = self.network.mapping(z.float(), c.float(), truncation_psi=1.0)
        if truncation_psi == 1:
            return ws
        centres = self.class_centres(c).to(ws.dtype).unsqueeze(1)
        return centres + truncation_psi * (ws - centres)

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """ws [B, num_ws, w_dim] -> float32 images [B, 3, H, W], nominally in [-1, 1] (not clamped)."""
        with _own_precision(ws):
            images = self.network.synthesis(ws.float(), noise_mode=self.noise_mode, force_fp32=self.force_fp32)
        return images.float()

    def class_centres(self, c: torch.Tensor) -> torch.Tensor:
        """The average w [B, w_dim] of each row's class (one-hot ``c``); the global average if unconditional."""
        w_avg = getattr(self.network.mapping, "w_avg", None)
        if self.c_dim == 0:
            centre = w_avg if w_avg is not None else self._sampled_centre(None, c.device)
            return centre.reshape(1, self.w_dim).expand(c.shape[0], self.w_dim)
        labels = c.argmax(dim=1)
        if w_avg is not None and w_avg.ndim == 2 and w_avg.shape[0] == self.c_dim:
            return w_avg[labels]
        classes, rows = labels.unique(return_inverse=True)
        return torch.stack([self._sampled_centre(int(label), c.device) for label in classes.tolist()])[rows]

    @torch.no_grad()
    def _sampled_centre(self, label: int | None, device: torch.device) -> torch.Tensor:
        key = -1 if label is None else label
        if key not in self._sampled_centres:
            # Seeded per class, so every process computes the same centre for a class.
            generator = torch.Generator().manual_seed(key + 1)
            total = torch.zeros(self.w_dim, dtype=torch.float64)
            for start in range(0, self.class_average_samples, 4096):
                n = min(4096, self.class_average_samples - start)
                z = torch.randn(n, self.z_dim, generator=generator).to(device)
                c = torch.zeros(n, self.c_dim, device=device)
                if label is not None:
                    c[:, label] = 1
                ws = self.network.mapping(z, c, truncation_psi=1.0)
                total += ws[:, 0].double().sum(dim=0).cpu()
            self._sampled_centres[key] = (total / self.class_average_samples).float()
        return self._sampled_centres[key].to(device)


def check_class_ids(generator: Any, classes: Any) -> None:
    """Fail with one line when a class id cannot be fed to ``generator`` (id < 0 or >= c_dim).

    An unconditional generator (c_dim 0) takes no class; there the ids refer to the
    classifier only, and any id passes.
    """
    c_dim = int(generator.c_dim)
    if c_dim == 0:
        return
    for class_id in classes:
        if isinstance(class_id, bool) or not isinstance(class_id, int):
            raise ModelSpecError(f"classes: class ids must be integers, got {class_id!r}")
        if not 0 <= class_id < c_dim:
            raise ModelSpecError(f"classes: class id {class_id} is not below the generator's c_dim {c_dim}")


def _own_precision(tensor: torch.Tensor) -> AbstractContextManager:
    """Run a StyleGAN network outside any enclosing autocast.

    StyleGAN picks each layer's precision itself (its fp16 layers, unless ``force_fp32``),
    and StyleGAN3's and StyleGAN-XL's layers assert the dtype they picked, which autocast
    would change. The run's ``precision`` therefore applies to the classifier; a StyleGAN
    generator runs reduced precision through ``force_fp32: false``.
    """
    return torch.autocast(tensor.device.type, enabled=False)


class _Unresolved:
    """Placeholder for a class or function of the pickle that could not be imported.

    It accepts whatever the unpickler hands it (construction arguments, state, list and
    dict items) and keeps none of it: placeholders are only allowed outside G_ema.
    """

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _Unresolved:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


class _TolerantUnpickler(pickle.Unpickler):
    """Unpickles a network pickle, replacing whatever cannot be imported by placeholders.

    Storages are mapped to the CPU so pickles saved on a GPU load anywhere. Failures are
    recorded per placeholder in ``failures``, and import errors in ``import_failures``, so
    that a broken G_ema can be explained.
    """

    def __init__(self, file: io.BufferedIOBase) -> None:
        super().__init__(file)
        self.failures: dict[str, str] = {}
        self.import_failures: set[str] = set()
        self._placeholders: dict[str, type[_Unresolved]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch.storage" and name == "_load_from_bytes":
            return _storage_on_cpu
        try:
            found = super().find_class(module, name)
        except Exception as error:
            return self._placeholder(f"{module}.{name}", error)
        if module == "torch_utils.persistence" and name == "_reconstruct_persistent_obj":
            return self._tolerant_reconstruct(found)
        return found

    def _tolerant_reconstruct(self, reconstruct: Callable[[Any], Any]) -> Callable[[Any], Any]:
        # A persistent class re-executes its module's source, which may import modules that
        # only the discriminator needs (pg_modules, timm); such a failure must not end the load.
        def rebuild(meta: Any) -> Any:
            try:
                return reconstruct(meta)
            except Exception as error:
                class_name = meta.get("class_name", "?") if isinstance(meta, Mapping) else "?"
                return self._placeholder(f"persistent class {class_name}", error)()

        return rebuild

    def _placeholder(self, qualified_name: str, error: Exception) -> type[_Unresolved]:
        self.failures.setdefault(qualified_name, f"{type(error).__name__}: {error}")
        if isinstance(error, ImportError):
            self.import_failures.add(f"{type(error).__name__}: {error}")
        if qualified_name not in self._placeholders:
            self._placeholders[qualified_name] = type(
                qualified_name.rpartition(".")[2], (_Unresolved,), {"qualified_name": qualified_name}
            )
        return self._placeholders[qualified_name]


def _storage_on_cpu(data: bytes) -> Any:
    # Pickled storages use torch's legacy serialisation; weights_only would add no safety here,
    # since the surrounding pickle runs code anyway.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def unresolved_parts(root: Any) -> list[str]:
    """Qualified names of every placeholder reachable from ``root`` (modules, containers, attributes)."""
    found: set[str] = set()
    seen: set[int] = set()
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, (torch.Tensor, str, bytes, int, float, bool, type(None))):
            continue
        seen.add(id(item))
        if isinstance(item, _Unresolved) or (isinstance(item, type) and issubclass(item, _Unresolved)):
            found.add(item.qualified_name)
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, torch.nn.Module) or (
            hasattr(item, "__dict__") and not isinstance(item, (type, ModuleType)) and not callable(item)
        ):
            # Modules hold their children in _modules, their tensors in _parameters and _buffers.
            stack.extend(vars(item).values())
    return sorted(found)


@contextmanager
def code_dir_on_path(code_dir: Path) -> Iterator[None]:
    """Make ``code_dir``'s packages importable for the duration of the block only."""
    entry = str(code_dir)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        if entry in sys.path:
            sys.path.remove(entry)


def _check_code_dir(code_dir: Any) -> Path:
    if not code_dir:
        raise ModelSpecError("generator.code_dir: missing; give the checkout of the repository that trained the pickle")
    code_dir = Path(code_dir).expanduser().resolve()
    if not code_dir.is_dir():
        raise ModelSpecError(f"generator.code_dir: {code_dir} does not exist; clone the StyleGAN repository there")
    if not (code_dir / "torch_utils" / "persistence.py").is_file():
        raise ModelSpecError(
            f"generator.code_dir: {code_dir} has no torch_utils/persistence.py; "
            "point it at a StyleGAN2-ADA, StyleGAN3 or StyleGAN-XL checkout"
        )
    for package in _CODE_PACKAGES:
        loaded = sys.modules.get(package)
        origin = getattr(loaded, "__file__", None)
        if origin is not None and not Path(origin).resolve().is_relative_to(code_dir):
            raise ModelSpecError(
                f"generator.code_dir: {package} is already imported from {Path(origin).parent.parent} in this "
                f"process; load pickles of one code_dir per process"
            )
    return code_dir


STYLEGAN_EXTRA = "pip install -e '.[stylegan]'"
_INSTALL_HINTS = {
    "distutils": "Python >= 3.12 removed distutils, which their dnnlib imports: pip install setuptools",
    "pkg_resources": "setuptools >= 82 has no pkg_resources, which StyleGAN3's ops import: pip install 'setuptools<82'",
    "dill": "StyleGAN-XL writes its pickles with dill: pip install dill",
    "timm": "StyleGAN-XL's networks import timm: pip install timm",
    "requests": "their dnnlib imports requests: pip install requests",
}


def _install_hint(message: str) -> str:
    """Advice for the import failures that the StyleGAN repositories' code is known to hit."""
    hints = [hint for module, hint in _INSTALL_HINTS.items() if module in message]
    return "".join(f"; {hint}" for hint in hints) + (f" (all of them: {STYLEGAN_EXTRA})" if hints else "")


def _import_persistence(code_dir: Path) -> None:
    try:
        importlib.import_module("torch_utils.persistence")
    except ImportError as error:
        hint = _install_hint(f"{error} {error.name or ''}")
        raise ModelSpecError(
            f"generator.code_dir: cannot import torch_utils.persistence from {code_dir}: {error}{hint}"
        ) from error


def read_network_pickle(path: Path, code_dir: Path) -> dict[str, Any]:
    """Unpickle a network pickle with ``code_dir`` importable; returns its dict and logs its sha256."""
    log.info("loading generator pickle %s (sha256 %s) with code from %s", path, file_sha256(path), code_dir)
    with code_dir_on_path(code_dir), warnings.catch_warnings():
        # StyleGAN-XL's code imports timm.models.layers, which timm >= 0.9 deprecates on each import.
        warnings.filterwarnings("ignore", message="Importing from timm.models", category=FutureWarning)
        _import_persistence(code_dir)
        with open(path, "rb") as handle:
            unpickler = _TolerantUnpickler(handle)
            try:
                data = unpickler.load()
            except Exception as error:
                # A placeholder for a missing module fails later as "not callable"; the import
                # that failed is the cause worth naming.
                causes = "; ".join([*sorted(unpickler.import_failures), f"{type(error).__name__}: {error}"])
                raise ModelSpecError(
                    f"generator.path: cannot unpickle {path}: {causes}{_install_hint(causes)}"
                ) from error
    if not isinstance(data, Mapping) or "G_ema" not in data:
        keys = ", ".join(map(str, data)) if isinstance(data, Mapping) else type(data).__name__
        raise ModelSpecError(f"generator.path: {path} holds no 'G_ema' (found: {keys})")
    broken = unresolved_parts(data["G_ema"])
    if broken or not isinstance(data["G_ema"], torch.nn.Module):
        # A module whose source failed to execute stays cached half-built, so later classes of
        # it fail with KeyError; the import errors are the causes worth naming.
        causes = sorted(unpickler.import_failures) or [
            unpickler.failures.get(name, "not a torch module") for name in broken or ["G_ema"]
        ]
        reasons = "; ".join(causes)
        raise ModelSpecError(
            f"generator.path: G_ema in {path} cannot be rebuilt with the code in {code_dir} "
            f"({', '.join(broken) or type(data['G_ema']).__name__}): {reasons}{_install_hint(reasons)}"
        )
    if unpickler.failures:
        log.warning(
            "generator pickle %s: parts outside G_ema could not be imported and were skipped: %s",
            path,
            ", ".join(sorted(unpickler.failures)),
        )
    return dict(data)


def patch_custom_ops(use_custom_ops: bool = True) -> list[str]:
    """Make the loaded StyleGAN code's custom CUDA ops usable on recent PyTorch.

    ``torch_utils.custom_ops.get_plugin`` is wrapped so the extension module returned by
    ``torch.utils.cpp_extension.load`` is registered under its name before the repository
    imports it by that name. Each ``torch_utils.ops.*._init`` is wrapped so that a build
    failure warns and selects the reference ops instead of raising. With
    ``use_custom_ops=False`` the reference ops are always used. Returns the names of the
    wrapped modules; wrapping twice is harmless.
    """
    patched = []
    custom_ops = sys.modules.get("torch_utils.custom_ops")
    if custom_ops is not None and not getattr(custom_ops.get_plugin, _PATCHED, False):
        custom_ops.get_plugin = _register_loaded_extension(custom_ops.get_plugin)
        patched.append(custom_ops.__name__)
    for name in sorted(name for name in sys.modules if name.startswith("torch_utils.ops.")):
        module = sys.modules[name]
        init = getattr(module, "_init", None)
        if callable(init) and getattr(init, _PATCHED, None) != use_custom_ops:
            module._init = _init_or_reference(getattr(init, "__wrapped__", init), name, use_custom_ops)
            patched.append(name)
    return patched


def _register_loaded_extension(get_plugin: Callable[..., Any]) -> Callable[..., Any]:
    def get_plugin_registering_extension(module_name: str, *args: Any, **kwargs: Any) -> Any:
        import torch.utils.cpp_extension as cpp_extension

        build = cpp_extension.load

        def build_and_register(*build_args: Any, **build_kwargs: Any) -> Any:
            extension = build(*build_args, **build_kwargs)
            sys.modules[build_kwargs.get("name", build_args[0] if build_args else module_name)] = extension
            return extension

        cpp_extension.load = build_and_register
        try:
            return get_plugin(module_name, *args, **kwargs)
        finally:
            cpp_extension.load = build

    get_plugin_registering_extension.__wrapped__ = get_plugin
    setattr(get_plugin_registering_extension, _PATCHED, True)
    return get_plugin_registering_extension


def _init_or_reference(init: Callable[[], bool], module_name: str, use_custom_ops: bool) -> Callable[[], bool]:
    failed = not use_custom_ops

    def init_or_reference() -> bool:
        nonlocal failed
        if failed:
            return False
        try:
            return init()
        except Exception as error:
            failed = True
            warnings.warn(
                f"{module_name}: the custom CUDA op could not be built ({type(error).__name__}: {error}); "
                "using the reference implementation, which is several times slower and needs far more GPU memory",
                RuntimeWarning,
                stacklevel=2,
            )
            return False

    init_or_reference.__wrapped__ = init
    setattr(init_or_reference, _PATCHED, use_custom_ops)
    return init_or_reference


def _spec_flag(spec: Mapping[str, Any], key: str, default: bool) -> bool:
    value = spec.get(key, default)
    if not isinstance(value, bool):
        raise ModelSpecError(f"generator.{key}: expected true or false, got {value!r}")
    return value


def stylegan_weight_files(spec: Mapping[str, Any]) -> list[Path]:
    return [Path(spec["path"])] if spec.get("path") else []


@register_generator("stylegan_pkl", weight_files=stylegan_weight_files)
def load_stylegan_pickle(spec: Mapping[str, Any]) -> StyleGANGenerator:
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise ModelSpecError(f"generator: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_SPEC_KEYS))}")
    noise_mode = spec.get("noise_mode", "const")
    if noise_mode not in _NOISE_MODES:
        raise ModelSpecError(f"generator.noise_mode: expected one of {', '.join(_NOISE_MODES)}, got {noise_mode!r}")
    samples = spec.get("class_average_samples", 10_000)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples <= 0:
        raise ModelSpecError(f"generator.class_average_samples: expected a positive integer, got {samples!r}")
    path = Path(str(spec.get("path") or "")).expanduser()
    if not spec.get("path") or not path.is_file():
        raise ModelSpecError(f"generator.path: network pickle {spec.get('path')!r} does not exist")
    code_dir = _check_code_dir(spec.get("code_dir"))
    data = read_network_pickle(path, code_dir)
    patch_custom_ops(_spec_flag(spec, "custom_ops", True))
    return StyleGANGenerator(
        data["G_ema"],
        noise_mode=noise_mode,
        force_fp32=_spec_flag(spec, "force_fp32", True),
        class_average_truncation=_spec_flag(spec, "class_average_truncation", True),
        class_average_samples=samples,
    )
