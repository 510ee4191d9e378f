"""``@record`` behaves as ``@dataclass(frozen=True)`` does, class for class."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from lanchat.protocol.record import Record, record


@record
class Point(Record):
    KIND: ClassVar[str] = "point"
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()
    extra: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PointDC:
    KIND: ClassVar[str] = "point"
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()
    extra: dict[str, int] = field(default_factory=dict)


@record
class Named(Record):
    """A name kept stripped."""

    name: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.name.strip())


@record
class Empty(Record):
    pass


@record
class Child(Point):
    z: int = 9


def test_init_takes_the_fields_in_order_with_defaults_and_factories() -> None:
    for args, kwargs in [((1,), {}), ((1, 2), {}), ((1,), {"tags": ("a",)}),
                         ((), {"x": 3, "y": 4, "extra": {"k": 1}})]:
        made, twin = Point(*args, **kwargs), PointDC(*args, **kwargs)
        assert dataclasses.astuple(made) == dataclasses.astuple(twin)
        assert repr(made) == repr(twin).replace("PointDC", "Point")
    assert str(inspect.signature(Point)) == str(inspect.signature(PointDC))
    # each instance gets its own default_factory value
    assert Point(1).extra is not Point(1).extra
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1, 2, (), {}, 5)  # type: ignore[call-arg]
    assert Child(1).z == 9 and dataclasses.astuple(Child(1, 2)) == (1, 2, (), {}, 9)


def test_equality_and_hash_follow_the_fields_and_the_class() -> None:
    assert Point(1, 2) == Point(1, 2) and Point(1, 2) != Point(2, 1)
    assert hash(Named("a")) == hash(Named(" a ")) == hash(("a",))
    assert {Named(" a "), Named("a")} == {Named("a")}
    assert Point(1) != Child(1)  # same fields, another class
    assert Point(1) != PointDC(1)


def test_instances_are_frozen() -> None:
    point = Point(1)
    with pytest.raises(dataclasses.FrozenInstanceError, match="'x'"):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del point.y  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.other = 1  # type: ignore[attr-defined]
    assert point.x == 1 and point.y == 0


def test_dataclass_functions_work_and_post_init_runs() -> None:
    assert Named("  bob ").name == "bob"
    assert dataclasses.replace(Named("bob"), name=" ana ").name == "ana"
    assert dataclasses.is_dataclass(Point) and [f.name for f in dataclasses.fields(Child)] \
        == ["x", "y", "tags", "extra", "z"]
    assert dataclasses.asdict(Point(1, tags=("a",))) == {"x": 1, "y": 0, "tags": ("a",),
                                                          "extra": {}}
    assert Empty() == Empty() and repr(Empty()) == "Empty()"
    assert Named.__doc__ == "A name kept stripped."
    assert Point.__init__.__qualname__ == "Point.__init__"


def test_records_pickle_and_copy() -> None:
    import copy
    import pickle

    point = Point(1, 2, ("a",), {"k": 1})
    assert pickle.loads(pickle.dumps(point)) == point
    assert copy.deepcopy(point) == point and copy.copy(point) == point

