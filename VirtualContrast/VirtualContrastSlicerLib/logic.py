"""Synthesis from MRML volume nodes: inputs out of the scene, the engine run, results back in.

Two ways to run the engine, with the same inputs and outputs:

* :meth:`SynthesisLogic.start` writes the inputs to temporary NRRD files and runs the engine's
  command line as a :class:`~VirtualContrastSlicerLib.process.BackgroundProcess`; the returned
  :class:`SynthesisJob` is polled (a QTimer in the GUI), reports progress parsed from the engine's
  output and can be cancelled, which kills the process;
* :meth:`SynthesisLogic.process` blocks until the results are in the scene, either by waiting for
  such a job or (``inProcess=True``) by calling the engine in this Python process.

Output nodes are created or overwritten only once every result has been read back, so a failed
or cancelled run leaves the scene exactly as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import SimpleITK as sitk
import slicer

from VirtualContrastLib.errors import CancelledError, InputError, VirtualContrastError

from . import outputs as outputNodes
from . import sample
from .models import ModelCatalog
from .process import BackgroundProcess, engineEnvironment, pythonExecutable
from .studies import mixedStudiesProblem
from .volumes import imageFromVolumeNode, maskImageFromNode, removeNodeWithDependents

if TYPE_CHECKING:
    from VirtualContrastLib.options import SynthesisOptions
    from VirtualContrastLib.report import RunReport

ProgressCallback = Callable[[float, str], None]
LogCallback = Callable[[str], None]

#: Progress of the engine's command line run with ``--progress-lines``: ``PROGRESS 0.4200 slab 21/50``.
PROGRESS_LINE = re.compile(r"^PROGRESS (?P<fraction>[0-9.]+)\s*(?P<step>.*)$")
#: The engine's machine-readable outcome (model, notes, error), written by ``synthesize --report``.
REPORT_FILE = "result.json"


@dataclass
class SynthesisSettings:
    """How to synthesize: which model, where, and the advanced options."""

    model: str | None = None
    device: str = "auto"
    overlap: float | None = None
    uncertainty: bool = False
    missingPolicy: str | None = None
    #: The inputs are physics phantoms (Slicer's sample): the automatic choice may be phantom-trained, without warning.
    phantomData: bool = False


@dataclass
class SynthesisOutputs:
    """The nodes a finished synthesis wrote, and the notes the user should read."""

    synthetic: "slicer.vtkMRMLScalarVolumeNode"
    subtraction: "slicer.vtkMRMLScalarVolumeNode"
    uncertainty: "slicer.vtkMRMLScalarVolumeNode | None"
    modelName: str
    notes: list[str] = field(default_factory=list)


@dataclass
class SynthesisRequest:
    """One run as the panel asks for it: input nodes, mask, settings and the selected output nodes (None: new)."""

    inputNodes: dict
    maskNode: "slicer.vtkMRMLNode | None"
    settings: SynthesisSettings
    outputs: dict


@dataclass
class OutputBackup:
    """A selected output volume as it was before a run wrote into it: voxels, geometry, attributes, name, transform
    and subject-hierarchy parent, to put back if the run fails before all its results are stored."""

    node: "slicer.vtkMRMLScalarVolumeNode"
    content: "slicer.vtkMRMLScalarVolumeNode"
    name: str
    transformNodeID: str | None
    parentItem: int

    @classmethod
    def of(cls, node: "slicer.vtkMRMLScalarVolumeNode") -> "OutputBackup":
        """Copy the node's state (a deep copy of its voxels, outside the scene)."""
        content = slicer.vtkMRMLScalarVolumeNode()
        content.CopyContent(node, True)
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
        item = shNode.GetItemByDataNode(node) if shNode is not None else 0
        return cls(node, content, node.GetName(), node.GetTransformNodeID(), shNode.GetItemParent(item) if item else 0)

    def restore(self) -> None:
        """Put the node back as it was."""
        self.node.CopyContent(self.content, True)
        self.node.SetName(self.name)
        self.node.SetAndObserveTransformNodeID(self.transformNodeID)
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.node.GetScene())
        item = shNode.GetItemByDataNode(self.node) if shNode is not None else 0
        if item and self.parentItem:
            shNode.SetItemParent(item, self.parentItem)


