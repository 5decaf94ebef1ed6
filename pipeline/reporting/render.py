"""The report's HTML: Jinja2 templates (``templates/``, shipped with the package) with autoescape.

Pages get plain values. A table cell is a number, a string, None, or one of the small cell
types below, which the templates' ``cell`` macro turns into markup; every string from an
artifact is escaped by Jinja2, never by hand.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


@dataclass(frozen=True)
class Link:
    href: str
    text: str


@dataclass(frozen=True)
class Badge:
    text: str
    kind: str = ""


@dataclass(frozen=True)
class Picture:
    """An ``<img>``; ``width`` in CSS pixels; ``lazy`` for images below the fold."""

    src: str
    alt: str
    width: int | None = None
    lazy: bool = True


def fmt(value: Any) -> str:
    """Numbers to 3 significant digits, missing values as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.3g}"
    if hasattr(value, "item"):
        return fmt(value.item())
    return str(value)


def percent(value: Any, digits: int = 0) -> str:
    """A share as a percentage (``0.5`` -> ``50%``), missing values as an en dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}%}"


TEMPLATES = Path(__file__).with_name("templates")


def templates_version() -> str:
    """sha256 over the template files, so that a changed template rebuilds the site like changed code."""
    digest = hashlib.sha256()
    for path in sorted(TEMPLATES.iterdir()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("pipeline.reporting", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.filters["percent"] = percent
    env.tests["link"] = lambda value: isinstance(value, Link)
    env.tests["badge"] = lambda value: isinstance(value, Badge)
    env.tests["picture"] = lambda value: isinstance(value, Picture)
    return env


_ENVIRONMENT = environment()


def render(template: str, **values: Any) -> str:
    """The page ``template`` (a file in ``templates/``) filled with ``values``."""
    return _ENVIRONMENT.get_template(template).render(**values)
