"""A node's ROS parameters: declared once from a typed description, read back checked into a frozen dataclass.

Every node describes its parameters as the fields of a frozen dataclass, each made with `parameter(default,
description, low=/high=/above=/choices=/non_empty=)`; the default's type is the parameter's type. A field made
with `group(Options)` nests another such dataclass under its own name: its field `prefix` is the parameter
`realman.prefix`, written in a params file as

    realman:
      prefix: /rm_driver

A node calls `declare(node, Params)` once in its constructor: every parameter is declared with its description
and range (what `ros2 param describe` shows), and parameters given for names the node does not know (a typo, a
renamed key in an old params file) are warned about once, with the closest known name. `read(node, Params)`
returns the values as a Params instance through `from_values`, which converts YAML's integers where a float is
meant and raises a ValueError naming the parameter and what it expects. The dataclass's __post_init__ calls
`check_fields(self)` (an instance built directly is checked too) and then checks its rules across several
parameters, with the same kind of message.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

ParameterValue = bool | int | float | str | tuple[float, ...]
_SPEC = "videovla_parameter"  # dataclass field metadata key: the field's Spec (name filled in by `specs`)
_GROUP = "videovla_parameter_group"  # metadata key: the field nests a parameter dataclass under its name
MAX_UNKNOWN_NAMED = 8  # the unknown-parameter warning names at most this many (a wrong file can hold hundreds)
UNKNOWN_NAME_CHARS = 64  # and cuts each name to this length


@dataclass(frozen=True)
class Spec:
    """One parameter. Numbers: `low` / `high` bound it inclusively, `above` exclusively; a tuple default is a
    list of numbers of that length (e.g. [x, y, z]); `choices` lists the allowed strings; `non_empty` refuses
    an empty (or blank) string."""

    name: str
    default: ParameterValue
    description: str
    low: float | None = None
    high: float | None = None
    above: float | None = None
    choices: tuple[str, ...] = ()
    non_empty: bool = False

    def expected(self) -> str:
        """What a valid value looks like, in words (for messages and the descriptor)."""
        if self.choices:
            return f"one of {list(self.choices)}"
        if isinstance(self.default, bool):
            return "true or false"
        if isinstance(self.default, str):
            return "a non-empty string" if self.non_empty else "a string"
        if isinstance(self.default, tuple):
            return f"a list of {len(self.default)} numbers"
        bounds = [f"> {self.above:g}"] if self.above is not None else []
        bounds += [f">= {self.low:g}"] if self.low is not None else []
        bounds += [f"<= {self.high:g}"] if self.high is not None else []
        kind = "an integer" if isinstance(self.default, int) else "a number"
        return f"{kind} {' and '.join(bounds)}".strip()

    def check(self, value: object) -> ParameterValue:
        """`value` converted to the parameter's type; ValueError naming the parameter when it is not valid."""
        shown = repr(value)
        shown = shown if len(shown) <= 80 else f"{shown[:77]}..."  # a wrong value can be a whole file's text
        problem = ValueError(f"parameter {self.name} must be {self.expected()}, got {shown}")
        if isinstance(self.default, bool | str):
            if type(value) is not type(self.default) or (self.choices and value not in self.choices):
                raise problem
            if self.non_empty and not str(value).strip():
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

    def descriptor(self, read_only: bool = True) -> ParameterDescriptor:
        # Dynamic typing: YAML's `100` for a float parameter must not fail as int-vs-double; `check` converts it.
        return ParameterDescriptor(
            description=f"{self.description} ({self.expected()})", read_only=read_only, dynamic_typing=True
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parameter(
    default: ParameterValue,
    description: str,
    *,
    low: float | None = None,
    high: float | None = None,
    above: float | None = None,
    choices: tuple[str, ...] = (),
    non_empty: bool = False,
) -> Any:
    """A dataclass field that is a ROS parameter named like the field (see Spec for the constraints)."""
    spec = Spec("", default, description, low, high, above, choices, non_empty)
    return dataclasses.field(default=default, metadata={_SPEC: spec})  # type: ignore[call-overload]


def group(options: type) -> Any:
    """A dataclass field holding a parameter dataclass whose parameters are named `<field>.<its field>`."""
    return dataclasses.field(default_factory=options, metadata={_GROUP: options})


def specs(params: type) -> tuple[Spec, ...]:
    """Every parameter of the parameter dataclass `params`, groups flattened to dotted names."""
    return _specs(params, "")


def _specs(params: type, prefix: str) -> tuple[Spec, ...]:
    found: list[Spec] = []
    for item in dataclasses.fields(params):
        if _SPEC in item.metadata:
            found.append(dataclasses.replace(item.metadata[_SPEC], name=prefix + item.name))
        elif _GROUP in item.metadata:
            found += _specs(item.metadata[_GROUP], f"{prefix}{item.name}.")
        elif item.init:
            raise TypeError(f"{params.__name__}.{item.name} is neither a parameter() nor a group() field")
    return tuple(found)


def check_values(declared: Sequence[Spec], values: Mapping[str, object]) -> dict[str, ParameterValue]:
    """Every spec's value from `values` (its default where missing), checked and converted."""
    return {spec.name: spec.check(values.get(spec.name, spec.default)) for spec in declared}


def check_fields(params: object) -> None:
    """Checks every parameter field of a parameter dataclass instance and converts it in place (YAML's `1` for
    1.0, a list for a tuple); call it first in the dataclass's __post_init__, so that an instance built
    directly is as checked as one read from a node. (A group's fields are named here without the group's
    prefix; `from_values` names them in full.)"""
    for item in dataclasses.fields(params):  # type: ignore[arg-type]
        if _SPEC in item.metadata:
            spec = dataclasses.replace(item.metadata[_SPEC], name=item.name)
            object.__setattr__(params, item.name, spec.check(getattr(params, item.name)))


_Params = TypeVar("_Params")


def from_values(params: type[_Params], values: Mapping[str, object]) -> _Params:
    """A `params` instance from parameter values by (dotted) name; a missing one takes its default. Raises
    ValueError naming the parameter that is wrong (its own range, or a rule of __post_init__)."""
    return _from_values(params, values, "")


def _from_values(params: type[_Params], values: Mapping[str, object], prefix: str) -> _Params:
    fields: dict[str, Any] = {}
    for item in dataclasses.fields(params):  # type: ignore[arg-type]
        if _SPEC in item.metadata:
            spec: Spec = item.metadata[_SPEC]
            name = prefix + item.name
            fields[item.name] = dataclasses.replace(spec, name=name).check(values.get(name, spec.default))
        elif _GROUP in item.metadata:
            fields[item.name] = _from_values(item.metadata[_GROUP], values, f"{prefix}{item.name}.")
    return params(**fields)


def declare(node: Node, params: type, *, read_only: bool = True) -> None:
    """Declares every parameter of `params` on `node` and warns once about given parameters it does not know.

    read_only: False where the node reads its parameters again later (a lifecycle node on configure), so that
    `ros2 param set` between configures takes effect."""
    for spec in specs(params):
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        node.declare_parameter(spec.name, default, spec.descriptor(read_only))
    warning = unknown_parameters_warning(_overridden_names(node), _declared_names(node))
    if warning is not None:
        node.get_logger().warning(warning)


def read(node: Node, params: type[_Params]) -> _Params:
    """The node's values of the parameters of `params` (declared with `declare`), checked."""
    return from_values(params, {spec.name: node.get_parameter(spec.name).value for spec in specs(params)})


def _overridden_names(node: Node) -> list[str]:
    # rclpy has no public accessor for the overrides the node was started with (params files, -p, the
    # parameter_overrides argument); Node keeps them, merged, in _parameter_overrides (Humble .. Kilted).
    return list(getattr(node, "_parameter_overrides", {}))


def _declared_names(node: Node) -> list[str]:
    return list(node.list_parameters([], 0).names)


def unknown_parameters_warning(given: Iterable[str], known: Sequence[str]) -> str | None:
    """One warning naming the given parameters that are not known (at most MAX_UNKNOWN_NAMED, each with the
    closest known name), or None when every one is known."""
    known_set = set(known)
    unknown = sorted({name for name in given if name not in known_set})
    if not unknown:
        return None
    parts = []
    for name in unknown[:MAX_UNKNOWN_NAMED]:
        shown = name if len(name) <= UNKNOWN_NAME_CHARS else f"{name[: UNKNOWN_NAME_CHARS - 3]}..."
        closest = closest_name(name, known)
        parts.append(f"{shown!r}" + (f" (did you mean {closest!r}?)" if closest else ""))
    more = len(unknown) - MAX_UNKNOWN_NAMED
    listed = ", ".join(parts) + (f" and {more} more" if more > 0 else "")
    noun = "parameter" if len(unknown) == 1 else "parameters"
    return f"unknown {noun} {listed}: ignored (check the params file's keys against `ros2 param list`)"


def closest_name(name: str, known: Sequence[str]) -> str | None:
    """The known name most like `name`: a near spelling, else the shortest known name that contains it (the
    old `mode` of `execution_mode`) or that it contains; None when nothing is close."""
    near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if near:
        return near[0]
    containing = [k for k in known if name and (name in k or k in name)]
    return min(containing, key=len) if containing else None
