"""The Slicer-side logic (VirtualContrastSlicerLib) against real MRML from slicer-core.

No Slicer application runs here: ``slicer.mrmlScene`` is a plain ``vtkMRMLScene`` that each test
creates, slice composite nodes are added by hand, and the engine runs for real (in process and
as a background process) with a tiny random-weight checkpoint.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "VirtualContrast"))

from conftest import head  # noqa: E402
from VirtualContrastLib.errors import CancelledError, InputError, VirtualContrastError  # noqa: E402
from VirtualContrastSlicerLib import inputs, outputs  # noqa: E402
from VirtualContrastSlicerLib.logic import SynthesisLogic, SynthesisSettings, parseProgressLine  # noqa: E402
from VirtualContrastSlicerLib.volumes import (  # noqa: E402
    ijkToRasFromNode,
    imageFromVolumeNode,
    maskImageFromNode,
    updateVolumeNodeFromImage,
)


@pytest.fixture
def scene():
    """A fresh MRML scene installed as ``slicer.mrmlScene``, with the subject hierarchy the application always has."""
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    yield scene
    scene.Clear(1)


def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    angle = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _ijkToRas(spacing, degrees=23.0, origin=(-40.0, 25.0, 12.5), axis=(1.0, 2.0, 0.5)) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = _rotation(np.array(axis), degrees) @ np.diag(spacing)
    matrix[:3, 3] = origin
    return matrix


def _head(shape=(18, 30, 26), seed=0) -> np.ndarray:
    """A bright ellipsoid 'brain' with noise, KJI order, float32."""
    return sitk.GetArrayFromImage(head(shape, seed=seed, texture=0.2, radii=(0.4, 0.4, 0.4)))


def _volume(scene, name, array, ijkToRas):
    node = slicer.util.addVolumeFromArray(array, ijkToRas, name=name)
    assert node.GetScene() is scene
    return node


# -- geometry ------------------------------------------------------------------------------------


def test_oblique_anisotropic_round_trip(scene):
    ijkToRas = _ijkToRas((0.9, 1.3, 3.1))
    array = np.random.default_rng(1).random((7, 9, 11)).astype(np.float32)
    node = _volume(scene, "t1", array, ijkToRas)

    image = imageFromVolumeNode(node)
    assert image.GetSize() == (11, 9, 7)
    np.testing.assert_allclose(image.GetSpacing(), (0.9, 1.3, 3.1), atol=1e-6)
    # the same voxel sits at the same physical point in both worlds (RAS in Slicer, LPS in ITK)
    for index in [(0, 0, 0), (10, 8, 6), (3, 7, 2)]:
        ras = (ijkToRas @ [*index, 1.0])[:3]
        lps = np.array(image.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(lps, ras * [-1, -1, 1], atol=1e-6)
        assert image[index] == array[index[2], index[1], index[0]]

    back = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "back")
    updateVolumeNodeFromImage(back, image)
    np.testing.assert_allclose(ijkToRasFromNode(back), ijkToRas, atol=1e-6)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(back), array)


def test_volume_under_linear_transform_is_converted_in_world_and_left_untouched(scene):
    ijkToRas = _ijkToRas((1.0, 1.0, 2.0))
    array = _head((8, 10, 12))
    node = _volume(scene, "t1", array, ijkToRas)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    toParent = np.eye(4)
    toParent[:3, :3] = _rotation(np.array([0.0, 0.0, 1.0]), 30)
    toParent[:3, 3] = (5.0, -7.0, 11.0)
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(toParent))
    node.SetAndObserveTransformNodeID(transform.GetID())

    image = imageFromVolumeNode(node)
    lps = np.array(image.TransformIndexToPhysicalPoint((3, 4, 5)))
    world = toParent @ ijkToRas @ [3, 4, 5, 1.0]
    np.testing.assert_allclose(lps, world[:3] * [-1, -1, 1], atol=1e-6)
    # the user's node is unchanged
    assert node.GetTransformNodeID() == transform.GetID()
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array)
    np.testing.assert_allclose(ijkToRasFromNode(node, world=False), ijkToRas)

    # a result on that world grid is stored with the T1's local geometry under the same transform
    result = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "result")
    updateVolumeNodeFromImage(result, image, referenceNode=node)
    assert result.GetTransformNodeID() == transform.GetID()
    np.testing.assert_allclose(ijkToRasFromNode(result, world=False), ijkToRas, atol=1e-6)


def test_non_linear_transform_is_refused_with_a_clear_message(scene):
    node = _volume(scene, "t1", _head((6, 8, 8)), np.eye(4))
    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    node.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(InputError, match="non-linear transform"):
        imageFromVolumeNode(node)


def test_segmentation_mask_is_exported_on_the_t1_grid_and_cleaned_up(scene):
    t1 = _volume(scene, "t1", _head((8, 10, 12)), _ijkToRas((1.0, 1.0, 2.0), degrees=0))
    labels = (slicer.util.arrayFromVolume(t1) > 0).astype(np.uint8)
    labelmap = slicer.util.addVolumeFromArray(labels, ijkToRasFromNode(t1), name="lm", nodeClassName="vtkMRMLLabelMapVolumeNode")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    before = scene.GetNumberOfNodes()

    mask = maskImageFromNode(segmentation, t1)
    assert scene.GetNumberOfNodes() == before
    assert mask.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), labels)

    empty = _volume(scene, "empty", np.zeros((8, 10, 12), np.float32), ijkToRasFromNode(t1))
    with pytest.raises(InputError, match="empty"):
        maskImageFromNode(empty, t1)


# -- outputs and display -------------------------------------------------------------------------


def _resultImages(t1Node):
    t1 = imageFromVolumeNode(t1Node)
    synthetic = sitk.Cast(t1 * 1.5, sitk.sitkFloat32)
    subtraction = sitk.Cast(synthetic - t1, sitk.sitkFloat32)
    return {"synthetic": synthetic, "subtraction": subtraction, "uncertainty": None}


def test_outputs_are_created_labelled_and_placed_beside_the_t1(scene):
    t1 = _volume(scene, "case7_T1", _head(), _ijkToRas((1.2, 0.8, 2.5)))
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = shNode.CreateStudyItem(shNode.CreateSubjectItem(shNode.GetSceneItemID(), "patient"), "study")
    shNode.CreateItem(study, t1)

    result = SynthesisLogic(scene).storeResults(_resultImages(t1), t1, {}, "tiny", ["a note"])

    assert result.synthetic.GetName() == "case7_T1_synthetic_CE"
    assert result.subtraction.GetName() == "case7_T1_synthetic_CE_subtraction"
    assert result.uncertainty is None and result.notes == ["a note"]
    for node in (result.synthetic, result.subtraction):
        assert outputs.isSynthetic(node)
        assert node.GetAttribute(outputs.MODEL_ATTRIBUTE) == "tiny"
        assert "research" in node.GetDescription().lower()
        np.testing.assert_allclose(ijkToRasFromNode(node), ijkToRasFromNode(t1), atol=1e-6)
        assert node.GetImageData().GetDimensions() == t1.GetImageData().GetDimensions()
        assert shNode.GetItemParent(shNode.GetItemByDataNode(node)) == study
    np.testing.assert_allclose(slicer.util.arrayFromVolume(result.synthetic), 1.5 * slicer.util.arrayFromVolume(t1), rtol=1e-6)

    # a second run creates new nodes with unique names: earlier results are kept
    again = SynthesisLogic(scene).storeResults(_resultImages(t1), t1, {}, "tiny", [])
    assert again.synthetic.GetID() != result.synthetic.GetID()
    assert again.synthetic.GetName() != result.synthetic.GetName()


def test_selected_output_nodes_are_overwritten_not_duplicated(scene):
    t1 = _volume(scene, "T1", _head(), _ijkToRas((1.0, 1.0, 1.0)))
    mine = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my result")
    volumesBefore = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")

    result = SynthesisLogic(scene).storeResults(_resultImages(t1), t1, {"synthetic": mine}, "tiny", [])

    assert result.synthetic is mine
    assert "synthetic" in mine.GetName()
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumesBefore + 1  # only the subtraction is new
    np.testing.assert_allclose(ijkToRasFromNode(mine), ijkToRasFromNode(t1), atol=1e-6)


def test_display_layers_colours_and_opacity(scene):
    compositeNodes = [scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(3)]
    t1 = _volume(scene, "T1", _head(), np.eye(4))
    result = SynthesisLogic(scene).storeResults(_resultImages(t1), t1, {}, "tiny", [])

    outputs.showInSliceViews(result.synthetic, result.subtraction, 0.35)
    for composite in compositeNodes:
        assert composite.GetBackgroundVolumeID() == result.synthetic.GetID()
        assert composite.GetForegroundVolumeID() == result.subtraction.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.35)
    outputs.setOverlayOpacity(0.8)
    assert all(c.GetForegroundOpacity() == pytest.approx(0.8) for c in compositeNodes)
    assert all(c.GetBackgroundVolumeID() == result.synthetic.GetID() for c in compositeNodes)

    display = result.subtraction.GetDisplayNode()
    colour = scene.GetNodeByID(display.GetColorNodeID())
    assert colour.GetName() == outputs.FALLBACK_DIVERGING_COLOR_NAME  # no file-based tables in slicer-core
    assert display.GetAutoWindowLevel() == 0
    assert display.GetWindowLevelMin() == pytest.approx(-display.GetWindowLevelMax())
    assert display.GetWindowLevelMax() > 0
    # the colour node is reused, not duplicated, on the next run
    SynthesisLogic(scene).storeResults(_resultImages(t1), t1, {}, "tiny", [])
    assert len([n for n in scene.GetNodesByName(outputs.FALLBACK_DIVERGING_COLOR_NAME)]) == 1


# -- inputs, progress ----------------------------------------------------------------------------


def test_inputs_are_preselected_by_name():
    names = {"1": "BraTS-001-t1c", "2": "BraTS-001-t1n", "3": "BraTS-001-t2f", "4": "BraTS-001-t2w",
             "5": "ADC_map", "6": "T1_synthetic_CE", "7": "T1 post gad"}
    assert inputs.autoAssign(names, {}) == {"t1": "2", "t2": "4", "adc": "5", "flair": "3"}
    assert inputs.autoAssign({"1": "FLAIR", "2": "T2"}, {"t2": "9"}) == {"flair": "1"}
    assert not inputs.matchesModality("T1_CE", "t1") and not inputs.matchesModality("t1_gad", "t1")
    assert inputs.matchesModality("sub-01_T1w", "t1")


def test_progress_lines_of_the_engine_are_parsed():
    assert parseProgressLine("PROGRESS 0.4200 slab 21/50") == (0.42, "slab 21/50")
    assert parseProgressLine("PROGRESS 1.0000") == (1.0, "100%")
    assert parseProgressLine("synthesis:  42%|####2     | 42/100 [00:01<00:02, 20.1%/s]") is None
    assert parseProgressLine("model: tiny (inputs T1+T2)") is None
    assert parseProgressLine("note: brain mask computed") is None


# -- running the engine --------------------------------------------------------------------------


def _case(scene):
    t1 = _volume(scene, "case_T1", _head((18, 30, 26)), _ijkToRas((1.0, 1.0, 2.0), degrees=10))
    # the T2 lies on another (coarser, differently rotated) grid covering the same head
    t2Array = _head((12, 20, 18), seed=3)
    t2 = _volume(scene, "case_T2", t2Array, _ijkToRas((1.5, 1.5, 3.0), degrees=16, origin=(-40.5, 24.5, 11.5)))
    return t1, t2


def test_end_to_end_in_process_on_different_grids(scene, tiny_t1_t2_checkpoint):
    t1, t2 = _case(scene)
    progress = []
    result = SynthesisLogic(scene).process(t1, t2, model=str(tiny_t1_t2_checkpoint), device="cpu",
                                           onProgress=lambda f, m: progress.append(f))
    assert result.modelName == "tiny"
    assert progress and progress[-1] == 1.0
    for node in (result.synthetic, result.subtraction):
        np.testing.assert_allclose(ijkToRasFromNode(node), ijkToRasFromNode(t1), atol=1e-6)
        assert node.GetImageData().GetDimensions() == t1.GetImageData().GetDimensions()
        assert np.all(np.isfinite(slicer.util.arrayFromVolume(node)))
    brain = slicer.util.arrayFromVolume(t1) > 0
    assert np.count_nonzero(slicer.util.arrayFromVolume(result.synthetic)[brain]) > 0.5 * brain.sum()


@pytest.mark.slow
def test_end_to_end_background_process(scene, tiny_t1_t2_checkpoint):
    t1, t2 = _case(scene)
    lines, progress = [], []
    job = SynthesisLogic(scene).start({"t1": t1, "t2": t2}, None, SynthesisSettings(model=str(tiny_t1_t2_checkpoint), device="cpu"),
                                      {}, onProgress=lambda f, m: progress.append(f), onLog=lines.append)
    result = job.wait()
    assert job.process.returnCode == 0, "\n".join(lines)
    assert result.modelName == "tiny"
    assert progress == sorted(progress) and progress[-1] == 1.0
    np.testing.assert_allclose(ijkToRasFromNode(result.synthetic), ijkToRasFromNode(t1), atol=1e-6)
    assert outputs.isSynthetic(result.synthetic)
    assert not job.folder.exists()


def test_cancel_kills_the_process_and_leaves_the_scene_clean(scene, tiny_t1_t2_checkpoint):
    t1, t2 = _case(scene)
    nodesBefore = scene.GetNumberOfNodes()
    finished = []
    job = SynthesisLogic(scene).start({"t1": t1, "t2": t2}, None, SynthesisSettings(model=str(tiny_t1_t2_checkpoint), device="cpu"),
                                      {}, onFinished=finished.append)
    pid = job.process.pid
    job.cancel()
    with pytest.raises(CancelledError):
        job.wait()
    assert finished == [job]
    assert scene.GetNumberOfNodes() == nodesBefore
    assert not job.folder.exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def test_engine_errors_reach_the_caller_as_one_clear_message(scene, tmp_path):
    t1, t2 = _case(scene)
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    nodesBefore = scene.GetNumberOfNodes()
    with pytest.raises(VirtualContrastError, match="broken.pt") as raised:
        SynthesisLogic(scene).process(t1, t2, model=str(bad), device="cpu", inProcess=False)
    assert "Traceback" not in str(raised.value)
    assert scene.GetNumberOfNodes() == nodesBefore
