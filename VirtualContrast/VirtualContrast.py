"""VirtualContrast: synthetic contrast-enhanced T1 brain MRI from pre-contrast scans, in 3D Slicer.

The Slicer classes only, a thin GUI as in Slicer's module template: the engine is ``VirtualContrastLib``
and the testable Slicer side (node <-> image conversion, output nodes and overlays, model choice and run
plans, dependencies, the background process, sample data, option lists) is ``VirtualContrastSlicerLib``.
torch is imported only when a synthesis runs, never when the module loads. Runs under Slicer 5.8
(Python 3.9) to 5.12: no ``X | None`` in annotations that Python evaluates.
"""

import html
import logging
import os
import sys
import unittest
from pathlib import Path
from typing import Annotated, Union

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
from VirtualContrastLib.errors import CancelledError, CheckpointError, InputError, VirtualContrastError
from VirtualContrastSlicerLib import choices, dependencies, inputs, outputs, sample, studies
from VirtualContrastSlicerLib.logic import SynthesisLogic, SynthesisSettings
from VirtualContrastSlicerLib.models import AUTOMATIC_MODEL, imageWarnings
from VirtualContrastSlicerLib.volumes import ijkToRasFromNode

LOAD_CHECKPOINT = "<load checkpoint>"
#: Set on a parameter node once the choices remembered between scenes have been applied to it.
REMEMBERED_APPLIED_ATTRIBUTE = "VirtualContrast.RememberedChoicesApplied"


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
        self.parent.contributors = ["VirtualContrast developers (VirtualContrast project)"]
        self.parent.helpText = helpText()
        self.parent.acknowledgementText = _(ACKNOWLEDGEMENT)
        if not hasattr(parent, "icon") or parent.icon.isNull():
            parent.icon = qt.QIcon(moduleResourcePath("Icons/VirtualContrast.png"))
        slicer.app.connect("startupCompleted()", registerSampleData)

    def resourcePath(self, filename):
        """Resources in the installed layout or the source tree."""
        return moduleResourcePath(filename)


HOMEPAGE = "https://github.com/virtualcontrast/SlicerVirtualContrast"


def helpText() -> str:
    """Short help: what the module does, the intended use, the model-choice rule, and one link per model card."""
    from VirtualContrastLib import registry

    text = (
        "<p>Predicts a <b>synthetic</b> contrast-enhanced T1 (CE-T1) and an enhancement map from pre-contrast T1 and, "
        "depending on the model, T2, ADC and FLAIR, on the T1's grid.</p>"
        f"<p><b>Intended use.</b> {INTENDED_USE}</p>"
        "<p><b>Automatic</b> model choice: on real scans only a model trained on real scans, using the inputs it can; "
        "phantom-trained models only when chosen by name, with a warning.</p>"
        f"<p><a href=\"{HOMEPAGE}#3d-slicer-extension\">Documentation</a>. Sample data: 'Sample Data' module, category "
        f"'{sample.CATEGORY}'. VirtualContrast {__version__}.</p>"
    )
    try:
        entries = [entry for entry in registry.list_models() if entry.card]
        folder = registry.models_dir()
    except CheckpointError as error:
        return text + f"<p>Bundled models could not be listed: {html.escape(str(error))}</p>"
    # the cards (data, metrics, limits) are one click away, not pasted into the help
    links = [f'<a href="{(folder / entry.card).as_uri()}">{html.escape(entry.name)}</a>' for entry in entries
             if folder is not None and (folder / entry.card).is_file()]
    return text + (f"<p>Model cards: {', '.join(links)}.</p>" if links else "")


ACKNOWLEDGEMENT = (
    "Method: Chen et al., 'Synthesizing MR Image Contrast Enhancement Using 3D High-resolution ConvNets', IEEE Transactions "
    "on Biomedical Engineering, 2022. The real-data model was trained on the BraTS 2018 data (Menze et al., IEEE TMI 2015; "
    "Bakas et al., Scientific Data 2017; Bakas et al., arXiv:1811.02629). The phantom's anatomy is the MNI152 template "
    "(ICBM 2009, Fonov et al., NeuroImage 2011), as distributed with nilearn. PyTorch is provided by the PyTorch extension."
)


#
# Sample data: the phantom case, generated on the spot and loaded by Slicer's own Sample Data code
#


