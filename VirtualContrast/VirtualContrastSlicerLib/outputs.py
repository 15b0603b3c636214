"""Output volume nodes: naming, synthetic labelling, subject-hierarchy placement and display."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from VirtualContrastLib import INTENDED_USE

from .volumes import updateVolumeNodeFromImage

SYNTHETIC_ATTRIBUTE = "VirtualContrast.Synthetic"
MODEL_ATTRIBUTE = "VirtualContrast.Model"
KIND_ATTRIBUTE = "VirtualContrast.Kind"

#: Output kind -> suffix appended to the T1 node name.
OUTPUT_SUFFIXES = {
    "synthetic": "_synthetic_CE",
    "subtraction": "_synthetic_CE_subtraction",
    "uncertainty": "_synthetic_CE_uncertainty",
}

_DESCRIPTIONS = {
    "synthetic": "Synthetic contrast-enhanced T1",
    "subtraction": "Synthetic enhancement map (synthetic CE-T1 minus pre-contrast T1)",
    "uncertainty": "Voxel-wise uncertainty of the synthetic contrast-enhanced T1",
}

ENHANCEMENT_COLOR_NAME = "VirtualContrastEnhancement"
#: Node reference roles from a synthetic CE-T1 to the maps made with it.
OVERLAY_REFERENCES = {"subtraction": "VirtualContrastSubtraction", "uncertainty": "VirtualContrastUncertainty"}
UNCERTAINTY_COLOR_NODE_ID = "vtkMRMLPETProceduralColorNodePET-Heat"


def defaultOutputName(t1Name: str, kind: str) -> str:
    """Node name of a new output: ``<T1 name>_synthetic_CE`` and its variants."""
    return f"{t1Name}{OUTPUT_SUFFIXES[kind]}"


def writeOutputNode(scene: "slicer.vtkMRMLScene", image: sitk.Image, kind: str, referenceNode: "slicer.vtkMRMLScalarVolumeNode",
                    modelName: str, node: "slicer.vtkMRMLScalarVolumeNode | None" = None) -> "slicer.vtkMRMLScalarVolumeNode":
    """Put a result into ``node`` (overwritten) or a new node, labelled synthetic and placed beside the T1."""
    if node is None:
        name = scene.GetUniqueNameByString(defaultOutputName(referenceNode.GetName(), kind))
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    elif "synthetic" not in node.GetName().lower():
        node.SetName(f"{node.GetName()}_synthetic")
    updateVolumeNodeFromImage(node, image, referenceNode)
    node.SetAttribute(SYNTHETIC_ATTRIBUTE, "true")
    node.SetAttribute(MODEL_ATTRIBUTE, modelName)
    node.SetAttribute(KIND_ATTRIBUTE, kind)
    node.SetDescription(f"{_DESCRIPTIONS[kind]} from VirtualContrast, model '{modelName}'. {INTENDED_USE}")
    node.CreateDefaultDisplayNodes()
    placeBesideInSubjectHierarchy(node, referenceNode)
    return node


def isSynthetic(node: "slicer.vtkMRMLNode") -> bool:
    """Whether a node carries the VirtualContrast synthetic label."""
    return node is not None and node.GetAttribute(SYNTHETIC_ATTRIBUTE) == "true"


def placeBesideInSubjectHierarchy(node: "slicer.vtkMRMLNode", referenceNode: "slicer.vtkMRMLNode") -> None:
    """Give ``node`` the same subject-hierarchy parent (study) as ``referenceNode`` when it has one."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    if shNode is None:
        return
    referenceItem = shNode.GetItemByDataNode(referenceNode)
    if not referenceItem:
        return
    parentItem = shNode.GetItemParent(referenceItem)
    item = shNode.GetItemByDataNode(node)
    if item:
        shNode.SetItemParent(item, parentItem)
    else:
        shNode.CreateItem(parentItem, node)


def enhancementColorNode(scene: "slicer.vtkMRMLScene") -> "slicer.vtkMRMLColorNode":
    """The subtraction map's colours (dark red -> red -> yellow with rising enhancement), made once per scene."""
    existing = scene.GetFirstNodeByName(ENHANCEMENT_COLOR_NAME)
    if existing is not None and existing.IsA("vtkMRMLProceduralColorNode"):
        return existing
    node = scene.AddNewNodeByClass("vtkMRMLProceduralColorNode", ENHANCEMENT_COLOR_NAME)
    node.SetAttribute("Category", "VirtualContrast")
    # imported here, as in enhancementScale: the engine's enhancement module pulls in scipy
    from VirtualContrastLib.enhancement import OVERLAY_COLOURS

    colorFunction = vtk.vtkColorTransferFunction()
    for position, (red, green, blue) in OVERLAY_COLOURS:
        colorFunction.AddRGBPoint(position, red, green, blue)
    node.SetAndObserveColorTransferFunction(colorFunction)
    return node


