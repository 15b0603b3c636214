"""VirtualContrast: synthetic contrast-enhanced T1 brain MRI from pre-contrast scans, in 3D Slicer.

The Slicer classes only: the engine is ``VirtualContrastLib`` and the MRML side (node <-> image
conversion, output nodes, the background process) is ``VirtualContrastSlicerLib``. torch is
imported only when a synthesis runs, never when the module loads.
"""

import html
import logging
import os
from typing import Annotated, Union

import ctk
import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from VirtualContrastLib import INTENDED_USE, MODALITIES, __version__
from VirtualContrastLib.errors import CancelledError, CheckpointError, VirtualContrastError
from VirtualContrastSlicerLib import dependencies, inputs, outputs
from VirtualContrastSlicerLib.logic import SynthesisLogic, SynthesisSettings

#: Devices offered in the GUI, as the engine's ``--device`` understands them.
DEVICES = ["auto", "cpu", "cuda"]
#: Policies for an input the model needs but the user did not give (the engine's ``--missing``).
MISSING_POLICIES = ["error", "auxiliary", "zeros"]
#: Overlay shown over the synthetic CE-T1.
OVERLAYS = ["subtraction", "uncertainty", "none"]

AUTOMATIC_MODEL = ""
LOAD_CHECKPOINT = "<load checkpoint>"

SAMPLE_CATEGORY = "VirtualContrast"
SAMPLE_NAME = "VirtualContrastPhantom"


def moduleResourcePath(relativePath: str) -> str:
    """A resource file beside the module (installed layout) or in the repository's top-level ``Resources``."""
    moduleDir = os.path.dirname(os.path.abspath(__file__))
    for resources in (os.path.join(moduleDir, "Resources"), os.path.join(os.path.dirname(moduleDir), "Resources")):
        candidate = os.path.join(resources, relativePath)
        if os.path.exists(candidate):
            return candidate
    return os.path.join(moduleDir, "Resources", relativePath)


#
# VirtualContrast
#


class VirtualContrast(ScriptedLoadableModule):
    """Module description shown in Slicer: title, category, help with the intended use and model cards."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Virtual Contrast")
        self.parent.categories = [_("Image Synthesis")]
        self.parent.dependencies = []
        self.parent.contributors = ["VirtualContrast developers"]
        self.parent.helpText = helpText()
        self.parent.acknowledgementText = _(
            "Method: Chen et al., 'Synthesizing MR Image Contrast Enhancement Using 3D High-resolution ConvNets', "
            "IEEE Transactions on Biomedical Engineering, 2022. PyTorch is provided by the PyTorch extension."
        )
        if not hasattr(parent, "icon") or parent.icon.isNull():
            parent.icon = qt.QIcon(moduleResourcePath("Icons/VirtualContrast.png"))
        slicer.app.connect("startupCompleted()", registerSampleData)

    def resourcePath(self, filename):
        """Resources in the installed layout or the source tree."""
        return moduleResourcePath(filename)


def helpText() -> str:
    """Help: what the module does, the intended use, and the card of every bundled model."""
    from VirtualContrastLib import registry

    text = (
        "<p>Predicts a <b>synthetic</b> contrast-enhanced T1 (CE-T1) and an enhancement (subtraction) map from "
        "pre-contrast T1 and, depending on the model, T2, ADC and FLAIR. All inputs are resampled onto the T1 grid; "
        "the outputs lie exactly on it.</p>"
        f"<p><b>Intended use.</b> {INTENDED_USE}</p>"
        f"<p>VirtualContrast {__version__}. Sample data: 'Sample Data' module, category '{SAMPLE_CATEGORY}'.</p>"
    )
    try:
        entries = [e for e in registry.list_models() if e.role == "synthesis"]
    except CheckpointError as error:
        return text + f"<p>Bundled models could not be listed: {error}</p>"
    for entry in entries:
        card = registry.read_card(entry)
        text += f"<h3>Model {entry.name}</h3><p>Inputs: {', '.join(m.upper() for m in entry.inputs)}. {entry.description}</p>"
        if entry.intended_use:
            text += f"<p>{entry.intended_use}</p>"
        if card:
            text += f"<pre>{html.escape(card)}</pre>"
    return text


#
# Sample data: a synthetic phantom generated locally (no download is needed or possible offline)
#


def registerSampleData():
    """Add the phantom case to the Sample Data module; it is generated on the user's click."""
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category=SAMPLE_CATEGORY,
        sampleName=SAMPLE_NAME,
        thumbnailFileName=moduleResourcePath("Icons/VirtualContrast.png"),
        uris="generated-locally://VirtualContrastPhantom",
        fileNames="VirtualContrastPhantom.nrrd",
        nodeNames=SAMPLE_NAME,
        customDownloader=lambda source: loadPhantomSample(),
    )


