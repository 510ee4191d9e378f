"""Frozen records: ``dataclass`` finds the fields, the methods are written once here.

``@dataclass(frozen=True)`` writes ``__init__``, ``__setattr__``, ``__delattr__``,
``__eq__``, ``__hash__`` and ``__repr__`` for each class as source text and compiles it:
six functions a class, compiled at every start of a program, and an
``inspect.signature`` for the docstring of a class without one.  The daemon's start
has about thirty such classes on its path (the chat events, the configuration,
discovery), and compiling their functions was a fifth of its import time.

A class declared ``@record`` on top of ``Record`` is a dataclass (``fields``,
``replace`` and ``asdict`` work on it) that behaves as a frozen one: its ``__init__``
takes the fields in order, with their defaults and default factories, then calls
``__post_init__`` if the class has one; assigning or deleting an attribute afterwards
raises ``dataclasses.FrozenInstanceError``; instances are equal when of the same class
with equal fields, hash as the fields' tuple, and print as ``Name(field=value, ...)``.
Only ``__init__`` is compiled per class, one function; the rest live on ``Record``.  A
class without a docstring gets its name as one.
"""

from __future__ import annotations

from dataclasses import MISSING, FrozenInstanceError, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, TypeVar

_NAMES: dict[type, tuple[str, ...]] = {}
_T = TypeVar("_T")

if TYPE_CHECKING:  # type checkers read @record as a frozen dataclass
    from typing_extensions import dataclass_transform
else:
    def dataclass_transform(**_: Any) -> Callable[[_T], _T]:
        return lambda decorated: decorated


class _DefaultFactory:
    """The default of a parameter whose field has a default factory."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _DefaultFactory()


def _names(cls: type) -> tuple[str, ...]:
    """The field names of a dataclass, worked out once per class."""
    found = _NAMES.get(cls)
    if found is None:
        found = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return found


class Record:
    """The base of a ``@record`` class: frozen, with ``__eq__``, ``__hash__`` and
    ``__repr__`` from here."""

    __slots__ = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _names(type(self)))

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            assert isinstance(other, Record)
            return self._values() == other._values()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name)!r}" for name in _names(type(self)))
        return f"{type(self).__qualname__}({values})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


@dataclass_transform(frozen_default=True, eq_default=True, field_specifiers=(field,))
def record(cls: type[_T]) -> type[_T]:
    """Make ``cls`` (a subclass of ``Record``) a frozen dataclass, compiling only its
    ``__init__``."""
    if not cls.__doc__:  # dataclass would build one with inspect.signature
        cls.__doc__ = cls.__name__
    made: Any = dataclass(init=False, eq=False, repr=False)(cls)
    namespace: dict[str, Any] = {"_rec_set": object.__setattr__, "_rec_factory": _FACTORY}
    params, body = ["self"], []
    annotations: dict[str, Any] = {}
    for f in fields(made):
        if f.default is not MISSING:
            namespace[f"_rec_default_{f.name}"] = f.default
            params.append(f"{f.name}=_rec_default_{f.name}")
        elif f.default_factory is not MISSING:
            namespace[f"_rec_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_rec_factory")
            body.append(f"if {f.name} is _rec_factory: {f.name} = _rec_factory_{f.name}()")
        else:
            params.append(f.name)
        body.append(f"_rec_set(self, {f.name!r}, {f.name})")
        annotations[f.name] = f.type
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    lines = "\n    ".join(body or ["pass"])
    exec(f"def __init__({', '.join(params)}):\n    {lines}\n", namespace)
    init = namespace["__init__"]
    init.__annotations__ = {**annotations, "return": None}
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    made.__init__ = init
    return cls
