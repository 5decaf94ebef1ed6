"""Build a C++/CUDA extension on first use and import it by name, as the originals do.

The import by name is the defect the adapter patches: recent PyTorch no longer makes the
module that ``torch.utils.cpp_extension.load`` builds importable under its name.
"""

import importlib

import torch.utils.cpp_extension

_plugins = {}


def get_plugin(module_name, sources, **build_kwargs):
    if module_name not in _plugins:
        torch.utils.cpp_extension.load(name=module_name, sources=sources, **build_kwargs)
        _plugins[module_name] = importlib.import_module(module_name)
    return _plugins[module_name]