def loadPhantomSample(seed: int | None = None, spacing: float = 2.0) -> dict:
    """Generate (or reuse) the phantom case (default: the demo's) in Slicer's cache folder and load T1, T2, ADC, FLAIR and mask."""
    from VirtualContrastLib import DEMO_SEED, phantom

    seed = DEMO_SEED if seed is None else seed

    cacheDir = os.path.join(slicer.app.cachePath, "VirtualContrast", f"phantom-seed{seed}-{spacing:g}mm")
    caseId = "VirtualContrastPhantom"
    files = {key: phantom.FILE_SUFFIXES[key] for key in ("t1", "t2", "adc", "flair", "brainmask")}
    paths = {key: os.path.join(cacheDir, caseId, f"{caseId}-{suffix}.nii.gz") for key, suffix in files.items()}
    if not all(os.path.isfile(p) for p in paths.values()):
        with slicer.util.tryWithErrorDisplay(_("Failed to generate the phantom case."), waitCursor=True):
            written = phantom.write_case(phantom.generate_case(seed, spacing=spacing), cacheDir, caseId)
            paths = {key: str(written[key]) for key in files}
    nodes = {}
    for key, path in paths.items():
        name = f"Phantom_{key.upper() if key != 'brainmask' else 'brain_mask'}"
        if key == "brainmask":
            nodes[key] = slicer.util.loadLabelVolume(path, properties={"name": name})
        else:
            nodes[key] = slicer.util.loadVolume(path, properties={"name": name})
    return nodes


#
# Parameter node
#


@parameterNodeWrapper
class VirtualContrastParameterNode:
    """GUI state saved with the scene; widgets bind through their ``SlicerParameterName`` property."""

    t1: vtkMRMLScalarVolumeNode
    t2: vtkMRMLScalarVolumeNode
    adc: vtkMRMLScalarVolumeNode
    flair: vtkMRMLScalarVolumeNode
    brainMask: Union[vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode]
    model: str = AUTOMATIC_MODEL
    device: Annotated[str, Choice(DEVICES)] = "auto"
    overlap: Annotated[float, WithinRange(0.0, 0.9)] = 0.33
    uncertainty: bool = False
    missingPolicy: Annotated[str, Choice(MISSING_POLICIES)] = "error"
    outputVolume: vtkMRMLScalarVolumeNode
    subtractionVolume: vtkMRMLScalarVolumeNode
    uncertaintyVolume: vtkMRMLScalarVolumeNode
    overlay: Annotated[str, Choice(OVERLAYS)] = "subtraction"
    overlayOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5


#
# VirtualContrastWidget
#


class VirtualContrastWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: inputs, model, outputs, Synthesize/Cancel, progress, display and log."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._pollTimer = None
        self._lastOutputs = None

    def resourcePath(self, filename):
        """Resources in the installed layout or the source tree."""
        return moduleResourcePath(filename)

    def setup(self) -> None:
        """Load the .ui, connect widgets and the scene (needs neither torch nor a network)."""
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/VirtualContrast.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = VirtualContrastLogic()

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(200)
        self._pollTimer.connect("timeout()", self._pollJob)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self.onNodeAdded)

        self._populateModels()
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Stop a running synthesis and remove observers when the module is unloaded."""
        if self._job is not None:
            self._job.cancel()
        self.removeObservers()

    def enter(self) -> None:
        """Make sure the parameter node exists and inputs are pre-selected."""
        self.initializeParameterNode()

    def exit(self) -> None:
        """Stop reacting to parameter changes while another module is shown."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        """The parameter node goes away with the scene; a running synthesis is cancelled."""
        if self._job is not None:
            self._job.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        """Recreate the parameter node for the new scene."""
        if self.parent.isEntered:
            self.initializeParameterNode()

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeAdded(self, caller, event, node) -> None:
        """Pre-select newly loaded volumes by name once they have one (names are set after adding)."""
        if node.IsA("vtkMRMLScalarVolumeNode"):
            qt.QTimer.singleShot(0, self._autoAssignInputs)

    def initializeParameterNode(self) -> None:
        """Use the scene's parameter node and pre-select inputs by volume name."""
        self.setParameterNode(self.logic.getParameterNode())
        self._autoAssignInputs()

    def setParameterNode(self, inputParameterNode) -> None:
        """Bind the GUI to a parameter node (or unbind with None)."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._selectModelInCombo(self._parameterNode.model)
            self._onParameterNodeModified()

    def _autoAssignInputs(self) -> None:
        if not self._parameterNode:
            return
        volumes = {}
        for index in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
            node = slicer.mrmlScene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
            if not node.IsA("vtkMRMLLabelMapVolumeNode") and not outputs.isSynthetic(node):
                volumes[node.GetID()] = node.GetName()
        assigned = {m: (getattr(self._parameterNode, m).GetID() if getattr(self._parameterNode, m) else None) for m in MODALITIES}
        for modality, nodeId in inputs.autoAssign(volumes, assigned).items():
            setattr(self._parameterNode, modality, slicer.mrmlScene.GetNodeByID(nodeId))

    # -- model selection ------------------------------------------------------------------------

    def _populateModels(self) -> None:
        from VirtualContrastLib import registry

        combo = self.ui.modelComboBox
        combo.clear()
        combo.addItem(_("Automatic (best bundled model for the selected inputs)"), AUTOMATIC_MODEL)
        try:
            entries = [e for e in registry.list_models() if e.role == "synthesis"]
        except CheckpointError as error:
            entries = []
            self._appendLog(str(error))
        for entry in entries:
            combo.addItem(f"{entry.name} ({'+'.join(m.upper() for m in entry.inputs)})", entry.name)
        combo.addItem(_("Load checkpoint file…"), LOAD_CHECKPOINT)

    def _selectModelInCombo(self, model: str) -> None:
        combo = self.ui.modelComboBox
        index = combo.findData(model)
        if index < 0 and model:
            combo.insertItem(combo.count - 1, os.path.basename(model), model)
            index = combo.findData(model)
        wasBlocked = combo.blockSignals(True)
        combo.setCurrentIndex(max(index, 0))
        combo.blockSignals(wasBlocked)

    def onModelChanged(self, index: int) -> None:
        """Store the chosen model; 'Load checkpoint file…' asks for a file and checks it."""
        if not self._parameterNode:
            return
        model = self.ui.modelComboBox.itemData(index)
        if model == LOAD_CHECKPOINT:
            path = qt.QFileDialog.getOpenFileName(
                slicer.util.mainWindow(), _("Select a VirtualContrast checkpoint"), "", _("Checkpoints (*.pt *.pth);;All files (*)"))
            problem = self.logic.checkpointProblem(path) if path else _("no file selected")
            if problem:
                if path:
                    slicer.util.errorDisplay(_("This file cannot be used as a model: {error}").format(error=problem))
                self._selectModelInCombo(self._parameterNode.model)
                return
            model = path
            self._selectModelInCombo(model)
        self._parameterNode.model = model

    # -- GUI state ------------------------------------------------------------------------------

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        if not self._parameterNode:
            return
        needed = self.logic.modelInputs(self._parameterNode.model)
        shown = set(MODALITIES) if needed is None else set(needed) | {"t1"}
        for modality in MODALITIES:
            getattr(self.ui, f"{modality}Selector").visible = modality in shown
            getattr(self.ui, f"{modality}Label").visible = modality in shown
            required = needed is not None and modality in needed or modality == "t1"
            getattr(self.ui, f"{modality}Label").text = f"{'*' if required else ''}{modality.upper() if modality != 't1' else 'Pre-contrast T1'}:"
        self.ui.modelInfoLabel.text = self.logic.modelDescription(self._parameterNode.model)
        self.ui.uncertaintyVolumeSelector.enabled = self._parameterNode.uncertainty
        if self._job is None:
            missing = [m.upper() for m in (needed or ["t1"]) if getattr(self._parameterNode, m) is None]
            if self._parameterNode.missingPolicy != "error":
                missing = [m for m in missing if m == "T1"]
            self.ui.applyButton.enabled = not missing
            self.ui.applyButton.toolTip = (_("Select: {inputs}").format(inputs=", ".join(missing)) if missing
                                           else _("Synthesize the contrast-enhanced T1"))
        self._updateOverlay()

    def _updateOverlay(self) -> None:
        if self._lastOutputs is None or not slicer.mrmlScene.IsNodePresent(self._lastOutputs.synthetic):
            return
        overlayNode = {"subtraction": self._lastOutputs.subtraction, "uncertainty": self._lastOutputs.uncertainty}.get(self._parameterNode.overlay)
        outputs.showInSliceViews(None, overlayNode, self._parameterNode.overlayOpacity)

    def _appendLog(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)

    def _showProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message

    # -- running --------------------------------------------------------------------------------

    def onApplyButton(self) -> None:
        """Synthesize, or cancel the running synthesis."""
        if self._job is not None:
            self._job.cancel()
            self.ui.statusLabel.text = _("Cancelling…")
            return
        with slicer.util.tryWithErrorDisplay(_("Synthesis could not start."), waitCursor=True):
            self.logic.ensureDependencies(askConfirmation=True)
            p = self._parameterNode
            self.ui.logTextEdit.clear()
            self._job = self.logic.startFromParameterNode(p, onProgress=self._showProgress, onLog=self._appendLog,
                                                          onFinished=self._onJobFinished)
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the synthesis; nothing is added to the scene")
            self.ui.progressBar.visible = True
            self._pollTimer.start()

    def _pollJob(self) -> None:
        if self._job is not None:
            self._job.poll()

    def _onJobFinished(self, job) -> None:
        self._pollTimer.stop()
        self._job = None
        self.ui.applyButton.text = _("Synthesize")
        self.ui.progressBar.visible = False
        self._onParameterNodeModified()
        if isinstance(job.error, CancelledError):
            self.ui.statusLabel.text = _("Cancelled; the scene was not changed.")
            return
        if job.error is not None:
            self.ui.statusLabel.text = _("Failed: {error}").format(error=job.error)
            slicer.util.errorDisplay(_("Synthesis failed: {error}").format(error=job.error),
                                     detailedText=self.ui.logTextEdit.toPlainText())
            return
        self._lastOutputs = job.result
        p = self._parameterNode
        overlayNode = {"subtraction": job.result.subtraction, "uncertainty": job.result.uncertainty}.get(p.overlay)
        outputs.showInSliceViews(job.result.synthetic, overlayNode, p.overlayOpacity)
        status = _("Done with model {model}. Synthetic images — research use only.").format(model=job.result.modelName)
        if job.result.notes:
            status += "\n" + "\n".join(job.result.notes)
        self.ui.statusLabel.text = status


#
# VirtualContrastLogic
#


class VirtualContrastLogic(ScriptedLoadableModuleLogic, SynthesisLogic):
    """Scriptable synthesis on volume nodes (see ``SynthesisLogic.process``), plus Slicer-only services:
    the parameter node, dependency installation and non-blocking runs polled by a QTimer.

    Example (Python console)::

        logic = slicer.util.getModuleLogic("VirtualContrast")
        result = logic.process(t1Node, t2Node, adcNode)   # blocks; returns the output nodes
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        SynthesisLogic.__init__(self)
        self._timers = []

    def getParameterNode(self):
        """The module's parameter node in the current scene, typed."""
        return VirtualContrastParameterNode(super().getParameterNode())

    def ensureDependencies(self, askConfirmation: bool = True) -> None:
        """Install torch (PyTorch extension) and the engine's packages, with the user's confirmation."""
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            raise VirtualContrastError(_("This module needs the 'PyTorch' extension: install it from the Extensions Manager "
                                         "and restart Slicer.")) from None
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            try:
                torch = torchLogic.installTorch(askConfirmation=askConfirmation, torchVersionRequirement=dependencies.TORCH_REQUIREMENT)
            except Exception as error:
                raise VirtualContrastError(_("PyTorch could not be installed ({error}).\n\n{help}").format(
                    error=error, help=dependencies.offlineInstructions([f"torch{dependencies.TORCH_REQUIREMENT}"]))) from None
            if torch is None:
                raise VirtualContrastError(_("PyTorch is required to synthesize images; installation was declined."))
        missing = dependencies.missingRequirements()
        if not missing:
            return
        try:
            self._installPackages(missing, askConfirmation)
        except Exception as error:
            raise VirtualContrastError(_("Required packages could not be installed ({error}).\n\n{help}").format(
                error=error, help=dependencies.offlineInstructions(missing))) from None
        stillMissing = dependencies.missingRequirements()
        if stillMissing:
            raise VirtualContrastError(_("Still missing: {packages}.\n\n{help}").format(
                packages=", ".join(stillMissing), help=dependencies.offlineInstructions(stillMissing)))

    @staticmethod
    def _installPackages(requirements: list, askConfirmation: bool) -> None:
        try:
            from slicer.packaging import pip_ensure
        except ImportError:
            pip_ensure = None
        if pip_ensure is not None:
            from packaging.requirements import Requirement

            pip_ensure([Requirement(r) for r in requirements], prompt_install=askConfirmation, requester="VirtualContrast")
            return
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                _("VirtualContrast needs these Python packages, which will be downloaded and installed now:"),
                detailedText="\n".join(requirements)):
            raise VirtualContrastError(_("installation was declined"))
        slicer.util.pip_install(requirements)

    def modelInputs(self, model: str):
        """Inputs the model needs (None when unknown: automatic choice, unreadable file, or no torch yet)."""
        from VirtualContrastLib import registry

        if not model or model == LOAD_CHECKPOINT:
            return None
        entry = registry.find_model(model)
        if entry is not None:
            return list(entry.inputs)
        try:
            from VirtualContrastLib.checkpoints import load_checkpoint

            return list(load_checkpoint(model).config.inputs)
        except (ImportError, CheckpointError):
            return None

    @staticmethod
    def checkpointProblem(path: str):
        """Why a checkpoint file cannot be used, or None (also None when torch is not installed yet to check it)."""
        try:
            from VirtualContrastLib.checkpoints import load_checkpoint

            load_checkpoint(path)
        except ImportError:
            return None
        except CheckpointError as error:
            return str(error)
        return None

    def modelDescription(self, model: str) -> str:
        """One line about the chosen model for the panel."""
        from VirtualContrastLib import registry

        if not model:
            return _("The bundled model that uses the most of the selected inputs is chosen automatically.")
        entry = registry.find_model(model)
        if entry is None:
            return _("Checkpoint file: {path}").format(path=model)
        seconds = f" About {entry.cpu_seconds_per_volume:.0f} s per volume on a CPU." if entry.cpu_seconds_per_volume else ""
        return f"{entry.description}{seconds}"

    def startFromParameterNode(self, parameterNode, onProgress=None, onLog=None, onFinished=None):
        """Start a background synthesis with the GUI's choices."""
        p = parameterNode
        inputNodes = self.collectInputs(p.t1, p.t2, p.adc, p.flair)
        needed = self.modelInputs(p.model) or []
        inputNodes = {m: n for m, n in inputNodes.items() if not needed or m in needed or m == "t1"}
        settings = SynthesisSettings(model=p.model or None, device=p.device, overlap=p.overlap,
                                     uncertainty=p.uncertainty, missingPolicy=p.missingPolicy)
        outputNodes = {"synthetic": p.outputVolume, "subtraction": p.subtractionVolume,
                       "uncertainty": p.uncertaintyVolume if p.uncertainty else None}
        return self.start(inputNodes, p.brainMask, settings, outputNodes, onProgress, onLog, onFinished)

    def processInBackground(self, t1, t2=None, adc=None, flair=None, mask=None, model=None, device="auto",
                            onProgress=None, onFinished=None, **options):
        """Non-blocking :meth:`process` for the Python console: a QTimer polls the job."""
        settings = SynthesisSettings(model=model, device=device, **options)
        job = self.start(self.collectInputs(t1, t2, adc, flair), mask, settings, {}, onProgress, logging.info, onFinished)
        timer = qt.QTimer()
        timer.setInterval(200)
        timer.connect("timeout()", lambda: job.poll() or self._stopTimer(timer))
        self._timers.append(timer)
        timer.start()
        return job

    def _stopTimer(self, timer) -> None:
        timer.stop()
        self._timers.remove(timer)


