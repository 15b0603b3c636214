"""Stand-in for ``slicer.ScriptedLoadableModule`` (it imports qt/ctk): distinct base classes only."""

__all__ = ["ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest"]


class ScriptedLoadableModule:
    """Base of the module class."""


class ScriptedLoadableModuleWidget:
    """Base of the widget class (a class of its own so the widget's MRO with VTKObservationMixin holds)."""


class ScriptedLoadableModuleLogic:
    """Base of the logic class."""

    def __init__(self, parent=None):
        self.moduleName = type(self).__name__.removesuffix("Logic")


class ScriptedLoadableModuleTest:
    """Base of the in-Slicer test class."""
