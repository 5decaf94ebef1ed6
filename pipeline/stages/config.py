"""The workflow's configuration: schema validation with defaults, unit selection and chunking.

Errors are one line that names the offending key, because they are what a user sees first
when a run is misconfigured.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
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