#
# VirtualContrastTest
#


class VirtualContrastTest(ScriptedLoadableModuleTest):
    """In-Slicer test: phantom sample -> bundled default model (blocking path) -> checked outputs."""

    def setUp(self):
        """Start from an empty scene."""
        slicer.mrmlScene.Clear()

    def runTest(self):
        """Run all tests of the module."""
        self.setUp()
        self.test_VirtualContrastPhantom()

    def test_VirtualContrastPhantom(self):
        """Synthesize on the 2 mm phantom and check grid, values and labelling."""
        import numpy as np

        self.delayDisplay("Generating the phantom case")
        nodes = loadPhantomSample(spacing=2.0)
        logic = VirtualContrastLogic()
        self.delayDisplay("Synthesizing with the bundled default model")
        result = logic.process(nodes["t1"], nodes["t2"], nodes["adc"], nodes["flair"], mask=nodes["brainmask"], device="cpu")
        t1 = nodes["t1"]
        for node in (result.synthetic, result.subtraction):
            self.assertEqual(node.GetImageData().GetDimensions(), t1.GetImageData().GetDimensions())
            matrix, reference = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
            node.GetIJKToRASMatrix(matrix)
            t1.GetIJKToRASMatrix(reference)
            np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(matrix), slicer.util.arrayFromVTKMatrix(reference), atol=1e-6)
            self.assertTrue(outputs.isSynthetic(node))
            self.assertIn("synthetic", node.GetName().lower())
        synthetic = slicer.util.arrayFromVolume(result.synthetic)
        brain = slicer.util.arrayFromVolume(nodes["brainmask"]) > 0
        self.assertTrue(np.all(np.isfinite(synthetic)))
        self.assertGreater(np.count_nonzero(synthetic[brain]), 0.5 * brain.sum())
        self.delayDisplay("Test passed")