def registerSampleData() -> None:
    """Add the phantom case (T1, T2, ADC, FLAIR, true CE-T1, brain mask) to the Sample Data module."""
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        thumbnailFileName=moduleResourcePath("Icons/VirtualContrast.png"),
        customDownloader=loadPhantomSampleFromButton,
        **sample.sampleSource(sample.sampleFolder()),
    )


def loadPhantomSampleFromButton(source=None) -> dict:
    """Sample Data's button: :func:`loadPhantomSample` under a wait cursor and a status message, errors in a dialog.

    Sample Data ignores what a custom downloader returns or raises (it reaches only the Python console), and
    generating the case takes seconds: the user sees that it runs and why it failed.
    """
    slicer.util.showStatusMessage(_("Generating and loading the VirtualContrast phantom sample…"))
    with slicer.util.tryWithErrorDisplay(_("The VirtualContrast phantom sample could not be loaded."), waitCursor=True):
        nodes = loadPhantomSample()
    slicer.util.showStatusMessage(_("VirtualContrast phantom sample loaded."), 3000)
    return nodes


def loadPhantomSample() -> dict:
    """Generate the phantom case if needed, load it as Sample Data does (scripts too); return its nodes by key (``t1``, ..., ``t1c``)."""
    import SampleData

    missing = dependencies.missingRequirements(dependencies.SAMPLE_REQUIREMENTS)
    if missing and slicer.app.testingEnabled():
        # a test run installs nothing (the self-test skips before this; scripts under --testing fail here)
        raise VirtualContrastError(f"the phantom sample needs {', '.join(missing)}; a test run installs nothing")
    if missing:
        VirtualContrastLogic._installPackages(missing, askConfirmation=True)
    # Sample Data copies the files into Slicer's cache: one copy there is enough, the temporary folder may be gone
    sample.generateSampleFiles(sample.sampleFolder(), Path(slicer.mrmlScene.GetCacheManager().GetRemoteCacheDirectory()))
    if SampleData.SampleDataLogic().sourceForSampleName(sample.SAMPLE_NAME) is None:
        registerSampleData()
    nodes = sample.nodesByKey(SampleData.SampleDataLogic().downloadSamples(sample.SAMPLE_NAME))
    for node in nodes.values():
        node.SetAttribute(sample.PHANTOM_ATTRIBUTE, "true")
    return nodes


#
# Parameter node
#


