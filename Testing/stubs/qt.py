"""Stand-in for PythonQt's ``qt`` (Qt cannot run in pytest): every ``qt.<Name>`` is a distinct do-nothing class.

Slicer's real Python (``slicer.parameterNodeWrapper``, ``slicer.ScriptedLoadableModule``, ``SampleData``)
subclasses and compares Qt classes at import time; these stand-ins give them distinct classes to do that
with. Nothing here draws or runs an event loop.
"""

from _qtstandin import standInModuleGetattr

__getattr__ = standInModuleGetattr(__name__)