def enhancementScale() -> tuple[float, float]:
    """The subtraction map's colour scale in map units, the same for every case: (transparent below, full colour at).

    The lower end is the engine's detection threshold (the value its lesion metrics count as enhancement),
    the top its montages' fixed map limit; map units are fractions of the CE-T1's brain intensity window.
    """
    # imported here: the engine's metrics module pulls in scipy and scikit-image, not wanted when Slicer loads the module
    from VirtualContrastLib.enhancement import ENHANCEMENT_THRESHOLD, MAP_LIMIT

    return ENHANCEMENT_THRESHOLD, MAP_LIMIT


def scaleLegend(threshold: float, top: float) -> str:
    """The panel's legend of an overlay colour scale (``threshold`` and ``top`` in map units)."""
    return (f"Enhancement overlay, the same scale for every case: transparent below {threshold:g} (the engine's detection "
            f"threshold), dark red at {threshold:g} to yellow at {top:g} and above. Unit: fraction of the synthetic CE-T1's "
            "brain intensity range.")


def configureSubtractionDisplay(node: "slicer.vtkMRMLScalarVolumeNode", threshold: float, top: float) -> None:
    """Colour a map from ``threshold`` (dark red) to ``top`` (yellow) in its own units; values below ``threshold`` are transparent.

    Absolute units, not a per-case window: a case without enhancement shows nothing rather than its noise
    stretched to full colour.
    """
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(enhancementColorNode(node.GetScene()).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(threshold, top)
    # slice views draw voxels outside the threshold range transparent: the overlay shows enhancement only
    display.AutoThresholdOff()
    display.SetThreshold(threshold, float(np.finfo(np.float32).max))
    display.ApplyThresholdOn()


def configureUncertaintyDisplay(node: "slicer.vtkMRMLScalarVolumeNode") -> None:
    """Heat colours for the (non-negative) uncertainty map, when the colour node exists."""
    if node.GetScene().GetNodeByID(UNCERTAINTY_COLOR_NODE_ID) is not None:
        node.GetDisplayNode().SetAndObserveColorNodeID(UNCERTAINTY_COLOR_NODE_ID)


def linkOverlays(synthetic: "slicer.vtkMRMLScalarVolumeNode", subtraction: "slicer.vtkMRMLScalarVolumeNode | None",
                 uncertainty: "slicer.vtkMRMLScalarVolumeNode | None") -> None:
    """Record on the synthetic CE-T1 which maps belong to it (saved with the scene)."""
    for overlay, node in (("subtraction", subtraction), ("uncertainty", uncertainty)):
        synthetic.SetNodeReferenceID(OVERLAY_REFERENCES[overlay], node.GetID() if node is not None else None)


def overlayOf(synthetic: "slicer.vtkMRMLNode", overlay: str) -> "slicer.vtkMRMLNode | None":
    """The ``overlay`` map ("subtraction", "uncertainty"; None for "none") made with this synthetic CE-T1."""
    role = OVERLAY_REFERENCES.get(overlay)
    return synthetic.GetNodeReference(role) if role else None


def showResult(synthetic: "slicer.vtkMRMLScalarVolumeNode", overlay: str, opacity: float) -> None:
    """Show a synthetic CE-T1 in every slice view, with its own overlay."""
    slicer.util.setSliceViewerLayers(background=synthetic)
    applyOverlay(synthetic.GetScene(), overlay, opacity)


def applyOverlay(scene: "slicer.vtkMRMLScene", overlay: str, opacity: float) -> int:
    """In each slice view that shows a synthetic CE-T1, show that result's own overlay; return how many views.

    Views showing anything else (another patient, the inputs) are left alone, so an overlay never
    lands on an image it does not belong to.
    """
    changed = 0
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        background = scene.GetNodeByID(composite.GetBackgroundVolumeID() or "")
        if background is None or not isSynthetic(background) or background.GetAttribute(KIND_ATTRIBUTE) != "synthetic":
            continue
        foreground = overlayOf(background, overlay)
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(opacity)
        changed += 1
    return changed
