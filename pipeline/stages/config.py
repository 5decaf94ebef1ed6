"""The workflow's configuration: schema validation with defaults, unit selection and chunking.

Errors are one line that names the offending key, because they are what a user sees first
when a run is misconfigured.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import yaml

TYPE_NAMES = {"array": "a list", "integer": "an integer", "number": "a number", "string": "a string"}


class ConfigError(ValueError):
    """The configuration breaks the schema or names something that does not exist."""


def _with_defaults(validator_class: type[jsonschema.protocols.Validator]) -> type[jsonschema.protocols.Validator]:
    """A validator that fills in each property's default before validating it.

    Filling happens before descent, so a missing section (e.g. ``link``) becomes ``{}`` and
    then receives its own defaults.
    """
    validate_properties = validator_class.VALIDATORS["properties"]

    def fill_then_validate(validator, properties, instance, schema):
        if isinstance(instance, MutableMapping):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = _copy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": fill_then_validate})


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def load_schema(path: str | Path) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A config file's mapping; a syntax error names the file and the line."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigError(f"config file {path}: {error.strerror}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"config file {where}: not valid YAML ({error.problem or error.context})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path}: not valid YAML ({error})") from None
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"config file {path}: expected keys at the top level, got {type(loaded).__name__}")
    return dict(loaded)


@contextmanager
def stop_on(*errors: type[BaseException]) -> Iterator[None]:
    """Turn the given errors into one line on stderr and exit status 1, with no traceback.

    The workflow's checks before any job use this: Snakemake would print its own location
    lines and a partial traceback around the message.
    """
    try:
        yield
    except errors as error:
        print(f"Error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def coerce_strings(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any]) -> Any:
    """Turn strings that the schema does not accept into the YAML values they spell.

    Snakemake parses nested ``--config`` values (``link='{alpha: 10}'``, ``units=[1, 2]``)
    with YAML's base loader, which leaves every scalar a string; this restores the types
    wherever the string form would be invalid and the parsed form is valid.
    """
    schema = _resolve(schema, root)
    if _accepts(schema, value, root):
        return value
    if isinstance(value, Mapping):
        properties = schema.get("properties", {})
        value = {k: coerce_strings(v, properties[k], root) if k in properties else v for k, v in value.items()}
    elif isinstance(value, list) and "items" in schema:
        value = [coerce_strings(v, schema["items"], root) for v in value]
    elif isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        # A typed value that still breaks the schema gives a truer error than its string.
        return value if isinstance(parsed, str) else parsed
    for option in schema.get("oneOf", []):
        candidate = coerce_strings(value, option, root)
        if _accepts(_resolve(option, root), candidate, root):
            return candidate
    return value


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    reference = schema.get("$ref")
    if not reference:
        return schema
    target: Any = root
    for part in reference.removeprefix("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}


def _accepts(schema: Mapping[str, Any], value: Any, root: Mapping[str, Any]) -> bool:
    validator_class = jsonschema.validators.validator_for(root)
    return validator_class({**schema, "$defs": root.get("$defs", {})}).is_valid(value)


def validate_config(config: MutableMapping[str, Any], schema: Mapping[str, Any]) -> MutableMapping[str, Any]:
    """Validate ``config`` in place, filling defaults; raise ConfigError with one line."""
    properties = schema.get("properties", {})
    for key, value in list(config.items()):
        if key in properties:
            config[key] = coerce_strings(value, properties[key], schema)
    validator_class = _with_defaults(jsonschema.validators.validator_for(schema))
    errors = sorted(validator_class(schema).iter_errors(config), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        raise ConfigError(_describe(errors[0]))
    units = config.get("units")
    if isinstance(units, Mapping) and units["stop"] <= units["start"]:
        raise ConfigError(f"config key 'units': stop ({units['stop']}) must be greater than start ({units['start']})")
    low, high = config["tuning"]["range_quantiles"]
    if high <= low:
        raise ConfigError(f"config key 'tuning.range_quantiles': high ({high}) must be greater than low ({low})")
    return config


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(part) for part in error.absolute_path)
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        where = f"{key}." if key else ""
        return f"config key '{where}{unknown[0]}' is unknown; allowed here: {', '.join(error.schema['properties'])}"
    if error.validator == "oneOf":
        return f"config key '{key}': {error.instance!r} is not one of the allowed forms ({_forms(error.schema)})"
    message = error.message.splitlines()[0]
    return f"config key '{key or '<root>'}': {message}"


def _forms(schema: Mapping[str, Any]) -> str:
    forms = []
    for option in schema["oneOf"]:
        if "const" in option:
            forms.append(repr(option["const"]))
        elif option.get("type") == "object":
            forms.append("{" + ", ".join(option.get("properties", {})) + "}")
        else:
            forms.append(TYPE_NAMES.get(option.get("type"), "a value"))
    return " or ".join(forms)


def select_units(units: str | list[int] | Mapping[str, int], num_units: int) -> list[int]:
    """The sorted unit ids that ``units`` (all | list | {start, stop}) selects."""
    if units == "all":
        return list(range(num_units))
    if isinstance(units, Mapping):
        selected = range(int(units["start"]), int(units["stop"]))
    else:
        selected = sorted({int(u) for u in units})
    out_of_range = [u for u in selected if not 0 <= u < num_units]
    if out_of_range:
        raise ConfigError(
            f"config key 'units': unit {out_of_range[0]} is out of range; the classifier has {num_units} units"
        )
    return list(selected)


def check_classes(classes: Iterable[int], limits: Mapping[str, int | None]) -> None:
    """Every class id must exist in every model that has classes (``limits``: model -> count)."""
    for model, limit in limits.items():
        beyond = [c for c in classes if limit is not None and not 0 <= c < limit]
        if beyond:
            raise ConfigError(
                f"config key 'classes': class {beyond[0]} is out of range for the {model} ({limit} classes)"
            )


def check_pairs(pairs: Iterable[Iterable[int]], classes: Iterable[int], num_classes: int | None) -> None:
    """Counterfactual pairs start from a sampled class and need a classifier head to aim at a target.

    ``num_classes`` is None for a classifier without a head.
    """
    pairs = [tuple(pair) for pair in pairs]
    if not pairs:
        return
    if num_classes is None:
        raise ConfigError(
            "config key 'counterfactuals.pairs': counterfactuals need a classifier with a head (logits); "
            "this classifier has none, so set pairs: []"
        )
    sampled = set(classes)
    for origin, target in pairs:
        if origin not in sampled:
            raise ConfigError(
                f"config key 'counterfactuals.pairs': pair [{origin}, {target}] starts from class {origin}, "
                f"which is not among the run's classes {sorted(sampled)}"
            )
        if not 0 <= target < num_classes:
            raise ConfigError(
                f"config key 'counterfactuals.pairs': pair [{origin}, {target}] aims at class {target}; "
                f"the classifier has {num_classes} classes"
            )
        if origin == target:
            raise ConfigError(f"config key 'counterfactuals.pairs': pair [{origin}, {target}] names one class twice")


def check_device(device: str, cuda_devices: int) -> None:
    """``cuda`` or ``cuda:N`` must name a device this machine has (``auto`` falls back to the CPU)."""
    if not device.startswith("cuda"):
        return
    index = int(device.split(":")[1]) if ":" in device else 0
    if cuda_devices == 0:
        raise ConfigError(
            f"config key 'device': {device!r} requested but this machine has no CUDA GPU; use auto or cpu"
        )
    if index >= cuda_devices:
        raise ConfigError(f"config key 'device': {device!r} requested but only {cuda_devices} CUDA device(s) exist")


def check_writable(folder: str | Path) -> None:
    """The run's folder (or the nearest folder above it that exists) must take new files.

    A real write is tried rather than asking for permission bits, which say nothing of
    read-only mounts or immutable folders, nor of what root may do.
    """
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ConfigError(
            f"{existing}: cannot write there ({error.strerror}), so the run cannot write {folder}"
        ) from None


def chunk_units(units: Iterable[int], chunk_size: int) -> dict[int, list[int]]:
    """Chunk k holds the selected units in [k * chunk_size, (k + 1) * chunk_size).

    Chunks are keyed by unit id, not by position in the selection, so selecting more units
    leaves every existing chunk (and its params) unchanged unless units land in it.
    """
    if chunk_size < 1:
        raise ConfigError(f"config key 'tuning.chunk_size': must be at least 1, got {chunk_size}")
    chunks: dict[int, list[int]] = {}
    for unit in sorted(set(units)):
        chunks.setdefault(unit // chunk_size, []).append(unit)
    return chunks


if __name__ == "__main__":
    # `python -m pipeline.stages.config FILE...`: check config files' YAML before Snakemake
    # reads them, since Snakemake's own message names neither file nor line.
    with stop_on(ConfigError):
        for argument in sys.argv[1:]:
            load_config_file(argument)
