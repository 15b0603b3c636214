"""The Slicer module file: imports, GUI/parameter-node consistency, packaging lists.

``qt``, ``ctk``, ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper`` and
``slicer.i18n`` are replaced by the stand-ins in ``Testing/stubs/`` because they need a running Qt
application, which pytest does not have. Everything else is real: slicer-core's MRML classes and
``slicer.util``, VTK, the engine. The import runs in a subprocess so the stand-ins never enter
this test process (other suites use the real slicer-core).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import typing
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import slicer  # noqa: F401  (slicer-core is a test dependency: fail, do not skip, when absent)

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "VirtualContrast"
MODULE_FILE = MODULE_DIR / "VirtualContrast.py"
UI_FILE = ROOT / "Resources" / "UI" / "VirtualContrast.ui"
STUBS = Path(__file__).resolve().parent / "stubs"

_PROBE = """
import json, sys, typing
import VirtualContrast as module
hints = typing.get_type_hints(module.VirtualContrastParameterNode, include_extras=True)
print(json.dumps({
    "fields": sorted(hints),
    "torch_loaded": "torch" in sys.modules,
    "classes": [name for name in ("VirtualContrast", "VirtualContrastWidget", "VirtualContrastLogic", "VirtualContrastTest")
                if hasattr(module, name)],
    "resource": module.moduleResourcePath("UI/VirtualContrast.ui"),
}))
"""


@pytest.fixture(scope="module")
def imported() -> dict:
    """Import the module file with the Qt stand-ins in a fresh interpreter and report on it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(STUBS), str(MODULE_DIR), env.get("PYTHONPATH", "")])
    completed = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI_FILE).getroot().iter("widget")}


def _parameter_names() -> dict[str, str]:
    names = {}
    for name, widget in _ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                names[name] = prop.findtext("string")
    return names


def test_module_imports_without_torch(imported):
    assert imported["classes"] == ["VirtualContrast", "VirtualContrastWidget", "VirtualContrastLogic", "VirtualContrastTest"]
    assert imported["torch_loaded"] is False


def test_resources_are_found_in_the_source_tree(imported):
    assert Path(imported["resource"]) == UI_FILE


def test_every_widget_the_code_uses_exists_in_the_ui():
    source = MODULE_FILE.read_text(encoding="utf-8")
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    # names built from the modality (getattr(self.ui, f"{modality}Selector"), ...Label)
    if 'f"{modality}Selector"' in source:
        used |= {f"{m}{suffix}" for m in ("t1", "t2", "adc", "flair") for suffix in ("Selector", "Label")}
    missing = sorted(used - set(_ui_widgets()))
    assert not missing, f"widgets used in VirtualContrast.py but absent from the .ui: {missing}"
    assert len(used) > 10


def test_every_parameter_name_in_the_ui_is_a_wrapper_field(imported):
    names = _parameter_names()
    assert names, "the .ui binds no widget to the parameter node"
    unknown = sorted(set(names.values()) - set(imported["fields"]))
    assert not unknown, f"SlicerParameterName values without a parameter node field: {unknown}"
    assert len(set(names.values())) == len(names), "two widgets bind the same parameter"


def test_input_selectors_are_connected_to_the_scene():
    root = ET.parse(UI_FILE).getroot()
    selectors = {n for n, w in _ui_widgets().items() if w.get("class") == "qMRMLNodeComboBox"}
    connected = {c.findtext("receiver") for c in root.iter("connection") if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert selectors and selectors <= connected
    assert root.find("widget").get("class") == "qMRMLWidget"


def test_research_use_label_is_visible():
    label = _ui_widgets()["researchUseLabel"]
    text = next(p.findtext("string") for p in label.findall("property") if p.get("name") == "text")
    assert "research use only" in text and "not for diagnosis" in text


def _cmake_list(variable: str) -> set[str]:
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not found in VirtualContrast/CMakeLists.txt"
    return {line.strip() for line in match.group(1).splitlines() if line.strip() and not line.strip().startswith("#")}


def test_cmake_lists_every_python_file():
    listed = _cmake_list("MODULE_PYTHON_SCRIPTS")
    expected = {"${MODULE_NAME}.py"} | {
        p.relative_to(MODULE_DIR).as_posix()
        for package in ("VirtualContrastLib", "VirtualContrastSlicerLib")
        for p in (MODULE_DIR / package).rglob("*.py") if "__pycache__" not in p.parts
    }
    assert sorted(expected - listed) == [], "Python files missing from MODULE_PYTHON_SCRIPTS"
    assert sorted(listed - expected) == [], "MODULE_PYTHON_SCRIPTS lists files that do not exist"


def test_cmake_lists_every_resource_file():
    listed = _cmake_list("MODULE_RESOURCE_FILES")
    resources = ROOT / "Resources"
    expected = {p.relative_to(resources).as_posix() for p in resources.rglob("*") if p.is_file()}
    assert {"UI/VirtualContrast.ui", "Icons/VirtualContrast.png", "Models/models.json"} <= expected
    assert sorted(expected - listed) == [], "resource files missing from MODULE_RESOURCE_FILES"
    assert sorted(listed - expected) == [], "MODULE_RESOURCE_FILES lists files that do not exist"


def test_extension_metadata():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert 'EXTENSION_DEPENDS "PyTorch"' in text
    assert 'EXTENSION_CATEGORY "Image Synthesis"' in text
    assert "add_subdirectory(VirtualContrast)" in text
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")


def test_icon_is_128_pixels():
    from PIL import Image

    with Image.open(ROOT / "Resources" / "Icons" / "VirtualContrast.png") as icon:
        assert icon.size == (128, 128)
