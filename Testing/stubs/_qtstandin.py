"""The do-nothing classes behind the ``qt`` and ``ctk`` stand-ins (Qt and CTK widgets cannot run in pytest)."""

from __future__ import annotations

from typing import Any, Callable


class _StandInClass(type):
    """Class-level attributes too (enums such as ``qt.Qt.WaitCursor``) yield a stand-in."""

    def __getattr__(cls, name: str) -> "QtStandIn":
        if name.startswith("__"):
            raise AttributeError(name)
        return QtStandIn()


class QtStandIn(metaclass=_StandInClass):
    """A Qt/CTK object stand-in: accepts any arguments; any attribute or call yields another stand-in."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> "QtStandIn":
        if name.startswith("__"):
            raise AttributeError(name)
        return QtStandIn()

    def __call__(self, *args: Any, **kwargs: Any) -> "QtStandIn":
        return QtStandIn()

    def __bool__(self) -> bool:
        return False


def standInModuleGetattr(moduleName: str) -> Callable[[str], type]:
    """Module ``__getattr__`` that makes (once) a distinct stand-in class for each requested name."""
    classes: dict[str, type] = {}

    def getattr_(name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in classes:
            classes[name] = type(name, (QtStandIn,), {"__module__": moduleName})
        return classes[name]

    return getattr_
