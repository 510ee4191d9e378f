"""Equality, hash and repr for frozen dataclasses, written once.

``dataclass`` writes ``__eq__``, ``__hash__`` and ``__repr__`` for each class as source
text and compiles it: three functions a class, compiled at every start of a program.
The daemon's start has about thirty dataclasses on its path (the chat events, the
configuration, discovery), so those functions were a good part of its import time.  A
class declared ``@dataclass(frozen=True, eq=False, repr=False)`` on top of ``Record``
gets the same three from here instead, behaving as the generated ones would: equal
when of the same class with equal fields, the hash of the fields' tuple, and
``Name(field=value, ...)``.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

_NAMES: dict[type, tuple[str, ...]] = {}


def _names(cls: type) -> tuple[str, ...]:
    """The field names of a dataclass, worked out once per class."""
    found = _NAMES.get(cls)
    if found is None:
        found = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return found


class Record:
    """The base of a frozen dataclass that takes ``__eq__``, ``__hash__`` and ``__repr__``
    from here (declare it with ``eq=False, repr=False``)."""

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