def parseProgressLine(line: str) -> tuple[float, str] | None:
    """(fraction in [0, 1], message) from an engine progress line, else None."""
    match = PROGRESS_LINE.match(line.strip())
    if match is None:
        return None
    fraction = min(max(float(match["fraction"]), 0.0), 1.0)
    return fraction, match["step"].strip() or f"{100 * fraction:.0f}%"


def workRoot() -> Path:
    """Where the exchanged files go: Slicer's temporary folder in the application, the system's elsewhere."""
    base = slicer.app.temporaryPath if hasattr(slicer, "app") and hasattr(slicer.app, "temporaryPath") else tempfile.gettempdir()
    return Path(base) / "VirtualContrast"


def workDirectory(root: Path | None = None) -> Path:
    """A fresh folder for the exchanged files (copies of the patient's images), named after this process.

    Folders that a Slicer which has since exited left behind (killed, or closed during a run) are removed first.
    """
    root = Path(root or workRoot())
    root.mkdir(parents=True, exist_ok=True)
    removeStaleWorkFolders(root)
    return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))


def processAlive(pid: int) -> bool:
    """Whether a process with this id is running."""
    if os.name == "nt":
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if handle:
            ctypes.windll.kernel32.CloseHandle(handle)
        return bool(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def removeStaleWorkFolders(root: Path) -> list[Path]:
    """Remove the work folders under ``root`` whose owning process (the id their name starts with) has exited."""
    removed = []
    for folder in Path(root).glob("*-*"):
        owner = folder.name.split("-", 1)[0]
        if folder.is_dir() and owner.isdigit() and int(owner) != os.getpid() and not processAlive(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class SynthesisJob:
    """A synthesis running in a background process; poll it until it reports it has finished."""

    def __init__(self, logic: "SynthesisLogic", inputNodes: dict, settings: SynthesisSettings, outputs: dict,
                 folder: Path, onProgress: ProgressCallback | None, onLog: LogCallback | None,
                 onFinished: Callable[["SynthesisJob"], None] | None, keepFiles: bool) -> None:
        self.logic = logic
        self.inputNodes = inputNodes
        self.settings = settings
        self.outputs = outputs
        self.folder = folder
        self.onProgress = onProgress
        self.onLog = onLog
        self.onFinished = onFinished
        self.keepFiles = keepFiles
        self.result: SynthesisOutputs | None = None
        self.error: Exception | None = None
        self._cancelRequested = False
        self._finished = False
        self.process: BackgroundProcess | None = None

    @property
    def finished(self) -> bool:
        """Whether the job has ended (results in the scene, failed or cancelled)."""
        return self._finished

    def start(self, args: list[str]) -> None:
        """Launch the engine's command line."""
        self.process = BackgroundProcess(args, self._onLine, env=engineEnvironment())
        self.process.start()

    def _onLine(self, line: str) -> None:
        if self.onLog:
            self.onLog(line)
        progress = parseProgressLine(line)
        if progress is not None and self.onProgress:
            self.onProgress(*progress)

    def _report(self) -> "RunReport":
        """The engine's report of the finished process (an error report when the process wrote none)."""
        from VirtualContrastLib.report import RunReport

        path = self.folder / REPORT_FILE
        if path.is_file():
            return RunReport.read(path)
        return RunReport(error=f"the synthesis process failed (exit status {self.process.returnCode}) without a report; see the log")

    def poll(self) -> bool:
        """Deliver output and progress; when the process has ended, finish the job. True while running."""
        if self._finished:
            return False
        if self.process.poll():
            return True
        try:
            if self._cancelRequested:
                raise CancelledError("synthesis cancelled; the scene was left unchanged")
            report = self._report()
            if report.error or self.process.returnCode != 0:
                raise VirtualContrastError(report.error or f"the synthesis process failed (exit status {self.process.returnCode}); see the log")
            self.result = self.logic.importResults(self.folder, self.inputNodes["t1"], self.outputs, report.model, list(report.notes))
        except Exception as error:
            self.error = error
        finally:
            self._finished = True
            if not self.keepFiles:
                shutil.rmtree(self.folder, ignore_errors=True)
        if self.onFinished:
            self.onFinished(self)
        return False

    def cancel(self) -> None:
        """Stop the engine; the job then finishes with a :class:`CancelledError` and no new nodes."""
        self._cancelRequested = True
        if self.process is not None:
            self.process.cancel()

    def abandon(self) -> None:
        """Stop the engine and delete the exchanged files now: nobody will poll this job again (Slicer is closing)."""
        self.cancel()
        self._finished = True
        if not self.keepFiles:
            shutil.rmtree(self.folder, ignore_errors=True)

    def wait(self) -> SynthesisOutputs:
        """Block until the job has finished; return its outputs or raise its error."""
        while self.poll():
            import time

            time.sleep(0.05)
        if self.error is not None:
            raise self.error
        return self.result


class SynthesisLogic:
    """Runs the engine on volume nodes of ``scene`` (``slicer.mrmlScene`` when not given)."""

    def __init__(self, scene: "slicer.vtkMRMLScene | None" = None) -> None:
        self._scene = scene
        self.models = ModelCatalog()

    @property
    def scene(self) -> "slicer.vtkMRMLScene":
        """The scene inputs come from and outputs go to."""
        return self._scene if self._scene is not None else slicer.mrmlScene

    # -- inputs ---------------------------------------------------------------------------------

    @staticmethod
    def collectInputs(t1, t2=None, adc=None, flair=None) -> dict:
        """Modality -> node for the given (non-empty) inputs; the T1 is required."""
        if t1 is None:
            raise InputError("select a pre-contrast T1 volume: the synthetic image is made on its grid")
        return {name: node for name, node in (("t1", t1), ("t2", t2), ("adc", adc), ("flair", flair)) if node is not None}

    @staticmethod
    def outputProblem(inputNodes: dict, maskNode, outputs: dict) -> str | None:
        """Why the selected output nodes cannot be written (an input among them, or one node for two outputs)."""
        inputs = {node.GetID(): name for name, node in inputNodes.items() if node is not None}
        if maskNode is not None:
            inputs[maskNode.GetID()] = "brain mask"
        seen: dict[str, str] = {}
        for kind, node in outputs.items():
            if node is None:
                continue
            if node.GetID() in inputs:
                return f"the {kind} output is the {inputs[node.GetID()].upper()} input '{node.GetName()}': choose another volume or 'Create new volume'"
            if node.GetID() in seen:
                return f"the {seen[node.GetID()]} and {kind} outputs are the same volume '{node.GetName()}': choose different volumes"
            seen[node.GetID()] = kind
        return None

    def _refuseRun(self, inputNodes: dict, maskNode, outputs: dict) -> None:
        # one patient and study: the engine's overlap check passes two heads at the scanner centre
        problem = mixedStudiesProblem({**inputNodes, "mask": maskNode}) or self.outputProblem(inputNodes, maskNode, outputs)
        if problem:
            raise InputError(problem)

    def requestFromParameters(self, parameters) -> SynthesisRequest:
        """The run the panel's parameter node describes, or :class:`InputError` saying why it cannot start.

        The model is resolved here ("Automatic" becomes the bundled model the plan chose), so the
        missing-input policy applies to automatic runs as well.
        """
        p = parameters
        given = {m: getattr(p, m) for m in ("t1", "t2", "adc", "flair") if getattr(p, m) is not None}
        plan = self.models.plan(p.model, given, p.missingPolicy, sample.isPhantom(p.t1))
        if not plan.possible:
            raise InputError(plan.problem)
        inputNodes = {m: node for m, node in given.items() if not plan.inputs or m in plan.inputs or m == "t1"}
        outputs = {"synthetic": p.outputVolume, "subtraction": p.subtractionVolume,
                   "uncertainty": p.uncertaintyVolume if p.uncertainty else None}
        self._refuseRun(inputNodes, p.brainMask, outputs)
        settings = SynthesisSettings(model=plan.model, device=p.device, overlap=p.overlap,
                                     uncertainty=p.uncertainty, missingPolicy=p.missingPolicy)
        return SynthesisRequest(inputNodes, p.brainMask, settings, outputs)

    @staticmethod
    def inputImages(inputNodes: dict) -> dict[str, sitk.Image]:
        """World-geometry SimpleITK images of the input nodes (the nodes are not modified)."""
        return {name: imageFromVolumeNode(node) for name, node in inputNodes.items()}

    def writeInputs(self, inputNodes: dict, maskNode, folder: Path) -> dict[str, Path]:
        """Write every input (and the mask on the T1 grid) as NRRD into ``folder``."""
        paths = {}
        for name, image in self.inputImages(inputNodes).items():
            paths[name] = folder / f"{name}.nrrd"
            sitk.WriteImage(image, str(paths[name]))
        if maskNode is not None:
            paths["mask"] = folder / "mask.nrrd"
            sitk.WriteImage(maskImageFromNode(maskNode, inputNodes["t1"]), str(paths["mask"]))
        return paths

    def commandLine(self, paths: dict[str, Path], folder: Path, settings: SynthesisSettings) -> list[str]:
        """The engine command line that reads ``paths`` and writes results and its report into ``folder``."""
        args = [pythonExecutable(), "-m", "VirtualContrastLib", "synthesize", "--progress-lines", "--report", str(folder / REPORT_FILE)]
        for name in ("t1", "t2", "adc", "flair", "mask"):
            if name in paths:
                args += [f"--{name}", str(paths[name])]
        args += ["-o", str(folder / "synthetic.nrrd"), "--subtraction", str(folder / "subtraction.nrrd")]
        if settings.uncertainty:
            args += ["--uncertainty", str(folder / "uncertainty.nrrd")]
        if settings.model:
            args += ["--model", settings.model]
        if settings.phantomData:
            args.append("--phantom-data")
        # the same options object the in-process run uses, as the engine's own arguments
        return args + self.synthesisOptions(settings).to_args()

    # -- running --------------------------------------------------------------------------------

    def start(self, inputNodes: dict, maskNode=None, settings: SynthesisSettings | None = None, outputs: dict | None = None,
              onProgress: ProgressCallback | None = None, onLog: LogCallback | None = None,
              onFinished: Callable[[SynthesisJob], None] | None = None, keepFiles: bool = False) -> SynthesisJob:
        """Start a background synthesis and return its job (poll it; results arrive when it ends)."""
        settings = settings or SynthesisSettings()
        settings = replace(settings, phantomData=settings.phantomData or sample.isPhantom(inputNodes["t1"]))
        self._refuseRun(inputNodes, maskNode, outputs or {})
        folder = workDirectory()
        try:
            paths = self.writeInputs(inputNodes, maskNode, folder)
            job = SynthesisJob(self, inputNodes, settings, dict(outputs or {}), folder, onProgress, onLog, onFinished, keepFiles)
            if onProgress:
                onProgress(0.0, "starting the synthesis process")
            job.start(self.commandLine(paths, folder, settings))
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return job

    def runInProcess(self, inputNodes: dict, maskNode=None, settings: SynthesisSettings | None = None, outputs: dict | None = None,
                     onProgress: ProgressCallback | None = None, cancel: Callable[[], bool] | None = None) -> SynthesisOutputs:
        """Run the engine in this process (blocking) and put the results into the scene."""
        from VirtualContrastLib import registry, synthesis

        settings = settings or SynthesisSettings()
        self._refuseRun(inputNodes, maskNode, outputs or {})
        images = self.inputImages(inputNodes)
        mask = maskImageFromNode(maskNode, inputNodes["t1"]) if maskNode is not None else None
        phantom = settings.phantomData or sample.isPhantom(inputNodes["t1"])
        modelName = settings.model or registry.default_model_for(images, phantom_data=phantom).name
        model = registry.load_model(modelName, device=settings.device)
        # the same notes as the command line's: inputs the model ignores, phantom-only training
        modelNotes = [n for n in (registry.ignored_inputs_note(model.entry, images), registry.training_warning(model.entry, phantom)) if n]
        options = self.synthesisOptions(settings)
        # the engine loads nothing itself: the auxiliary models for missing inputs come from here
        auxiliaries = synthesis.load_auxiliaries(model, images, options.missing_policy)
        result = synthesis.synthesize(images, model, brain_mask=mask, options=options, progress=onProgress, cancel=cancel,
                                      auxiliaries=auxiliaries)
        results = {"synthetic": result.synthetic, "subtraction": result.subtraction, "uncertainty": result.uncertainty}
        return self.storeResults(results, inputNodes["t1"], dict(outputs or {}), result.model_name or model.name,
                                 modelNotes + list(result.notes))

    @staticmethod
    def synthesisOptions(settings: SynthesisSettings) -> "SynthesisOptions":
        """The engine's options for these settings (validated: a bad value is refused before any work)."""
        from VirtualContrastLib.options import SynthesisOptions

        values = {"device": settings.device, "tta": settings.uncertainty}
        if settings.overlap is not None:
            values["overlap"] = settings.overlap
        if settings.missingPolicy:
            values["missing_policy"] = settings.missingPolicy
        options = SynthesisOptions(**values)
        options.validate()
        return options

    # -- results --------------------------------------------------------------------------------

    def importResults(self, folder: Path, t1Node, outputs: dict, modelName: str, notes: list[str]) -> SynthesisOutputs:
        """Read the result files of a finished process and store them in the scene."""
        results = {}
        for kind in ("synthetic", "subtraction", "uncertainty"):
            path = folder / f"{kind}.nrrd"
            results[kind] = sitk.ReadImage(str(path)) if path.is_file() else None
        if results["synthetic"] is None or results["subtraction"] is None:
            raise VirtualContrastError("the synthesis process ended without writing its results; see the log")
        return self.storeResults(results, t1Node, outputs, modelName, notes)

    def storeResults(self, results: dict, t1Node, outputs: dict, modelName: str, notes: list[str]) -> SynthesisOutputs:
        """Write results into the selected output nodes or new ones; on failure remove the new ones and put the
        selected ones back as they were."""
        created = []
        overwritten: list[OutputBackup] = []
        nodes = {}
        try:
            for kind, image in results.items():
                if image is None:
                    nodes[kind] = None
                    continue
                node = outputs.get(kind)
                if node is not None and not self.scene.IsNodePresent(node):
                    # deleted while the engine ran: the result goes into a new volume instead of failing at the end
                    notes = [*notes, f"the selected {kind} volume was deleted during the run; the result is in a new volume"]
                    node = None
                if node is not None:
                    overwritten.append(OutputBackup.of(node))
                nodes[kind] = outputNodes.writeOutputNode(self.scene, image, kind, t1Node, modelName, node)
                if node is None:
                    created.append(nodes[kind])
            outputNodes.configureSubtractionDisplay(nodes["subtraction"], *outputNodes.enhancementScale())
            if nodes["uncertainty"] is not None:
                outputNodes.configureUncertaintyDisplay(nodes["uncertainty"])
            outputNodes.linkOverlays(nodes["synthetic"], nodes["subtraction"], nodes["uncertainty"])
        except Exception:
            for node in created:
                removeNodeWithDependents(node)
            for backup in overwritten:
                backup.restore()
            raise
        return SynthesisOutputs(nodes["synthetic"], nodes["subtraction"], nodes["uncertainty"], modelName, notes)

    def process(self, t1, t2=None, adc=None, flair=None, mask=None, model: str | None = None, device: str = "auto",
                overlap: float | None = None, uncertainty: bool = False, missingPolicy: str | None = None,
                outputVolume=None, subtractionVolume=None, uncertaintyVolume=None, inProcess: bool = True,
                onProgress: ProgressCallback | None = None, onLog: LogCallback | None = None) -> SynthesisOutputs:
        """Synthesize and wait: the scripting entry point (``inProcess=False`` uses the background process)."""
        inputNodes = self.collectInputs(t1, t2, adc, flair)
        settings = SynthesisSettings(model=model, device=device, overlap=overlap, uncertainty=uncertainty, missingPolicy=missingPolicy)
        outputs = {"synthetic": outputVolume, "subtraction": subtractionVolume, "uncertainty": uncertaintyVolume}
        if inProcess:
            return self.runInProcess(inputNodes, mask, settings, outputs, onProgress)
        return self.start(inputNodes, mask, settings, outputs, onProgress, onLog).wait()
