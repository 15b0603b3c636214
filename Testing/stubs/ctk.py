"""Stand-in for PythonQt's ``ctk`` (it needs Qt): every ``ctk.<Name>`` is a distinct do-nothing widget class."""

from _qtstandin import standInModuleGetattr

__getattr__ = standInModuleGetattr(__name__)
