"""MRML volume nodes <-> SimpleITK images with exact geometry.

Slicer stores a volume as voxels plus an IJK->RAS matrix (and possibly a parent transform);
SimpleITK stores origin, spacing and direction in LPS. The conversion here goes through the
node's *world* IJK->RAS matrix, so a volume under a linear parent transform lands where the
user sees it, and the user's node is never modified.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from VirtualContrastLib.errors import InputError

#: Flips the first two axes: RAS <-> LPS (its own inverse).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])

_ORTHOGONALITY_TOLERANCE = 1e-4


def ijkToRasFromNode(node: "slicer.vtkMRMLVolumeNode", world: bool = True) -> np.ndarray:
    """4x4 IJK->RAS matrix of a volume node, including its linear parent transforms when ``world``."""
    local = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(local)
    matrix = slicer.util.arrayFromVTKMatrix(local)
    transformNode = node.GetParentTransformNode()
    if world and transformNode is not None:
        if not transformNode.IsTransformToWorldLinear():
            raise InputError(
                f"volume '{node.GetName()}' is under a non-linear transform; harden it "
                "(Data module: right-click the transform, 'Harden transform') before synthesis"
            )
        toWorld = vtk.vtkMatrix4x4()
        transformNode.GetMatrixTransformToWorld(toWorld)
        matrix = slicer.util.arrayFromVTKMatrix(toWorld) @ matrix
    return matrix


def ijkToRasFromImage(image: sitk.Image) -> np.ndarray:
    """4x4 IJK->RAS matrix equivalent to a SimpleITK image's LPS origin, spacing and direction."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = RAS_TO_LPS @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = RAS_TO_LPS @ np.array(image.GetOrigin(), dtype=float)
    return matrix


def setImageGeometryFromIjkToRas(image: sitk.Image, ijkToRas: np.ndarray) -> None:
    """Set a SimpleITK image's origin, spacing and direction from an IJK->RAS matrix."""
    columns = np.asarray(ijkToRas, dtype=float)[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing <= 0):
        raise InputError("volume has a zero voxel spacing")
    direction = columns / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=_ORTHOGONALITY_TOLERANCE):
        raise InputError("volume axes are not orthogonal (sheared transform); harden or resample it first")
    image.SetSpacing(spacing.tolist())
    image.SetDirection((RAS_TO_LPS @ direction).flatten().tolist())
    image.SetOrigin((RAS_TO_LPS @ np.asarray(ijkToRas, dtype=float)[:3, 3]).tolist())


def imageFromVolumeNode(node: "slicer.vtkMRMLVolumeNode") -> sitk.Image:
    """Copy a scalar volume node into a SimpleITK image in world (LPS) coordinates."""
    if node is None or node.GetImageData() is None:
        raise InputError(f"volume '{node.GetName() if node else None}' has no image data")
    voxels = np.array(slicer.util.arrayFromVolume(node), copy=True)
    if voxels.ndim != 3:
        raise InputError(f"volume '{node.GetName()}' is not a 3D scalar volume")
    image = sitk.GetImageFromArray(voxels)
    setImageGeometryFromIjkToRas(image, ijkToRasFromNode(node))
    return image


def maskImageFromNode(maskNode: "slicer.vtkMRMLNode", referenceNode: "slicer.vtkMRMLVolumeNode") -> sitk.Image:
    """Binary (uint8) brain mask from a label map, scalar volume or segmentation node.

    A segmentation is exported on the reference volume's grid through a temporary label map
    node that is removed again, so the scene is left as it was.
    """
    if maskNode.IsA("vtkMRMLSegmentationNode"):
        scene = maskNode.GetScene()
        # the export also adds a colour table; every node it adds is removed afterwards
        before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", scene.GetUniqueNameByString("VirtualContrastMask"))
        try:
            if not slicer.vtkSlicerSegmentationsModuleLogic.ExportVisibleSegmentsToLabelmapNode(maskNode, labelmap, referenceNode):
                raise InputError(f"cannot convert segmentation '{maskNode.GetName()}' to a brain mask")
            mask = imageFromVolumeNode(labelmap)
        finally:
            removeNodeWithDependents(labelmap)
            added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
            for node in added:
                if node.GetID() not in before and not node.IsA("vtkMRMLSubjectHierarchyNode"):
                    scene.RemoveNode(node)
    elif maskNode.IsA("vtkMRMLScalarVolumeNode"):
        mask = imageFromVolumeNode(maskNode)
    else:
        raise InputError(f"brain mask '{maskNode.GetName()}' must be a volume or a segmentation")
    binary = sitk.Cast(mask != 0, sitk.sitkUInt8)
    if not np.any(sitk.GetArrayViewFromImage(binary)):
        raise InputError(f"brain mask '{maskNode.GetName()}' is empty on the T1 grid")
    return binary


def updateVolumeNodeFromImage(node: "slicer.vtkMRMLScalarVolumeNode", image: sitk.Image,
                              referenceNode: "slicer.vtkMRMLVolumeNode | None" = None) -> None:
    """Write a SimpleITK image's voxels and geometry into a volume node.

    When the image lies exactly on ``referenceNode``'s world grid, the node copies the
    reference's local geometry and parent transform, so it follows the reference if the user
    moves that transform later; otherwise the node gets the image's world geometry.
    """
    voxels = sitk.GetArrayFromImage(image)
    ijkToRas = ijkToRasFromImage(image)
    node.SetAndObserveTransformNodeID(None)
    if referenceNode is not None and _onReferenceGrid(image, ijkToRas, referenceNode):
        node.CopyOrientation(referenceNode)
        node.SetAndObserveTransformNodeID(referenceNode.GetTransformNodeID())
    else:
        node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijkToRas))
    slicer.util.updateVolumeFromArray(node, voxels)


def _onReferenceGrid(image: sitk.Image, ijkToRas: np.ndarray, referenceNode: "slicer.vtkMRMLVolumeNode") -> bool:
    """Whether an image has the reference node's voxel dimensions and world IJK->RAS matrix."""
    imageData = referenceNode.GetImageData()
    if imageData is None or tuple(imageData.GetDimensions()) != tuple(image.GetSize()):
        return False
    return bool(np.allclose(ijkToRasFromNode(referenceNode), ijkToRas, atol=1e-5))


def removeNodeWithDependents(node: "slicer.vtkMRMLNode") -> None:
    """Remove a node and the display and storage nodes it created, leaving no orphans."""
    scene = node.GetScene()
    if scene is None:
        return
    dependents = []
    if node.IsA("vtkMRMLDisplayableNode"):
        dependents += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    if node.IsA("vtkMRMLStorableNode"):
        dependents += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    scene.RemoveNode(node)
    for dependent in dependents:
        if dependent is not None and dependent.GetScene() is scene:
            scene.RemoveNode(dependent)
