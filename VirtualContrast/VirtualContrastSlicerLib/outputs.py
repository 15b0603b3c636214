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

DIVERGING_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"
FALLBACK_DIVERGING_COLOR_NAME = "VirtualContrastDivergingBlueRed"
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


def divergingColorNode(scene: "slicer.vtkMRMLScene") -> "slicer.vtkMRMLColorNode":
    """Slicer's DivergingBlueRed table when the application loaded it, else an equivalent procedural one."""
    node = scene.GetNodeByID(DIVERGING_COLOR_NODE_ID)
    if node is not None:
        return node
    existing = scene.GetFirstNodeByName(FALLBACK_DIVERGING_COLOR_NAME)
    if existing is not None and existing.IsA("vtkMRMLProceduralColorNode"):
        return existing
    node = scene.AddNewNodeByClass("vtkMRMLProceduralColorNode", FALLBACK_DIVERGING_COLOR_NAME)
    node.SetAttribute("Category", "VirtualContrast")
    colorFunction = vtk.vtkColorTransferFunction()
    colorFunction.AddRGBPoint(-1.0, 0.23, 0.30, 0.75)
    colorFunction.AddRGBPoint(0.0, 0.87, 0.87, 0.87)
    colorFunction.AddRGBPoint(1.0, 0.71, 0.02, 0.15)
    node.SetAndObserveColorTransferFunction(colorFunction)
    return node


def symmetricWindow(image: sitk.Image, percentile: float = 99.0) -> float:
    """Half-width of a window centred on 0 that covers ``percentile`` % of the non-zero |values|."""
    values = np.abs(sitk.GetArrayViewFromImage(image))
    values = values[values > 0]
    if values.size == 0:
        return 1.0
    return float(max(np.percentile(values, percentile), np.finfo(np.float32).tiny))


def configureSubtractionDisplay(node: "slicer.vtkMRMLScalarVolumeNode", halfWidth: float) -> None:
    """Diverging colours with a window symmetric about zero (blue: darker, red: enhancing)."""
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(divergingColorNode(node.GetScene()).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(-halfWidth, halfWidth)


def configureUncertaintyDisplay(node: "slicer.vtkMRMLScalarVolumeNode") -> None:
    """Heat colours for the (non-negative) uncertainty map, when the colour node exists."""
    if node.GetScene().GetNodeByID(UNCERTAINTY_COLOR_NODE_ID) is not None:
        node.GetDisplayNode().SetAndObserveColorNodeID(UNCERTAINTY_COLOR_NODE_ID)


def showInSliceViews(background: "slicer.vtkMRMLNode | None", foreground: "slicer.vtkMRMLNode | None", opacity: float) -> None:
    """Synthetic image as background, an overlay (subtraction or uncertainty) as foreground."""
    slicer.util.setSliceViewerLayers(
        background=background if background is not None else "keep-current",
        foreground=foreground,
        foregroundOpacity=opacity,
    )


def setOverlayOpacity(opacity: float) -> None:
    """Change only the foreground opacity of every slice view."""
    slicer.util.setSliceViewerLayers(foregroundOpacity=opacity)
