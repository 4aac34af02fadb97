"""One registry of attribution methods and their options.

Each method class declares its options once (:class:`Option`: name, type, default, bounds, help); the CLI's flags,
the service's fields, :meth:`Explainer.settings` and reports read them from here. ``type(ex)(model, **ex.settings())``
rebuilds the same explainer.

Names: an option's ``name`` is its constructor keyword (Captum's where Captum has one: ``n_steps``, ``method``,
``internal_batch_size``); its ``field`` is the name the CLI (``--steps``) and the service (``"steps"``) use.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import GradientUnavailableError, InputError

if TYPE_CHECKING:
    from .methods.base import Explainer
    from .model import Model


@dataclass(frozen=True)
class Option:
    """One constructor option of a method.

    kind : int, float, str or bool. default : used when the option is absent (None means "the method decides",
        e.g. the model's batch size). minimum, maximum : inclusive bounds; above : exclusive lower bound.
    choices : the values a str option takes; ``open_choices`` allows any other string too (a baseline text).
    """

    name: str
    kind: type
    default: Any
    help: str
    field: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple[str, ...] | None = None
    open_choices: bool = False

    @property
    def key(self) -> str:
        """The CLI / service name."""
        return self.field or self.name

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    def bounds(self) -> str:
        parts = []
        if self.above is not None:
            parts.append(f"> {self.above:g}")
        if self.minimum is not None:
            parts.append(f">= {self.minimum:g}")
        if self.below is not None:
            parts.append(f"< {self.below:g}")
        if self.maximum is not None:
            parts.append(f"<= {self.maximum:g}")
        return " and ".join(parts)

    def parse(self, value: Any, *, method: str = "", text: bool = False) -> Any:
        """``value`` checked (and, with ``text``, converted from a CLI string); InputError naming the option.

        Python and JSON values must already have the option's type (an int option refuses ``1.5``, ``"2"`` and
        ``True``; a float option takes ints). Zero is a value like any other: refused where the bounds refuse it,
        never replaced by the default. None means the default.
        """
        where = f"{method} option {self.key!r}" if method else f"option {self.key!r}"
        if value is None:
            return self.default
        if text and isinstance(value, str) and self.kind is not str:
            value = self._from_text(value, where)
        if self.kind is bool:
            if not isinstance(value, bool):
                raise InputError(f"{where} must be true or false, got {type(value).__name__} {value!r}")
            return value
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(f"{where} must be an integer, got {type(value).__name__} {_short(value)}")
            if abs(value) > 10**18:
                raise InputError(f"{where} must be {self.bounds() or 'an integer of at most 18 digits'}, got {_short(value)}")
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(f"{where} must be a number, got {type(value).__name__} {_short(value)}")
            if isinstance(value, int) and abs(value) > 10**18:
                raise InputError(f"{where} must be {self.bounds() or 'a finite number'}, got {_short(value)}")
            value = float(value)
            if not math.isfinite(value):
                raise InputError(f"{where} must be finite, got {value}")
        elif self.kind is str:
            if not isinstance(value, str):
                raise InputError(f"{where} must be a string, got {type(value).__name__}")
            if self.choices is not None and value not in self.choices and not self.open_choices:
                raise InputError(f"{where} must be one of {', '.join(self.choices)}; got {_short(value)}")
            return value
        if (self.minimum is not None and value < self.minimum or self.maximum is not None and value > self.maximum
                or self.above is not None and value <= self.above or self.below is not None and value >= self.below):
            raise InputError(f"{where} must be {self.bounds()}, got {value}")
        return value

    def _from_text(self, value: str, where: str) -> Any:
        t = value.strip()
        if self.kind is bool:
            if t.lower() in ("true", "1", "yes"):
                return True
            if t.lower() in ("false", "0", "no"):
                return False
            raise InputError(f"{where} must be true or false, got {_short(value)}")
        if self.kind is int:
            if not t.lstrip("+-").isdigit() or len(t) > 19:
                raise InputError(f"{where} must be an integer, got {_short(value)}")
            return int(t)
        try:
            return float(t)
        except ValueError:
            raise InputError(f"{where} must be a number, got {_short(value)}") from None

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.key, "type": self.kind.__name__, "default": self.default, "help": self.help}
        for k in ("minimum", "maximum", "above", "below", "choices"):
            if getattr(self, k) is not None:
                d[k] = list(getattr(self, k)) if k == "choices" else getattr(self, k)
        return d


def _short(value: Any) -> str:
    r = repr(value)
    return r if len(r) <= 40 else r[:37] + "..."


METHODS: dict[str, type[Explainer]] = {}


def register(cls: type[Explainer]) -> type[Explainer]:
    """Class decorator: make a method available under ``cls.name`` to the CLI, the service and ``make_explainer``."""
    seen: dict[str, str] = {}
    for opt in cls.options:
        if opt.key in seen:
            raise TypeError(f"{cls.__name__} declares the option {opt.key!r} twice")
        seen[opt.key] = opt.name
    METHODS[cls.name] = cls
    return cls


def _load() -> dict[str, type[Explainer]]:
    from . import methods  # noqa: F401 - importing the package registers every method

    return METHODS


def method_names() -> list[str]:
    return list(_load())


def get_method(name: str) -> type[Explainer]:
    methods = _load()
    if not isinstance(name, str) or name not in methods:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(methods)}")
    return methods[name]


def parse_methods(spec: Any) -> list[str]:
    """``"ig"``, ``"ig,occlusion"`` or ``["ig", "occlusion"]`` -> checked method names, at least one, no repeats."""
    if isinstance(spec, str):
        names = [m.strip() for m in spec.split(",")]
    elif isinstance(spec, (list, tuple)) and all(isinstance(m, str) for m in spec):
        names = [m.strip() for m in spec]
    else:
        raise InputError(f"method must be a name, a comma-separated list or a list of names; got {type(spec).__name__}; "
                         f"choose from {', '.join(_load())}")
    if not names or any(not n for n in names):
        raise InputError(f"method {spec!r} names an empty method; choose from {', '.join(_load())}")
    if len(set(names)) != len(names):
        raise InputError(f"method {spec!r} names a method twice")
    for n in names:
        get_method(n)
    return names


def explainer_kwargs(method: str, options: Mapping[str, Any], *, strict: bool = False) -> dict[str, Any]:
    """Constructor keywords of ``method`` from options keyed by field name, each parsed and bounds-checked.

    Options the method does not take are ignored, unless ``strict`` (the service), where a set one is an error.
    """
    cls = get_method(method)
    by_key = {o.key: o for o in cls.options}
    kwargs = {}
    for key, value in options.items():
        opt = by_key.get(key)
        if opt is None:
            if strict and value is not None:
                raise InputError(f"method {method!r} takes no option {key!r}; its options: {', '.join(by_key)}")
            continue
        if value is not None:
            kwargs[opt.name] = opt.parse(value, method=method)
    return kwargs


def make_explainer(model: Model, method: str, options: Mapping[str, Any] | None = None, *,
                   strict: bool = False) -> Explainer:
    """An explainer from option values keyed by their CLI / service names (``steps``, ``integration``, ``window``,
    ...). Absent and None options take the method's defaults."""
    cls = get_method(method)
    if cls.needs_gradient and not model.has_gradient:
        why = model.manifest.unavailable.get("gradient")
        raise GradientUnavailableError(
            f"method {method!r} needs the gradient graph, which bundle {model.path} lacks{f' ({why})' if why else ''}: "
            "re-export it with "
            "`xai-onnx export` (without --no-gradient), or use a forward-only method "
            f"({', '.join(n for n, c in _load().items() if not c.needs_gradient)})")
    return cls(model, **explainer_kwargs(method, options or {}, strict=strict))


