"""Stand-in for ``slicer.parameterNodeWrapper`` (it imports qt): the decorator leaves the class as written,
so tests can read its annotated fields; the validators only record their arguments."""

from dataclasses import dataclass
from typing import Any


def parameterNodeWrapper(classtype=None):
    """Return the class unchanged."""
    return classtype if classtype is not None else (lambda cls: cls)


@dataclass
class Choice:
    """Allowed values of a parameter."""

    choices: Any


@dataclass
class WithinRange:
    """Closed range of a numeric parameter."""

    minimum: float
    maximum: float