@parameterNodeWrapper
class VirtualContrastParameterNode:
    """GUI state saved with the scene; widgets bind through their ``SlicerParameterName`` property.

    Node parameters without a default are None until chosen; a union of node types must list None
    (Slicer's union serializer cannot write None otherwise).
    """

    t1: vtkMRMLScalarVolumeNode
    t2: vtkMRMLScalarVolumeNode
    adc: vtkMRMLScalarVolumeNode
    flair: vtkMRMLScalarVolumeNode
    brainMask: Union[vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, None]
    model: str = AUTOMATIC_MODEL
    device: Annotated[str, Choice(list(choices.DEVICES))] = "auto"
    overlap: Annotated[float, WithinRange(0.0, 0.9)] = choices.DEFAULT_OVERLAP
    uncertainty: bool = False
    missingPolicy: Annotated[str, Choice(list(choices.MISSING_POLICIES))] = "error"
    outputVolume: vtkMRMLScalarVolumeNode
    subtractionVolume: vtkMRMLScalarVolumeNode
    uncertaintyVolume: vtkMRMLScalarVolumeNode
    overlay: Annotated[str, Choice(list(choices.OVERLAYS))] = "subtraction"
    # the engine's montages draw overlays at the same opacity (VirtualContrastLib.enhancement.OVERLAY_OPACITY)
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
        self._autoAssigner = inputs.AutoAssigner()
        self._shownOverlay = None
        self._imageWarnings = {}

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
        self.ui.overlayLegendLabel.text = outputs.scaleLegend(*outputs.enhancementScale())
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.initializeParameterNode()

    def onReload(self) -> None:
        """Reload the helper packages too, so that edits to them take effect without restarting Slicer."""
        # forgetting them (rather than reloading one by one) re-imports them in dependency order with the
        # module file, so no module keeps a class (an error type, a logic class) from before the reload
        for name in list(sys.modules):
            if name.split(".")[0] in ("VirtualContrastLib", "VirtualContrastSlicerLib"):
                del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self) -> None:
        """Stop a running synthesis, delete its copies of the images, and remove observers when the module is unloaded."""
        if self._job is not None:
            self._job.abandon()
        self.removeObservers()

    def enter(self) -> None:
        """Make sure the parameter node exists and inputs are pre-selected (the slice views are not touched)."""
        self.initializeParameterNode()

    def exit(self) -> None:
        """Stop reacting to parameter changes while another module is shown."""
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        """The parameter node goes away with the scene; a running synthesis is cancelled."""
        if self._job is not None:
            self._job.cancel()
        self._autoAssigner = inputs.AutoAssigner()
        self._imageWarnings = {}
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
            self._labelComboBoxes()
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._selectModelInCombo(self._parameterNode.model)
            # what the views show now is the user's: the overlay changes only when they change it
            self._shownOverlay = (self._parameterNode.overlay, self._parameterNode.overlayOpacity)
            self._onParameterNodeModified()

    def _labelComboBoxes(self) -> None:
        # the parameter node fills these with the raw values; the items keep their order, only the words change
        for parameter, combo, values in (("device", self.ui.deviceComboBox, choices.DEVICES),
                                         ("missingPolicy", self.ui.missingPolicyComboBox, choices.MISSING_POLICIES),
                                         ("overlay", self.ui.overlayComboBox, choices.OVERLAYS)):
            for index, label in enumerate(choices.labels(parameter, values)):
                combo.setItemText(index, _(label))

    def _candidateNodes(self) -> list:
        nodes = [slicer.mrmlScene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
                 for i in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
        # only plain scalar volumes: not label maps, DWI, tensor or vector volumes, nor our results
        return [n for n in nodes if n.GetClassName() == "vtkMRMLScalarVolumeNode" and not outputs.isSynthetic(n)]

    def _volumeNames(self) -> dict:
        return {node.GetID(): node.GetName() for node in self._candidateNodes()}

    def _currentInputs(self) -> dict:
        p = self._parameterNode
        return {m: (getattr(p, m).GetID() if getattr(p, m) else None) for m in MODALITIES}

    def _autoAssignInputs(self) -> None:
        if not self._parameterNode:
            return
        database = getattr(slicer, "dicomDatabase", None)
        # the DICOM database is read only for volumes not offered yet: the others are never offered again
        volumes = {}
        for node in self._candidateNodes():
            tags = {} if node.GetID() in self._autoAssigner.offered else studies.dicomTags(node, database, inputs.TAGS)
            volumes[node.GetID()] = inputs.Volume(node.GetName(), studies.identity(node)[1], tags)
        for modality, nodeId in self._autoAssigner.update(volumes, self._currentInputs()).items():
            setattr(self._parameterNode, modality, slicer.mrmlScene.GetNodeByID(nodeId))

    # -- model selection ------------------------------------------------------------------------

    def _populateModels(self) -> None:
        combo = self.ui.modelComboBox
        combo.clear()
        combo.addItem(_("Automatic (best bundled model for the selected inputs)"), AUTOMATIC_MODEL)
        try:
            entries = self.logic.models.synthesisModels()
        except CheckpointError as error:
            entries = []
            self._appendLog(str(error))
        for entry in entries:
            combo.addItem(f"{entry.name} ({'+'.join(m.upper() for m in entry.inputs)})", entry.name)
        combo.addItem(_("Load checkpoint file…"), LOAD_CHECKPOINT)

    def _selectModelInCombo(self, model: str) -> None:
        combo = self.ui.modelComboBox
        # inserting before the current item makes Qt emit currentIndexChanged: block it, or the file dialog reopens
        wasBlocked = combo.blockSignals(True)
        index = combo.findData(model)
        if index < 0 and model:
            combo.insertItem(combo.count - 1, os.path.basename(model), model)
            index = combo.findData(model)
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
            problem = self.logic.models.checkpointProblem(path) if path else _("no file selected")
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
        p = self._parameterNode
        if not p:
            return
        plan = self.logic.models.plan(p.model, [m for m in MODALITIES if getattr(p, m) is not None], p.missingPolicy,
                                      sample.isPhantom(p.t1))
        needed = set(plan.inputs) | {"t1"} if plan.inputs else set(MODALITIES)
        for modality in MODALITIES:
            getattr(self.ui, f"{modality}Selector").visible = modality in needed or not p.model
            getattr(self.ui, f"{modality}Label").visible = modality in needed or not p.model
            required = modality == "t1" or (modality in plan.inputs and modality not in plan.missing)
            name = _("Pre-contrast T1") if modality == "t1" else modality.upper()
            getattr(self.ui, f"{modality}Label").text = f"{'*' if required else ''}{name}:"
        description = self.logic.models.description(p.model)
        if plan.model and plan.model != p.model:
            description += " " + _("Chosen: {model}.").format(model=plan.model)
        if plan.missing and plan.possible:
            description += " " + _("{inputs} will be {how}.").format(
                inputs="+".join(m.upper() for m in plan.missing),
                how=_("predicted from the T1") if p.missingPolicy == "auxiliary" else _("zero-filled"))
        self.ui.modelInfoLabel.text = " ".join([description, *plan.notes])
        self.ui.modelWarningLabel.text = " ".join(plan.warnings + self._inputWarnings(plan))
        self.ui.autoAssignLabel.text = inputs.autoAssignmentNote(self._autoAssigner.assigned, self._currentInputs(), self._volumeNames())
        self.ui.uncertaintyVolumeSelector.enabled = p.uncertainty
        if self._job is None:
            try:
                self.logic.requestFromParameters(p)
                problem = None
            except InputError as error:
                problem = str(error)
            self.ui.applyButton.enabled = problem is None
            self.ui.applyButton.toolTip = problem or _("Synthesize the contrast-enhanced T1")
        self._rememberChoices()
        if (p.overlay, p.overlayOpacity) != self._shownOverlay:
            self._shownOverlay = (p.overlay, p.overlayOpacity)
            outputs.applyOverlay(slicer.mrmlScene, p.overlay, p.overlayOpacity)

    def _inputWarnings(self, plan) -> list:
        """How the inputs the plan uses differ from what its model expects, read once per image version."""
        warnings = []
        for modality in plan.inputs:
            node = getattr(self._parameterNode, modality)
            if node is None or node.GetImageData() is None:
                continue
            key = (node.GetID(), node.GetImageData().GetMTime(), node.GetMTime(), plan.model)
            if key not in self._imageWarnings:
                try:
                    ijkToRas = ijkToRasFromNode(node)
                except InputError:
                    continue  # a non-linear transform: Synthesize says so
                self._imageWarnings[key] = imageWarnings(_("Pre-contrast T1") if modality == "t1" else modality.upper(),
                                                         slicer.util.arrayFromVolume(node), ijkToRas,
                                                         self.logic.models.preprocessing(plan.model))
            warnings += self._imageWarnings[key]
        return warnings

    def _rememberChoices(self) -> None:
        settings = qt.QSettings()
        for parameter in choices.REMEMBERED:
            settings.setValue(choices.settingsKey(parameter), getattr(self._parameterNode, parameter))

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
            request = self.logic.requestFromParameters(self._parameterNode)
            self.logic.ensureDependencies(askConfirmation=True)
            self.ui.logTextEdit.clear()
            self._job = self.logic.start(request.inputNodes, request.maskNode, request.settings, request.outputs,
                                         onProgress=self._showProgress, onLog=self._appendLog, onFinished=self._onJobFinished)
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
        # the user may have left the module while it ran: the scene's parameter node still holds the display choices
        p = self._parameterNode or self.logic.getParameterNode()
        outputs.showResult(job.result.synthetic, p.overlay, p.overlayOpacity)
        status = _("Done with model {model}. Synthetic images — research use only.").format(model=job.result.modelName)
        slicer.util.showStatusMessage(status, 5000)
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
        """The module's parameter node in the current scene, typed; a new one starts with the remembered choices."""
        node = super().getParameterNode()
        parameterNode = VirtualContrastParameterNode(node)
        # an attribute, not the absence of parameters: a closed scene keeps the singleton node, and wrappers refill it
        if node.GetAttribute(REMEMBERED_APPLIED_ATTRIBUTE) != "true":
            for name, value in choices.rememberedValues(qt.QSettings().value).items():
                setattr(parameterNode, name, value)
            node.SetAttribute(REMEMBERED_APPLIED_ATTRIBUTE, "true")
        return parameterNode

    @staticmethod
    def dependencyProblem():
        """What synthesis still lacks (torch, a newer torch, packages), or None; installs nothing."""
        try:
            import PyTorchUtils  # noqa: F401
        except ModuleNotFoundError:
            return _("the 'PyTorch' extension is not installed")
        if dependencies.installedVersion("torch") is None:
            return _("PyTorch is not installed")
        missing = dependencies.missingRequirements()
        return dependencies.torchProblem() or (_("missing packages: {packages}").format(packages=", ".join(missing)) if missing else None)

    def ensureDependencies(self, askConfirmation: bool = True) -> None:
        """Install torch (PyTorch extension) and the packages synthesis needs, with the user's confirmation."""
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
                raise dependencies.InstallDeclined(_("PyTorch is required to synthesize images; its installation was declined."))
        problem = dependencies.torchProblem()
        if problem:
            raise VirtualContrastError(problem)
        missing = dependencies.missingRequirements()
        if not missing:
            return
        try:
            self._installPackages(missing, askConfirmation)
        except dependencies.InstallDeclined:
            raise
        except Exception as error:
            raise VirtualContrastError(_("Required packages could not be installed ({error}).\n\n{help}").format(
                error=error, help=dependencies.offlineInstructions(missing))) from None
        stillMissing = dependencies.missingRequirements()
        if stillMissing:
            raise VirtualContrastError(_("Still missing: {packages}.\n\n{help}").format(
                packages=", ".join(stillMissing), help=dependencies.offlineInstructions(stillMissing)))

    @staticmethod
    def _installPackages(requirements: list, askConfirmation: bool) -> None:
        declined = dependencies.InstallDeclined(
            _("VirtualContrast needs {packages}; their installation was declined.").format(packages=", ".join(requirements)))
        constraints = dependencies.writeTorchConstraints(Path(slicer.util.tempDirectory("VirtualContrast")))
        try:
            from slicer.packaging import pip_ensure  # Slicer 5.10 and later
        except ImportError:
            pip_ensure = None
        if pip_ensure is not None:
            try:
                pip_ensure(requirements, constraints=constraints, prompt_install=askConfirmation, requester="VirtualContrast")
            except RuntimeError as error:
                # pip_ensure says "User declined package installation"; a failed pip raises CalledProcessError
                if "declined" in str(error):
                    raise declined from None
                raise
            return
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                _("VirtualContrast needs these Python packages, which will be downloaded and installed now "
                  "(the installed PyTorch is kept):"), detailedText="\n".join(requirements)):
            raise declined
        slicer.util.pip_install(dependencies.pipArguments(requirements, constraints))

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
    """In-Slicer test: phantom sample -> bundled default model (blocking path) -> checked outputs.

    Skipped, with the reason, on a Slicer without what synthesis needs (PyTorch extension, torch,
    MONAI) or what the phantom sample needs (nilearn): a test run never installs packages.
    """

    def setUp(self):
        """Start from an empty scene."""
        slicer.mrmlScene.Clear()

    @staticmethod
    def skipReason():
        """Why this test cannot run on this Slicer (what synthesis or the phantom sample lacks), or None."""
        sampleMissing = dependencies.missingRequirements(dependencies.SAMPLE_REQUIREMENTS)
        problem = VirtualContrastLogic.dependencyProblem() or (
            _("missing packages for the phantom sample: {packages}").format(packages=", ".join(sampleMissing)) if sampleMissing else None)
        return f"VirtualContrastTest skipped: {problem}" if problem else None

    def runTest(self):
        """Run all tests of the module (Reload and Test, the widget self-test)."""
        if self.skipReason():
            self.delayDisplay(self.skipReason())
            return
        self.setUp()
        self.test_VirtualContrastPhantom()

    def test_VirtualContrastPhantom(self):
        """Synthesize on the phantom sample and check grid, values and labelling."""
        import numpy as np

        if self.skipReason():
            raise unittest.SkipTest(self.skipReason())
        self.delayDisplay("Loading the phantom sample")
        nodes = loadPhantomSample()
        self.assertTrue(sample.isPhantom(nodes["t1"]))  # so "Automatic" picks a phantom-trained model for it
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
