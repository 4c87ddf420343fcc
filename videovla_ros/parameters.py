"""A node's ROS parameters, declared once from a typed description and read back checked.

Each parameter is a `Spec`: name, default (its type is the parameter's type), description, and a range or a
set of choices. `declare` declares them (read-only; `ros2 param describe` shows the description and range),
`read` takes the node's values through `check_values`, which converts YAML's integers where a float is meant
and raises a ValueError naming the parameter and what it expects. A dotted name is a nested key in a params
file: `realman.prefix` is written

    realman:
      prefix: /rm_driver
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

ParameterValue = bool | int | float | str | tuple[float, ...]


@dataclass(frozen=True)
class Spec:
    """One parameter. Numbers: `low` / `high` bound it inclusively, `above` exclusively; a tuple default is a
    list of numbers of that length (e.g. [x, y, z]); `choices` lists the allowed strings."""

    name: str
    default: ParameterValue
    description: str
    low: float | None = None
    high: float | None = None
    above: float | None = None
    choices: tuple[str, ...] = ()

    def expected(self) -> str:
        """What a valid value looks like, in words (for messages and the descriptor)."""
        if self.choices:
            return f"one of {list(self.choices)}"
        if isinstance(self.default, bool):
            return "true or false"
        if isinstance(self.default, str):
            return "a string"
        if isinstance(self.default, tuple):
            return f"a list of {len(self.default)} numbers"
        bounds = [f"> {self.above:g}"] if self.above is not None else []
        bounds += [f">= {self.low:g}"] if self.low is not None else []
        bounds += [f"<= {self.high:g}"] if self.high is not None else []
        kind = "an integer" if isinstance(self.default, int) else "a number"
        return f"{kind} {' and '.join(bounds)}".strip()

    def check(self, value: object) -> ParameterValue:
        """`value` converted to the parameter's type; ValueError naming the parameter when it is not valid."""
        problem = ValueError(f"parameter {self.name} must be {self.expected()}, got {value!r}")
        if isinstance(self.default, bool | str):
            if type(value) is not type(self.default) or (self.choices and value not in self.choices):
                raise problem
            return value  # type: ignore[return-value]
        if isinstance(self.default, tuple):
            # rclpy hands arrays back as array.array or a list; a string is not a list of numbers.
            items = None if isinstance(value, str | bytes) or not hasattr(value, "__len__") else list(value)
            if items is None or len(items) != len(self.default) or not all(_is_number(v) for v in items):
                raise problem
            return tuple(float(v) for v in items)
        if not _is_number(value) or (isinstance(self.default, int) and not isinstance(value, int)):
            raise problem
        number = value if isinstance(self.default, int) else float(value)  # type: ignore[arg-type]
        if not math.isfinite(number):
            raise problem
        if (
            (self.above is not None and not number > self.above)
            or (self.low is not None and number < self.low)
            or (self.high is not None and number > self.high)
        ):
            raise problem
        return number

    def descriptor(self) -> ParameterDescriptor:
        # Dynamic typing: YAML's `100` for a float parameter must not fail as int-vs-double; `check` converts it.
        return ParameterDescriptor(
            description=f"{self.description} ({self.expected()})", read_only=True, dynamic_typing=True
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_values(specs: Sequence[Spec], values: Mapping[str, object]) -> dict[str, ParameterValue]:
    """Every spec's value from `values` (its default where missing), checked and converted."""
    return {spec.name: spec.check(values.get(spec.name, spec.default)) for spec in specs}


def declare(node: Node, specs: Sequence[Spec]) -> None:
    for spec in specs:
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        node.declare_parameter(spec.name, default, spec.descriptor())


def read(node: Node, specs: Sequence[Spec]) -> dict[str, ParameterValue]:
    """The node's values of `specs` (declared with `declare`), checked."""
    return check_values(specs, {spec.name: node.get_parameter(spec.name).value for spec in specs})


_Parameters = TypeVar("_Parameters")


def dataclass_from_values(cls: type[_Parameters], values: Mapping[str, Any]) -> _Parameters:
    """A node's parameter dataclass from ROS values, each type-checked against its field's default (an int is
    accepted as a float, since YAML writes `1` for 1.0)."""
    typed = {}
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        value, kind = values[spec.name], type(spec.default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not kind:
            raise ValueError(f"parameter {spec.name} must be of type {kind.__name__}, got {value!r}")
        typed[spec.name] = value
    return cls(**typed)