def all_options() -> dict[str, tuple[Option, list[str]]]:
    """Every distinct option key over all methods -> (its declaration, the methods that take it)."""
    out: dict[str, tuple[Option, list[str]]] = {}
    for name, cls in _load().items():
        for opt in cls.options:
            if opt.key in out:
                out[opt.key][1].append(name)
            else:
                out[opt.key] = (opt, [name])
    return out


def _argparse_type(opt: Option):
    def convert(text: str) -> Any:
        try:
            return opt.parse(text, text=True)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = opt.kind.__name__
    return convert


def add_method_arguments(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """One flag per option key over every method, default None (the method's own default applies)."""
    group = parser.add_argument_group("method options (each applies to the methods named in brackets)")
    for key, (opt, names) in all_options().items():
        if key in skip:
            continue
        default = f"; default {opt.default}" if opt.default is not None else ""
        bounds = f"; {opt.bounds()}" if opt.bounds() else ""
        help_text = f"{opt.help}{default}{bounds} [{', '.join(names)}]"
        if opt.kind is bool:
            group.add_argument(opt.flag, dest=key, action="store_true", default=None, help=help_text)
        elif opt.choices is not None and not opt.open_choices:
            group.add_argument(opt.flag, dest=key, choices=opt.choices, default=None, help=help_text)
        else:
            group.add_argument(opt.flag, dest=key, type=_argparse_type(opt), default=None, help=help_text)


def method_table() -> list[dict[str, Any]]:
    """Every method, whether it needs the gradient graph, and its options with defaults and bounds."""
    return [{"name": name, "needs_gradient": cls.needs_gradient, "options": [o.describe() for o in cls.options]}
            for name, cls in _load().items()]
