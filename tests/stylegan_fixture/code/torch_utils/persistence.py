"""Persistent classes: pickle the source of a class's module along with the object's state.

Unpickling executes that source in a fresh module, so a pickle keeps working when the
class's definition has changed or moved. Modules the source imports must be importable.
"""

import copy
import inspect
import sys
import types
import uuid

import dnnlib

FORMAT_VERSION = 1
_persistent_classes = set()
_modules_by_source = {}
_sources_by_module_name = {}


def persistent_class(original):
    """Decorate a class so that its instances pickle their module's source code."""
    if original in _persistent_classes:
        return original
    module_source = _source_of(original.__module__)

    class Persistent(original):
        _module_source = module_source
        _class_name = original.__name__

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_kwargs = copy.deepcopy(kwargs)

        @property
        def init_kwargs(self):
            return dnnlib.EasyDict(copy.deepcopy(self._init_kwargs))

        def __reduce__(self):
            reduced = list(super().__reduce__()) + [None] * 3
            meta = dict(
                type="class",
                version=FORMAT_VERSION,
                module_src=self._module_source,
                class_name=self._class_name,
                state=reduced[2],
            )
            return (_reconstruct_persistent_obj, (meta,))

    Persistent.__name__ = original.__name__
    Persistent.__qualname__ = original.__qualname__
    _persistent_classes.add(Persistent)
    return Persistent


def _reconstruct_persistent_obj(meta):
    meta = dnnlib.EasyDict(meta)
    if meta.version != FORMAT_VERSION or meta.type != "class":
        raise ValueError(f"unsupported persistent object {meta.type} version {meta.version}")
    module = _module_from_source(meta.module_src)
    cls = persistent_class(module.__dict__[meta.class_name])
    obj = cls.__new__(cls)
    if hasattr(obj, "__setstate__"):
        obj.__setstate__(meta.state)
    else:
        obj.__dict__.update(meta.state)
    return obj


def _source_of(module_name):
    # A module rebuilt from pickled source has no file; its source is remembered instead.
    if module_name not in _sources_by_module_name:
        _sources_by_module_name[module_name] = inspect.getsource(sys.modules[module_name])
    return _sources_by_module_name[module_name]


def _module_from_source(source):
    module = _modules_by_source.get(source)
    if module is None:
        module = types.ModuleType(f"_persistent_module_{uuid.uuid4().hex}")
        sys.modules[module.__name__] = module
        _sources_by_module_name[module.__name__] = source
        _modules_by_source[source] = module
        exec(source, module.__dict__)
    return module
