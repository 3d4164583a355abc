"""Frozen, validated configuration dataclasses.

Every configurable object in affinevae takes a frozen dataclass. Construction validates
every field (so a bad value fails early), and :meth:`Config.from_dict` rejects unknown
keys with a suggestion, so a typo in an option is an error, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
from typing import Any, ClassVar, Iterable, Mapping, Optional, TypeVar

from .errors import AffineVAEError

C = TypeVar("C", bound="Config")


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class of all configs: JSON round-trip and strict construction from a dict.

    An unknown keyword (``TrainConfig(epoch=3)``) raises :class:`AffineVAEError` naming the valid
    options, as :meth:`from_dict` does, rather than Python's ``TypeError``.
    """

    #: Fields added after files holding this config were first written, with the value that keeps a
    #: file lacking one doing what it did when written (:meth:`from_saved`); a new model takes the
    #: field's own default instead.
    FORMER_DEFAULTS: ClassVar[dict] = {}

    def __new__(cls, *args: Any, **kwargs: Any):
        names = cls.field_names()
        for key in kwargs:
            if key not in names:
                raise AffineVAEError(unknown_option_message(key, names, cls.__name__))
        return super().__new__(cls)

    def __post_init__(self) -> None:
        # Normalise list inputs (e.g. from JSON) to tuples so configs stay hashable/frozen, and numpy
        # scalars (np.int64 from np.arange in a grid search) to Python numbers, so they check and save as such.
        for f in dataclasses.fields(self):
            v = plain_scalar(getattr(self, f.name))
            if isinstance(v, list):
                v = tuple(v)
            if isinstance(v, tuple):
                v = tuple(plain_scalar(item) for item in v)
            elif isinstance(f.default, tuple) and isinstance(v, bool):
                raise AffineVAEError(f"{f.name} takes a list of values, got {v!r}")
            elif isinstance(f.default, tuple) and isinstance(v, (int, float)):
                raise AffineVAEError(f"{f.name} takes a list of values, e.g. {f.name}=({v!r},), got the number {v!r}")
            object.__setattr__(self, f.name, v)
        try:
            self.validate()
        except TypeError:  # a value of another type than the field's that a comparison in validate met
            raise AffineVAEError(self._type_mismatch() or f"{type(self).__name__}: an option has a value of the "
                                 "wrong type") from None
        mismatch = self._type_mismatch()  # what validate let through: True as a count, "no" as a yes/no option
        if mismatch:
            raise AffineVAEError(mismatch)

    def _type_mismatch(self) -> str:
        """The message for the first field whose value is not of its annotated type (bool, int, float, str,
        or Optional of one), else ''."""
        for f in dataclasses.fields(self):
            kind = str(f.type)
            optional = kind.startswith("Optional[")
            kind = kind[len("Optional["):-1] if optional else kind
            v = getattr(self, f.name)
            if kind not in _SCALAR_TYPES or (optional and v is None):
                continue
            if not _SCALAR_TYPES[kind][0](v):
                return f"{f.name} must be {_SCALAR_TYPES[kind][1]}{' or None' if optional else ''}, got {v!r}"
        return ""

    def validate(self) -> None:
        """Check field values; subclasses raise :class:`AffineVAEError` on bad values."""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of the fields."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of the config fields."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def option_names(cls, data: Mapping[str, Any]) -> list[str]:
        """The option names :meth:`from_dict` takes with ``data`` (the config's fields; a config that also
        takes another's options, as the AVAE its inner model's, says so here)."""
        return cls.field_names()

    @classmethod
    def resolved_fields(cls) -> set[str]:
        """Names of the fields whose default None is resolved at construction from the others (an rVAE's
        encoder, its anchors and their targets)."""
        return {f.name for f in dataclasses.fields(cls) if f.default is None}

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], *, what: str | None = None) -> C:
        """Build a config from ``data``; unknown keys raise :class:`AffineVAEError`."""
        names = cls.field_names()
        label = what or cls.__name__
        for key in data:
            if key not in names:
                raise AffineVAEError(unknown_option_message(key, names, label))
        try:
            return cls(**dict(data))
        except TypeError as exc:  # missing required fields
            raise AffineVAEError(f"{label}: {exc}") from None

    @classmethod
    def saved_dict(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """A saved config's dict with the fields it predates filled by :attr:`FORMER_DEFAULTS`."""
        return {**{k: v for k, v in cls.FORMER_DEFAULTS.items() if k not in data}, **dict(data)}

    @classmethod
    def from_saved(cls: type[C], data: Mapping[str, Any], *, what: str | None = None) -> C:
        """Build a config from a saved file's dict (:meth:`from_dict` of :meth:`saved_dict`)."""
        return cls.from_dict(cls.saved_dict(data), what=what)

    @classmethod
    def loaded_dict(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """What to compare a config built today with, for a saved file's ``data``: :meth:`saved_dict` (the
        fields it predates at their :attr:`FORMER_DEFAULTS`), with the saved fields as the config they
        load as holds them (:meth:`to_dict` of :meth:`from_saved`), in the file's order. A field the run
        predates that has no former value stays absent, so such a run counts as another model: today's
        default might turn on what it never trained with."""
        known = cls.saved_dict(data)
        try:
            out = cls.from_saved(data).to_dict()
        except AffineVAEError:
            return known
        return {k: out.get(k, v) for k, v in known.items()}

    def replace(self: C, **changes: Any) -> C:
        """Return a copy with ``changes`` applied (validated).

        A field whose default None is resolved from the others (:meth:`resolved_fields`) and that holds
        the value it resolves to here follows the changes: it is resolved again (an rVAE's
        ``replace(pose_anchor=0)`` turns its default content anchor off with it), while a value that
        differs from its resolution (given) is kept."""
        data = self.to_dict()
        follow: dict[str, None] = {}
        candidates = sorted(n for n in self.resolved_fields() - changes.keys() if data[n] is not None)
        grown = True
        while grown:  # the largest set that resolves to the values held (one resolution can hang on another)
            grown = False
            for name in [n for n in candidates if n not in follow]:
                trial = {**follow, name: None}
                try:
                    fresh = self.from_dict({**data, **trial}).to_dict()
                except AffineVAEError:
                    continue
                if all(fresh[n] == data[n] for n in trial):
                    follow, grown = trial, True
        return self.from_dict({**data, **follow, **changes})

    def to_json(self) -> str:
        """The config as an indented JSON string."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def plain_scalar(value: Any) -> Any:
    """A numpy scalar as the Python number (or bool, str) it holds; anything else as it is (the same object)."""
    item = getattr(value, "item", None)
    if item is not None and type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        return item()
    return value


#: Annotation -> (test, words) of the scalar field types a config checks its values against.
_SCALAR_TYPES = {
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
}


def unknown_option_message(key: str, names: list[str], label: str) -> str:
    """The one-line message for an unknown option ``key`` of ``label`` whose valid options are
    ``names``, with the closest valid name as a suggestion."""
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown option '{key}' for {label}{hint}; valid options: {', '.join(names)}"


#: Seeds are integers in [0, MAX_SEED): numpy's generators refuse negative ones.
MAX_SEED = 2**63


def check_seed(value: Any, name: str = "seed") -> None:
    """Raise :class:`AffineVAEError` unless ``value`` is an integer in [0, :data:`MAX_SEED`)."""
    check(isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value < MAX_SEED,
          f"{name} must be an integer >= 0, got {value!r}")


def as_config(config: Any, cls: type, where: str) -> Any:
    """``config`` as a ``cls`` (a :class:`Config` subclass): itself, None, or a dict of its options
    (:meth:`Config.from_dict`); anything else is one :class:`AffineVAEError` line starting with ``where``."""
    if config is None or isinstance(config, cls):
        return config
    if isinstance(config, Mapping):
        return cls.from_dict(config)
    raise AffineVAEError(f"{where}: config must be a {cls.__name__} or a dict of its options, got {type(config).__name__}")


def check(cond: bool, message: str) -> None:
    """Raise :class:`AffineVAEError` with ``message`` when ``cond`` is false."""
    if not cond:
        raise AffineVAEError(message)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise AffineVAEError(f"{name} must be one of {choices}, got {value!r}")


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is a finite positive (or non-negative) number."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise AffineVAEError(f"{name} must be a finite number {bound}, got {value!r}")


#: Options whose values are angles in radians (a number, or a list of them: a search's ``angle_range``):
#: reports and trackers show them in degrees beside (:func:`degrees_of`).
RADIAN_OPTIONS = ("rotation_prior", "jitter_angle", "start_noise", "angle_range", "max_angle")


def degrees_of(name: str, value: Any) -> Optional[Any]:
    """``value`` of the option ``name`` in degrees (rounded to 1e-6; a list elementwise) when the option is one
    of :data:`RADIAN_OPTIONS` and the value numbers, else None."""
    def deg(v: Any) -> Optional[float]:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        return round(math.degrees(v), 6) if ok else None

    if name.rsplit("/", 1)[-1] not in RADIAN_OPTIONS:
        return None
    if isinstance(value, (list, tuple)):
        out = [deg(v) for v in value]
        return None if any(v is None for v in out) or not out else out
    return deg(value)


def check_angle_spread(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is a finite positive (or non-negative) angle spread in radians of at most
    2 pi: a larger one is taken for degrees (45 given for pi/4), said with its value in radians."""
    check_positive(name, value, allow_zero=allow_zero)
    if value > 2 * math.pi:
        raise AffineVAEError(f"{name} is in radians and at most 2 pi, got {value!r} (degrees? {value!r} degrees is "
                             f"{math.radians(value):.4g} radians)")


def check_counts(name: str, values: Any, *, at_least: int = 0) -> None:
    """Raise unless ``values`` is a tuple or list of at least ``at_least`` positive integers (True and
    False are not counts: ``[true]`` given as a width)."""
    ok = (isinstance(values, (tuple, list)) and len(values) >= at_least
          and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values))
    if not ok:
        more = f"{'one' if at_least == 1 else at_least} or more " if at_least else ""
        raise AffineVAEError(f"{name} must be {more}positive integers, got {values!r}")


#: The largest n of n-fold rotational symmetry accepted anywhere (maps, ``--symmetry``, angle scores,
#: the pose anchor's ``anchor_symmetry``).
MAX_SYMMETRY = 12


def check_symmetry(symmetry, where: str = "symmetry") -> int:
    """Return ``symmetry`` as an int if it is the n of an n-fold rotational symmetry (an integer in
    1..:data:`MAX_SYMMETRY`), else raise :class:`AffineVAEError` naming ``where``."""
    if (isinstance(symmetry, bool) or not isinstance(symmetry, numbers.Integral)
            or not 1 <= symmetry <= MAX_SYMMETRY):
        raise AffineVAEError(f"{where} must be an integer in 1..{MAX_SYMMETRY} (the n of n-fold rotational symmetry; "
                             f"1 for none), got {symmetry!r}")
    return int(symmetry)
