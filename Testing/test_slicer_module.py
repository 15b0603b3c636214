"""The Slicer module file against Slicer's own Python, for each supported Slicer release.

``../shared/slicer-python/<tag>/`` holds Slicer's unmodified ``slicer.parameterNodeWrapper``,
``slicer.ScriptedLoadableModule``, ``slicer.i18n``, ``slicer.util``, ``slicer.packaging`` (5.12) and
``SampleData`` (README there). They are loaded on top of the real MRML of the ``slicer-core`` wheel; only
Qt is stood in for: ``qt`` and ``ctk`` (Testing/stubs/), Slicer's widget classes and the application object
``slicer.app`` (testing mode, a volume reader on MRML storage nodes, no main window).
A second set of tests imports the module under the Python of each Slicer release (3.9 for 5.8,
3.12 for 5.10+).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import slicer  # slicer-core is a test dependency: fail, do not skip, when absent

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "VirtualContrast"
MODULE_FILE = MODULE_DIR / "VirtualContrast.py"
UI_FILE = ROOT / "Resources" / "UI" / "VirtualContrast.ui"
STUBS = Path(__file__).resolve().parent / "stubs"
SLICER_PYTHON = ROOT.parent / "shared" / "slicer-python"

#: Slicer release tag -> the Python of that release (major, minor).
RELEASES = {"v5.8.1": (3, 9), "v5.12.3": (3, 12)}
#: Slicer's Python files loaded from ../shared/slicer-python/<tag>/slicer (packaging exists from 5.10 on).
REAL_SLICER_SUBMODULES = ("i18n", "parameterNodeWrapper", "ScriptedLoadableModule", "packaging")
#: Modules this file puts into sys.modules and removes again (other suites use plain slicer-core).
_TRANSIENT = ("qt", "ctk", "_qtstandin", "SampleData", "VirtualContrast") + tuple(f"slicer.{n}" for n in REAL_SLICER_SUBMODULES)


def _releaseFolder(tag: str) -> Path:
    folder = SLICER_PYTHON / tag
    if not folder.is_dir():
        pytest.skip(f"Slicer's own Python is not here ({folder}); it is in ../shared in CI")
    return folder


def _loadFile(name: str, path: Path, package: bool = False) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        name, path / "__init__.py" if package else path, submodule_search_locations=[str(path)] if package else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class IOManagerStandIn:
    """Stand-in for ``slicer.app.coreIOManager()`` (Slicer's Qt file-reading service): reads volume files with MRML's own
    ``vtkMRMLVolumeArchetypeStorageNode``; the file names in ``failing`` fail to load, as a broken file would."""

    failing: set = set()

    @staticmethod
    def fileType(fileName: str) -> str:
        return "VolumeFile"

    def loadNodes(self, fileType, properties, loadedNodes, userMessages=None) -> bool:
        path = Path(properties["fileName"])
        if fileType != "VolumeFile" or path.name in self.failing:
            return False
        scene = slicer.mrmlScene
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GetUniqueNameByString(properties.get("name") or path.stem))
        storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        storage.SetFileName(str(path))
        node.SetAndObserveStorageNodeID(storage.GetID())
        if not storage.ReadData(node):
            return False
        node.CreateDefaultDisplayNodes()
        loadedNodes.AddItem(node)
        return True


class ApplicationStandIn:
    """Stand-in for ``slicer.app`` (Slicer's Qt application object, which needs Qt): no translation, volume files read
    by :class:`IOManagerStandIn`; in testing mode (``Slicer --testing``) when ``testing`` says so."""

    testing = False
    applicationName = "Slicer"

    @classmethod
    def testingEnabled(cls) -> bool:
        return cls.testing

    @staticmethod
    def coreIOManager() -> IOManagerStandIn:
        return IOManagerStandIn()

    @staticmethod
    def topLevelWidgets() -> list:
        return []  # no main window: message boxes go to the log, as in Slicer without its main window

    @staticmethod
    def moduleManager():
        from _qtstandin import QtStandIn

        return QtStandIn()  # Slicer's module manager (a Qt object): the widget only connects to its signals

    @staticmethod
    def layoutManager() -> None:
        return None  # no views to lay out or fit: the slice composite nodes of the scene are what the tests read

    #: Override cursors pushed and not yet restored (QApplication's cursor stack).
    cursors: list = []

    @classmethod
    def setOverrideCursor(cls, cursor) -> None:
        cls.cursors.append(cursor)

    @classmethod
    def restoreOverrideCursor(cls) -> None:
        cls.cursors.pop()

    @staticmethod
    def translate(context: str, text: str) -> str:
        return text


def _slicerWidgetClassNames(folder: Path) -> set[str]:
    """Slicer's Qt widget classes (``slicer.qMRMLNodeComboBox``, ...) that this release's Python files use."""
    names = set()
    for path in [*folder.rglob("*.py"), MODULE_FILE]:
        names |= set(re.findall(r"\bslicer\.(q(?:MRML|Slicer)\w+)", path.read_text(encoding="utf-8")))
    return {name for name in names if not hasattr(slicer, name)}


@contextlib.contextmanager
def slicerRelease(tag: str):
    """Slicer's real Python of ``tag`` on slicer-core's MRML, with qt/ctk stand-ins; undone on exit."""
    folder = _releaseFolder(tag)
    savedPath = list(sys.path)
    sys.path[:0] = [str(STUBS), str(MODULE_DIR), str(folder / "SampleData")]
    hadModules, hadApp = hasattr(slicer, "modules"), hasattr(slicer, "app")
    widgetClasses = _slicerWidgetClassNames(folder)
    wheelUtil = slicer.util
    try:
        if not hadApp:
            # Slicer 5.8's slicer.i18n.tr translates through the application at every call
            slicer.app = ApplicationStandIn()
        if not hadModules:
            # Slicer's application fills this namespace with module objects; SampleData keeps its sources there
            slicer.modules = types.SimpleNamespace()
        from _qtstandin import standInModuleGetattr

        widgetStandIn = standInModuleGetattr("slicer")
        for name in widgetClasses:
            setattr(slicer, name, widgetStandIn(name))
        for name in REAL_SLICER_SUBMODULES:
            path = folder / "slicer" / name
            if path.is_dir() or path.with_suffix(".py").is_file():
                module = _loadFile(f"slicer.{name}", path if path.is_dir() else path.with_suffix(".py"), package=path.is_dir())
                setattr(slicer, name, module)
        # the release's own slicer.util (the wheel's is a later, larger one): what the module calls is what Slicer runs
        slicer.util = _loadFile("slicer.util", folder / "slicer" / "util.py")
        yield
    finally:
        slicer.util = sys.modules["slicer.util"] = wheelUtil
        sys.path[:] = savedPath
        for name in list(sys.modules):
            if name.split(".")[0] in _TRANSIENT or any(name == t or name.startswith(t + ".") for t in _TRANSIENT):
                del sys.modules[name]
        for name in (*REAL_SLICER_SUBMODULES, *widgetClasses):
            if name in vars(slicer):
                delattr(slicer, name)
        if not hadModules:
            del slicer.modules
        if not hadApp:
            del slicer.app


@pytest.fixture(params=list(RELEASES), scope="module")
def release(request):
    """The module file imported with one Slicer release's own Python."""
    with slicerRelease(request.param):
        import SampleData
        import VirtualContrast

        yield types.SimpleNamespace(tag=request.param, module=VirtualContrast, SampleData=SampleData)


@pytest.fixture
def scene(release):
    """A fresh MRML scene installed as ``slicer.mrmlScene``."""
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    yield scene
    scene.Clear(1)


def _volume(name: str, shape=(10, 12, 14), nodeClass: str = "vtkMRMLScalarVolumeNode"):
    k, j, i = np.indices(shape, dtype=float)
    centre = (np.array(shape) - 1) / 2
    inside = ((k - centre[0]) / (0.4 * shape[0])) ** 2 + ((j - centre[1]) / (0.4 * shape[1])) ** 2 + ((i - centre[2]) / (0.4 * shape[2])) ** 2 <= 1
    rng = np.random.default_rng(len(name))
    array = (inside * (100 + 20 * rng.random(shape))).astype(np.float32 if nodeClass == "vtkMRMLScalarVolumeNode" else np.uint8)
    ijkToRas = np.diag([3.0, 3.0, 3.0, 1.0])
    return slicer.util.addVolumeFromArray(array, ijkToRas, name=name, nodeClassName=nodeClass)


# -- the module file with Slicer's real parameter node wrapper -----------------------------------------------


def test_module_loads_with_its_classes(release):
    names = ("VirtualContrast", "VirtualContrastWidget", "VirtualContrastLogic", "VirtualContrastTest")
    assert all(hasattr(release.module, name) for name in names)
    assert release.module.slicer.parameterNodeWrapper.isParameterNodeWrapper(release.module.VirtualContrastParameterNode)
    # the module runs on the release's own slicer.util, not on the slicer-core wheel's
    assert Path(release.module.slicer.util.__file__) == SLICER_PYTHON / release.tag / "slicer" / "util.py"


#: Imported only when a synthesis runs (torch, MONAI) or results are shown (the engine's metrics: SciPy, scikit-image).
HEAVY_PACKAGES = ("torch", "monai", "scipy", "skimage", "nilearn")


@pytest.mark.parametrize("tag", list(RELEASES))
def test_module_imports_without_torch_or_other_heavy_packages(tag):
    # a fresh interpreter: this test session has imported torch long before (conftest)
    _releaseFolder(tag)
    probe = (f"import sys; sys.path[:0] = [{str(Path(__file__).parent)!r}]\n"
             "import test_slicer_module as t\n"
             f"with t.slicerRelease({tag!r}):\n"
             "    import VirtualContrast\n"
             f"    print(sorted(name for name in {HEAVY_PACKAGES!r} if name in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(MODULE_DIR), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_parameter_node_is_created_with_its_defaults(release, scene):
    parameterNode = release.module.VirtualContrastLogic().getParameterNode()
    assert parameterNode.parameterNode.GetAttribute("ModuleName") == "VirtualContrast"
    assert parameterNode.brainMask is None and parameterNode.t1 is None
    assert parameterNode.model == release.module.AUTOMATIC_MODEL
    assert parameterNode.device == "auto" and parameterNode.missingPolicy == "error"
    # the same node is found again, not a second one
    release.module.VirtualContrastLogic().getParameterNode()
    assert scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode") == 1


def _valueFor(release, name: str, info, nodes: dict):
    """A non-default value for every parameter the wrapper declares."""
    from typing import get_args

    pnw = slicer.parameterNodeWrapper
    base, annotations = pnw.splitAnnotations(info.unalteredType)
    if pnw.isNodeOrUnionOfNodes(info.unalteredType):
        return nodes["segmentation" if name == "brainMask" else name]
    choice = pnw.findFirstAnnotation(annotations, pnw.Choice)
    if choice is not None:
        return [c for c in choice.choices if c != info.default.value][0]
    span = pnw.findFirstAnnotation(annotations, pnw.WithinRange)
    if span is not None:
        return (span.minimum + span.maximum) / 2
    if base is bool:
        return not info.default.value
    assert base is str, f"no test value for parameter {name} ({base}, {get_args(base)})"
    return "vc-hrfcn16-t1-t2-adc"


def test_every_parameter_is_written_and_read_back(release, scene):
    parameterNode = release.module.VirtualContrastLogic().getParameterNode()
    nodes = {name: _volume(name) for name in ("t1", "t2", "adc", "flair", "outputVolume", "subtractionVolume", "uncertaintyVolume")}
    nodes["segmentation"] = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mask")
    parameters = type(parameterNode).allParameters
    assert {"t1", "t2", "adc", "flair", "brainMask", "model", "device", "overlay"} <= set(parameters)

    written = {name: _valueFor(release, name, info, nodes) for name, info in parameters.items()}
    for name, value in written.items():
        setattr(parameterNode, name, value)
    # read back through a second wrapper of the same MRML node: the values are in the scene, not in Python
    again = type(parameterNode)(parameterNode.parameterNode)
    for name, value in written.items():
        assert getattr(again, name) == value, name

    # the mask may be a label map, a scalar volume, a segmentation or nothing
    for mask in (_volume("label", nodeClass="vtkMRMLLabelMapVolumeNode"), nodes["t2"], nodes["segmentation"], None):
        parameterNode.brainMask = mask
        assert again.brainMask is mask
    with pytest.raises(ValueError):
        parameterNode.device = "abacus"


def test_the_logic_runs_from_the_parameter_node(release, scene, tiny_t1_t2_checkpoint):
    logic = release.module.VirtualContrastLogic()
    parameterNode = logic.getParameterNode()
    parameterNode.t1, parameterNode.t2 = _volume("case_T1"), _volume("case_T2")
    parameterNode.model = str(tiny_t1_t2_checkpoint)
    parameterNode.device = "cpu"
    request = logic.requestFromParameters(parameterNode)
    result = logic.runInProcess(request.inputNodes, request.maskNode, request.settings, request.outputs)
    t1 = parameterNode.t1
    for node in (result.synthetic, result.subtraction):
        assert node.GetImageData().GetDimensions() == t1.GetImageData().GetDimensions()
        assert node.GetAttribute("VirtualContrast.Synthetic") == "true"
    assert result.modelName == "tiny"


# -- the module under the Python of each Slicer release -------------------------------------------------------

_FOREIGN_PROBE = r'''
"""Import the module file under this interpreter with the release's own Slicer Python.

Packages that a bare interpreter lacks (numpy, SimpleITK, vtk, scipy, ... and slicer-core's compiled MRML)
get do-nothing stand-ins so that every line Python executes at import runs: module code, decorators,
class bodies and the annotations evaluated in them (a '|' union fails here on 3.9).
"""
import importlib.abc, importlib.machinery, json, sys, types

tagFolder, stubs, moduleDir, thirdParty = sys.argv[1], sys.argv[2], sys.argv[3], set(json.loads(sys.argv[4]))
sys.path[:0] = [stubs, moduleDir]
from _qtstandin import QtStandIn, standInModuleGetattr


class AbsentPackage(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Last on the meta path: a stand-in for a third-party package the module uses and this interpreter lacks."""
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] not in thirdParty:
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=True)
    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = standInModuleGetattr(spec.name)
        return module
    def exec_module(self, module):
        pass


sys.meta_path.append(AbsentPackage())
stubbed = []

# the 'slicer' package: this release's own Python files; only the compiled MRML classes are stood in for
slicerPackage = types.ModuleType("slicer")
slicerPackage.__path__ = [tagFolder + "/slicer"]


class vtkMRMLNode(QtStandIn):
    """Stand-in for slicer-core's compiled MRML base class (absent from a bare interpreter)."""


widgetStandIn = standInModuleGetattr("slicer")


def mrml(name):
    if name.startswith("vtkMRML"):
        return type(name, (vtkMRMLNode,), {})
    if name.startswith(("qMRML", "qSlicer")):
        return widgetStandIn(name)  # Slicer's Qt widget classes
    raise AttributeError(name)


slicerPackage.vtkMRMLNode = vtkMRMLNode
slicerPackage.__getattr__ = mrml
sys.modules["slicer"] = slicerPackage

import importlib, pkgutil
import VirtualContrast
import VirtualContrastSlicerLib
for info in pkgutil.iter_modules(VirtualContrastSlicerLib.__path__):
    importlib.import_module("VirtualContrastSlicerLib." + info.name)
print(json.dumps({"version": list(sys.version_info[:2]),
                  "wrapped": sys.modules["slicer.parameterNodeWrapper"].isParameterNodeWrapper(VirtualContrast.VirtualContrastParameterNode)}))
'''


def _interpreter(version: tuple[int, int]) -> str | None:
    """An interpreter of that Python version: pyenv's (as on the build machines), else one on PATH."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = sorted(str(p / "bin" / "python") for p in pyenv.glob(f"{version[0]}.{version[1]}.*")) if pyenv.is_dir() else []
    candidates.append(shutil.which(f"python{version[0]}.{version[1]}"))
    for candidate in filter(None, candidates):
        # a pyenv shim exists on PATH even when it cannot run that version: ask the interpreter itself
        check = subprocess.run([candidate, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True)
        if check.returncode == 0 and check.stdout.split() == [str(v) for v in version]:
            return candidate
    return None


def _thirdPartyImports() -> set[str]:
    """Top-level packages imported anywhere in the module folder that are neither the standard library nor ours."""
    import ast

    names = set()
    for path in MODULE_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    ours = {"VirtualContrast", "VirtualContrastLib", "VirtualContrastSlicerLib", "slicer", "SampleData", "PyTorchUtils"}
    return names - set(sys.stdlib_module_names) - ours


@pytest.mark.parametrize("tag", list(RELEASES))
def test_module_imports_under_the_python_of_each_release(tag, tmp_path):
    folder = _releaseFolder(tag)
    version = RELEASES[tag]
    python = _interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version[0]}.{version[1]} interpreter here to check Slicer {tag}")
    probe = tmp_path / "probe.py"
    probe.write_text(_FOREIGN_PROBE, encoding="utf-8")
    completed = subprocess.run([python, "-X", "pycache_prefix=" + str(tmp_path / "pycache"), str(probe), str(folder), str(STUBS),
                                str(MODULE_DIR), json.dumps(sorted(_thirdPartyImports()))],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report == {"version": list(version), "wrapped": True}


# -- the .ui, the CMake lists, the extension metadata ---------------------------------------------------------


def _uiWidgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI_FILE).getroot().iter("widget")}


def _widgetProperty(widget: ET.Element, name: str) -> ET.Element | None:
    return next((p for p in widget.findall("property") if p.get("name") == name), None)


def _parameterNames() -> dict[str, str]:
    names = {}
    for name, widget in _uiWidgets().items():
        prop = _widgetProperty(widget, "SlicerParameterName")
        if prop is not None:
            names[name] = prop.findtext("string")
    return names


def test_resources_are_found_in_the_source_tree(release):
    assert Path(release.module.moduleResourcePath("UI/VirtualContrast.ui")) == UI_FILE


def test_every_widget_the_code_uses_exists_in_the_ui():
    source = MODULE_FILE.read_text(encoding="utf-8")
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    # names built from the modality (getattr(self.ui, f"{modality}Selector"), ...Label)
    if 'f"{modality}Selector"' in source:
        used |= {f"{m}{suffix}" for m in ("t1", "t2", "adc", "flair") for suffix in ("Selector", "Label")}
    missing = sorted(used - set(_uiWidgets()))
    assert not missing, f"widgets used in VirtualContrast.py but absent from the .ui: {missing}"
    assert len(used) > 10


def test_every_parameter_name_in_the_ui_is_a_wrapper_field(release):
    names = _parameterNames()
    assert names, "the .ui binds no widget to the parameter node"
    fields = set(release.module.VirtualContrastParameterNode.allParameters)
    unknown = sorted(set(names.values()) - fields)
    assert not unknown, f"SlicerParameterName values without a parameter node field: {unknown}"
    assert len(set(names.values())) == len(names), "two widgets bind the same parameter"


def test_input_selectors_offer_plain_scalar_volumes_only():
    widgets = _uiWidgets()
    for modality in ("t1", "t2", "adc", "flair"):
        selector = widgets[f"{modality}Selector"]
        assert _widgetProperty(selector, "nodeTypes").find("stringlist").findtext("string") == "vtkMRMLScalarVolumeNode"
        # label maps, DWI/DTI and vector volumes are subclasses of vtkMRMLScalarVolumeNode
        assert _widgetProperty(selector, "showChildNodeTypes").findtext("bool") == "false", modality


def test_output_selectors_offer_one_way_to_create_a_new_volume():
    outputs = {n: w for n, w in _uiWidgets().items() if n in ("outputVolumeSelector", "subtractionVolumeSelector", "uncertaintyVolumeSelector")}
    assert len(outputs) == 3
    for name, selector in outputs.items():
        # 'None' is shown as 'Create new volume' and makes the run create one; the combo box's own
        # 'Create new Volume' entry would be a second, different one (an empty volume made at once)
        assert _widgetProperty(selector, "noneDisplay").findtext("string") == "Create new volume", name
        assert _widgetProperty(selector, "addEnabled").findtext("bool") == "false", name


def test_input_selectors_are_connected_to_the_scene():
    root = ET.parse(UI_FILE).getroot()
    selectors = {n for n, w in _uiWidgets().items() if w.get("class") == "qMRMLNodeComboBox"}
    connected = {c.findtext("receiver") for c in root.iter("connection") if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert selectors and selectors <= connected
    assert root.find("widget").get("class") == "qMRMLWidget"


def test_research_use_label_is_visible():
    text = _widgetProperty(_uiWidgets()["researchUseLabel"], "text").findtext("string")
    assert "research use only" in text and "not for diagnosis" in text


def _cmakeList(variable: str) -> set[str]:
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not found in VirtualContrast/CMakeLists.txt"
    return {line.strip() for line in match.group(1).splitlines() if line.strip() and not line.strip().startswith("#")}


def test_cmake_lists_every_python_file():
    listed = _cmakeList("MODULE_PYTHON_SCRIPTS")
    expected = {"${MODULE_NAME}.py"} | {
        p.relative_to(MODULE_DIR).as_posix()
        for package in ("VirtualContrastLib", "VirtualContrastSlicerLib")
        for p in (MODULE_DIR / package).rglob("*.py") if "__pycache__" not in p.parts
    }
    assert sorted(expected - listed) == [], "Python files missing from MODULE_PYTHON_SCRIPTS"
    assert sorted(listed - expected) == [], "MODULE_PYTHON_SCRIPTS lists files that do not exist"


def test_cmake_lists_every_resource_file():
    listed = _cmakeList("MODULE_RESOURCE_FILES")
    resources = ROOT / "Resources"
    expected = {p.relative_to(resources).as_posix() for p in resources.rglob("*") if p.is_file()}
    assert {"UI/VirtualContrast.ui", "Icons/VirtualContrast.png", "Models/models.json"} <= expected
    assert sorted(expected - listed) == [], "resource files missing from MODULE_RESOURCE_FILES"
    assert sorted(listed - expected) == [], "MODULE_RESOURCE_FILES lists files that do not exist"
    # only what the module reads is packaged: the README's images stay in the repository
    assert {path.split("/")[0] for path in listed} == {"Icons", "Models", "UI"}


def _cmakeSetting(name: str) -> str:
    match = re.search(rf'set\({name}\s+"([^"]*)"', (ROOT / "CMakeLists.txt").read_text(encoding="utf-8"))
    assert match, f"{name} is not set in CMakeLists.txt"
    return match.group(1)


def _repositoryFile(url: str) -> Path:
    """The file a raw.githubusercontent.com URL of this repository's main branch points to."""
    match = re.fullmatch(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/main/(.+)", url)
    assert match, url
    return ROOT / match.group(1)


def test_extension_metadata():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert _cmakeSetting("EXTENSION_DEPENDS") == "PyTorch"
    assert _cmakeSetting("EXTENSION_CATEGORY") == "Image Synthesis"
    assert "add_subdirectory(VirtualContrast)" in text
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    # packages carry this licence and README, not Slicer's
    assert (ROOT / _cmakeSetting("EXTENSION_LICENSE_FILE").replace("${CMAKE_CURRENT_SOURCE_DIR}/", "")).is_file()
    assert (ROOT / _cmakeSetting("EXTENSION_README_FILE").replace("${CMAKE_CURRENT_SOURCE_DIR}/", "")).is_file()
    assert _repositoryFile(_cmakeSetting("EXTENSION_ICONURL")).is_file()
    for url in _cmakeSetting("EXTENSION_SCREENSHOTURLS").split():
        assert _repositoryFile(url).is_file(), url
    # every contributor names an organisation in parentheses, as the Extensions Index shows them
    for contributor in _cmakeSetting("EXTENSION_CONTRIBUTORS").split(","):
        assert re.fullmatch(r"[^()]+\([^()]+\)", contributor.strip()), contributor


def test_extension_catalogue_entry():
    entry = json.loads((ROOT / "VirtualContrast.json").read_text(encoding="utf-8"))
    assert entry["$schema"].rstrip("#").endswith("slicer-extension-catalog-entry-schema-v1.0.1.json")
    # the schema allows no other properties (description, homepage, ... live in CMakeLists.txt)
    assert set(entry) <= {"$schema", "build_dependencies", "build_subdirectory", "category", "scm_revision", "scm_type", "scm_url", "tier"}
    assert entry["build_dependencies"] == ["PyTorch"]
    assert entry["category"] == _cmakeSetting("EXTENSION_CATEGORY")
    assert entry["scm_url"].startswith("https://github.com/") and entry["scm_revision"]
    assert entry["tier"] in (1, 3, 5)


def test_icon_is_128_pixels():
    from PIL import Image

    with Image.open(ROOT / "Resources" / "Icons" / "VirtualContrast.png") as icon:
        assert icon.size == (128, 128)


# -- behaviour behind the panel, with the real parameter node ------------------------------------------------


def test_synthesize_is_refused_for_input_sets_no_model_accepts(release, scene):
    logic = release.module.VirtualContrastLogic()
    parameterNode = logic.getParameterNode()
    parameterNode.t1 = _volume("T1")
    with pytest.raises(release.module.InputError, match="No bundled model trained on real scans works with T1: load T2\\+FLAIR"):
        logic.requestFromParameters(parameterNode)
    parameterNode.t2, parameterNode.adc = _volume("T2"), _volume("ADC")
    # a real T1+T2+ADC: no automatic phantom-trained model; the message says what to load or which model to name
    with pytest.raises(release.module.InputError, match="load FLAIR .*, or name a model to run it anyway \\(trained on phantoms only: "
                                                        "vc-hrfcn16-t1-t2-adc\\)"):
        logic.requestFromParameters(parameterNode)
    # named, it runs, under the warning
    parameterNode.model = "vc-hrfcn16-t1-t2-adc"
    assert logic.requestFromParameters(parameterNode).settings.model == "vc-hrfcn16-t1-t2-adc"
    plan = logic.models.plan(parameterNode.model, ["t1", "t2", "adc"], "error")
    assert "trained on phantoms only" in " ".join(plan.warnings)
    # zero-filling the FLAIR is the user's choice: "Automatic" then resolves to the real-data model
    parameterNode.model, parameterNode.adc, parameterNode.missingPolicy = release.module.AUTOMATIC_MODEL, None, "zeros"
    request = logic.requestFromParameters(parameterNode)
    assert request.settings.model == "vc-hrfcn16-t1-t2-flair-brats18" and request.settings.missingPolicy == "zeros"
    assert set(request.inputNodes) == {"t1", "t2"}
    args = logic.commandLine({"t1": Path("t1.nrrd"), "t2": Path("t2.nrrd")}, Path("out"), request.settings)
    assert args[args.index("--model") + 1] == "vc-hrfcn16-t1-t2-flair-brats18" and args[args.index("--missing") + 1] == "zeros"
    assert "--phantom-data" not in args
    # an input chosen as an output is refused too
    parameterNode.outputVolume = parameterNode.t2
    with pytest.raises(release.module.InputError, match="T2 input"):
        logic.requestFromParameters(parameterNode)


def test_automatic_runs_take_the_real_data_model_on_scans_and_the_phantom_model_on_the_phantom_sample(release, scene):
    logic = release.module.VirtualContrastLogic()
    parameterNode = logic.getParameterNode()
    for modality in ("t1", "t2", "adc", "flair"):
        setattr(parameterNode, modality, _volume(modality.upper()))
    assert logic.requestFromParameters(parameterNode).settings.model == "vc-hrfcn16-t1-t2-flair-brats18"
    # loadPhantomSample marks the sample's volumes; the physics phantom gets the phantom-trained model (issue 13)
    sample = release.module.sample
    assert not sample.isPhantom(parameterNode.t1)
    parameterNode.t1.SetAttribute(sample.PHANTOM_ATTRIBUTE, "true")
    assert sample.isPhantom(parameterNode.t1)
    request = logic.requestFromParameters(parameterNode)
    assert request.settings.model == "vc-hrfcn16-t1-t2-adc" and set(request.inputNodes) == {"t1", "t2", "adc"}


class QSettingsStandIn:
    """Stand-in for ``qt.QSettings`` (Qt): a dictionary."""

    stored: dict = {}

    def value(self, key):
        return self.stored.get(key)

    def setValue(self, key, value):
        self.stored[key] = value


def test_device_and_overlay_are_remembered_for_new_scenes(release, scene, monkeypatch):
    monkeypatch.setattr(release.module.qt, "QSettings", QSettingsStandIn, raising=False)
    QSettingsStandIn.stored = {"VirtualContrast/device": "cpu", "VirtualContrast/overlay": "none"}
    parameterNode = release.module.VirtualContrastLogic().getParameterNode()
    assert (parameterNode.device, parameterNode.overlay) == ("cpu", "none")
    # the scene's own choice wins over the remembered one
    parameterNode.device = "cuda"
    QSettingsStandIn.stored["VirtualContrast/device"] = "auto"
    assert release.module.VirtualContrastLogic().getParameterNode().device == "cuda"
    # a value this version does not offer is ignored
    scene.Clear(0)
    QSettingsStandIn.stored = {"VirtualContrast/device": "tpu", "VirtualContrast/overlay": "uncertainty"}
    parameterNode = release.module.VirtualContrastLogic().getParameterNode()
    assert (parameterNode.device, parameterNode.overlay) == ("auto", "uncertainty")


def test_every_choice_has_words_for_the_panel(release):
    from VirtualContrastLib import options

    choices = release.module.choices
    assert choices.DEVICES == options.DEVICES and choices.MISSING_POLICIES == options.MISSING_POLICIES
    wrapper = release.module.VirtualContrastParameterNode
    for parameter in choices.LABELS:
        allowed = slicer.parameterNodeWrapper.findFirstAnnotation(
            slicer.parameterNodeWrapper.splitAnnotations(wrapper.allParameters[parameter].unalteredType)[1],
            slicer.parameterNodeWrapper.Choice).choices
        assert list(choices.LABELS[parameter]) == list(allowed)
        assert all(label and label != value for value, label in zip(allowed, choices.labels(parameter, tuple(allowed))))


def test_the_phantom_sample_is_registered_and_fetched_by_slicers_own_sample_data(release, scene, tmp_path, monkeypatch):
    cacheManager = slicer.vtkCacheManager()  # the application gives its scene one; a plain scene has none
    scene.SetCacheManager(cacheManager)
    cacheManager.SetRemoteCacheDirectory(str(tmp_path / "cache"))
    sample = release.module.sample
    folder = tmp_path / "generated"
    monkeypatch.setattr(sample, "sampleFolder", lambda: folder)
    release.module.registerSampleData()
    logic = release.SampleData.SampleDataLogic()
    source = logic.sourceForSampleName("VirtualContrastPhantom")
    # the GUI button runs the custom downloader, which generates the case first (no image ships with the extension)
    assert source is not None and source.customDownloader is not None
    generated = sample.generateSampleFiles(folder)
    assert sample.generateSampleFiles(folder) == generated  # generated once, then reused
    # the copy into Slicer's cache is Sample Data's own code (urllib on file:// addresses)
    paths = logic.downloadSourceIntoCache(source)
    assert [Path(p).parent for p in paths] == [tmp_path / "cache"] * 6
    from VirtualContrastSlicerLib import inputs

    nodeNames = dict(zip(release.module.sample.SAMPLE_FILES, source.nodeNames))
    chosen = inputs.autoAssign({key: name for key, name in nodeNames.items()}, {})
    # every input is found by name, and the phantom's true CE-T1 is never taken for the pre-contrast T1
    assert chosen == {"t1": "t1", "t2": "t2", "adc": "adc", "flair": "flair"}
    import SimpleITK as sitk

    t1 = sitk.ReadImage(paths[0])
    trueCe = sitk.ReadImage(paths[list(nodeNames).index("t1c")])
    assert t1.GetSize() == trueCe.GetSize() and t1.GetOrigin() == trueCe.GetOrigin()
    assert "SYNTHETIC" in t1.GetMetaData("ITK_FileNotes")


def test_the_self_test_skips_with_the_reason_where_synthesis_cannot_run(release, scene):
    import unittest

    assert release.module.VirtualContrastLogic.dependencyProblem() == "the 'PyTorch' extension is not installed"
    suite = unittest.TestLoader().loadTestsFromTestCase(release.module.VirtualContrastTest)
    result = unittest.TestResult()
    suite.run(result)
    assert result.wasSuccessful() and result.testsRun == 1
    assert [reason for _, reason in result.skipped] == ["VirtualContrastTest skipped: the 'PyTorch' extension is not installed"]


def test_a_test_run_installs_nothing_and_the_self_test_skips_without_the_samples_packages(release, scene, monkeypatch):
    import unittest

    installs = []
    module = release.module
    monkeypatch.setattr(module.VirtualContrastLogic, "dependencyProblem", staticmethod(lambda: None))  # as if synthesis could run
    monkeypatch.setattr(module.VirtualContrastLogic, "_installPackages", staticmethod(lambda packages, ask: installs.append(packages)))
    monkeypatch.setattr(module.dependencies, "SAMPLE_REQUIREMENTS", ("virtualcontrast-absent-package>=1",))
    result = unittest.TestResult()
    unittest.TestLoader().loadTestsFromTestCase(module.VirtualContrastTest).run(result)
    assert result.wasSuccessful() and [reason for _, reason in result.skipped] == [
        "VirtualContrastTest skipped: missing packages for the phantom sample: virtualcontrast-absent-package>=1"]
    monkeypatch.setattr(ApplicationStandIn, "testing", True)
    with pytest.raises(module.VirtualContrastError, match="^the phantom sample needs virtualcontrast-absent-package>=1; a test run installs nothing$"):
        module.loadPhantomSample()
    assert installs == []


@pytest.fixture(scope="session")
def generatedSample(tmp_path_factory) -> Path:
    """The phantom sample's files, generated once for the session by the module's own code (about 15 s)."""
    sys.path.insert(0, str(MODULE_DIR))
    from VirtualContrastSlicerLib import sample

    folder = tmp_path_factory.mktemp("sample")
    sample.generateSampleFiles(folder)
    return folder


def test_load_phantom_sample_loads_each_image_as_what_it_is_even_when_one_file_fails(release, scene, generatedSample, tmp_path,
                                                                                     monkeypatch):
    cacheManager = slicer.vtkCacheManager()  # the application gives its scene one; a plain scene has none
    scene.SetCacheManager(cacheManager)
    cacheManager.SetRemoteCacheDirectory(str(tmp_path / "cache"))
    sample = release.module.sample
    folder = tmp_path / "temp"
    shutil.copytree(generatedSample, folder)
    monkeypatch.setattr(sample, "sampleFolder", lambda: folder)
    monkeypatch.setattr(slicer.modules, "sampleDataSources", {}, raising=False)
    release.module.registerSampleData()  # as at Slicer's startup
    nodes = release.module.loadPhantomSample()
    assert {key: node.GetName() for key, node in nodes.items()} == {key: name for key, (_, name) in sample.SAMPLE_FILES.items()}
    assert all(sample.isPhantom(node) for node in nodes.values())
    # the temporary folder is cleared: the case in Slicer's cache is used, not generated again
    shutil.rmtree(folder)
    monkeypatch.setattr("VirtualContrastLib.phantom.generate_case", lambda *a, **k: pytest.fail("generated again"))
    again = release.module.loadPhantomSample()
    assert again["t1"].GetName() == "Phantom_T1_1" and np.array_equal(slicer.util.arrayFromVolume(again["t1"]),
                                                                      slicer.util.arrayFromVolume(nodes["t1"]))
    # a file that fails to load is named; it does not make the T2 the "T1"
    monkeypatch.setattr(IOManagerStandIn, "failing", {sample.sampleFileNames()[0]})
    with pytest.raises(release.module.VirtualContrastError, match="^the phantom sample's T1 did not load; see the Python console$"):
        release.module.loadPhantomSample()


def test_the_sample_files_change_name_when_the_generator_changes(release, monkeypatch):
    sample = release.module.sample
    names = sample.sampleFileNames()
    assert all(sample.generatorFingerprint() in name for name in names) and len(set(names)) == len(names)
    monkeypatch.setattr(sample, "SAMPLE_SPACING_MM", 3.0)
    assert sample.sampleFileNames() != names  # Slicer's cache, keyed by file name, cannot serve the old case


def test_the_sample_data_button_shows_that_it_works_and_why_it_failed(release, scene, monkeypatch, caplog):
    import logging

    module = release.module
    source = _registeredSource(release, monkeypatch)
    assert source.customDownloader is module.loadPhantomSampleFromButton

    def fail():
        assert ApplicationStandIn.cursors, "no wait cursor while the case is generated"
        raise module.VirtualContrastError("nilearn could not be installed")

    monkeypatch.setattr(module, "loadPhantomSample", fail)
    with caplog.at_level(logging.ERROR), pytest.raises(module.VirtualContrastError):
        source.customDownloader(source)
    # the message box (logged where there is no main window) says what failed, and the cursor is back
    assert "The VirtualContrast phantom sample could not be loaded.\n\nnilearn could not be installed" in caplog.text
    assert ApplicationStandIn.cursors == []


def _registeredSource(release, monkeypatch):
    monkeypatch.setattr(slicer.modules, "sampleDataSources", {}, raising=False)
    release.module.registerSampleData()
    return release.SampleData.SampleDataLogic().sourceForSampleName(release.module.sample.SAMPLE_NAME)


def test_the_help_is_short_with_the_model_cards_one_click_away(release):
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    text = release.module.helpText()
    assert len(text) < 2500 and "<pre>" not in text and "trained on real scans" in text
    cards = re.findall(r'href="(file:[^"]+)"', text)
    assert len(cards) == 5 and all(Path(url2pathname(urlparse(card).path)).read_text(encoding="utf-8").startswith("#") for card in cards)
    assert "BraTS" in release.module.ACKNOWLEDGEMENT and "MNI152" in release.module.ACKNOWLEDGEMENT


def test_results_are_shown_when_the_run_ends_after_the_user_left_the_module(release, scene):
    from VirtualContrastSlicerLib.logic import SynthesisOutputs

    module = release.module
    composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    logic = module.VirtualContrastLogic()
    logic.getParameterNode().overlayOpacity = 0.3
    t1 = _volume("T1")
    images = {"synthetic": logic.inputImages({"t1": t1})["t1"], "uncertainty": None}
    images["subtraction"] = images["synthetic"] * 0
    stored = logic.storeResults(images, t1, {}, "tiny", [])
    panel = type("ModulePanelStandIn", (module.qt.QWidget,), {"__bool__": lambda self: True})()  # Slicer's module panel
    widget = module.VirtualContrastWidget(panel)  # the panel's Qt parts are stand-ins; its logic and parameter node are real
    widget.logic, widget.ui, widget._pollTimer = logic, module.qt.QWidget(), module.qt.QTimer()
    widget.exit()  # the user went to another module while the engine ran
    job = types.SimpleNamespace(error=None, result=SynthesisOutputs(stored.synthetic, stored.subtraction, None, "tiny", []))
    widget._onJobFinished(job)
    assert composite.GetBackgroundVolumeID() == stored.synthetic.GetID()
    assert composite.GetForegroundVolumeID() == stored.subtraction.GetID() and composite.GetForegroundOpacity() == pytest.approx(0.3)
