"""The Slicer-side logic (VirtualContrastSlicerLib) against real MRML from slicer-core.

No Slicer application runs here: ``slicer.mrmlScene`` is a plain ``vtkMRMLScene`` that each test
creates, slice composite nodes are added by hand, and the engine runs for real (in process and
as a background process) with a tiny random-weight checkpoint.
"""

from __future__ import annotations

import os
import sys
import time
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
from VirtualContrastSlicerLib.models import ModelCatalog, imageWarnings  # noqa: E402
from VirtualContrastSlicerLib.logic import SynthesisLogic, SynthesisSettings, parseProgressLine  # noqa: E402
from VirtualContrastSlicerLib.volumes import (  # noqa: E402
    ijkToRasFromNode,
    imageFromVolumeNode,
    maskImageFromNode,
    updateVolumeNodeFromImage,
)


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


def test_result_is_shown_with_its_own_overlay_and_only_over_results(scene):
    compositeNodes = [scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(3)]
    t1 = _volume(scene, "T1", _head(), np.eye(4))
    first = SynthesisLogic(scene).storeResults(_resultImages(t1), t1, {}, "tiny", [])
    second = SynthesisLogic(scene).storeResults(_resultImages(t1), t1, {}, "tiny", [])

    outputs.showResult(first.synthetic, "subtraction", 0.35)
    for composite in compositeNodes:
        assert composite.GetBackgroundVolumeID() == first.synthetic.GetID()
        assert composite.GetForegroundVolumeID() == first.subtraction.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.35)

    # one view shows another patient's T1, one the second result: each keeps what belongs to it
    other = _volume(scene, "other patient T1", _head(seed=4), np.eye(4))
    compositeNodes[1].SetBackgroundVolumeID(other.GetID())
    compositeNodes[1].SetForegroundVolumeID(None)
    compositeNodes[2].SetBackgroundVolumeID(second.synthetic.GetID())
    assert outputs.applyOverlay(scene, "subtraction", 0.8) == 2
    assert compositeNodes[0].GetForegroundVolumeID() == first.subtraction.GetID()
    assert compositeNodes[1].GetForegroundVolumeID() is None
    assert compositeNodes[1].GetForegroundOpacity() != pytest.approx(0.8)
    assert compositeNodes[2].GetForegroundVolumeID() == second.subtraction.GetID()
    assert outputs.applyOverlay(scene, "none", 0.8) == 2
    assert all(c.GetForegroundVolumeID() is None for c in compositeNodes)


def _sliceView(scene):
    """A slice view driven by Slicer's own vtkMRMLSliceLogic; its foreground layer logic makes the overlay image the view blends.

    The overlay is read from that layer (RGBA; alpha 0 is transparent), not from the blended image: outside the
    application the slice logic's blend comes out black whenever the foreground layer is transparent everywhere.
    """
    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLScene(scene)
    sliceNode = logic.AddSliceNode(f"View{scene.GetNumberOfNodesByClass('vtkMRMLSliceNode')}")
    sliceNode.SetDimensions(96, 96, 1)
    return logic


def _pixels(connection) -> np.ndarray:
    producer = connection.GetProducer()
    producer.Update()
    return vtk.util.numpy_support.vtk_to_numpy(producer.GetOutputDataObject(0).GetPointData().GetScalars()).astype(int)


def _overlayDrawn(logic, offset: float) -> np.ndarray:
    """Which pixels of the view the overlay draws at ``offset`` mm: the foreground layer's alpha (0 = transparent)."""
    logic.FitSliceToAll()
    logic.GetSliceNode().SetSliceOffset(offset)
    return _pixels(logic.GetForegroundLayer().GetImageDataConnection())[:, 3] > 0


def test_overlay_colours_enhancement_in_absolute_map_units_as_the_slice_view_draws_it(scene):
    import vtk.util.numpy_support  # noqa: F401

    from VirtualContrastLib.enhancement import ENHANCEMENT_THRESHOLD, OVERLAY_COLOURS

    # the application's colour logic puts the default colour tables (grey for volumes) into its scene
    slicer.vtkMRMLColorLogic().SetMRMLScene(scene)
    t1 = _volume(scene, "T1", _head(), np.diag([2.0, 2.0, 2.0, 1.0]))
    brain = slicer.util.arrayFromVolume(t1) > 0
    noise = np.where(brain, np.random.default_rng(3).normal(0.0, 0.01, brain.shape), 0).astype(np.float32)
    lesion = np.zeros_like(brain)
    lesion[8:11, 12:18, 10:16] = True
    views = {}
    for case, subtraction in (("noise", noise), ("lesion", np.where(lesion, 0.3, noise).astype(np.float32))):
        images = {"synthetic": imageFromVolumeNode(t1), "subtraction": sitk.GetImageFromArray(subtraction), "uncertainty": None}
        images["subtraction"].CopyInformation(images["synthetic"])
        result = SynthesisLogic(scene).storeResults(images, t1, {}, "tiny", [])
        views[case] = _sliceView(scene)
        views[case].GetSliceCompositeNode().SetBackgroundVolumeID(result.synthetic.GetID())
        outputs.applyOverlay(scene, "subtraction", 1.0)
        assert views[case].GetSliceCompositeNode().GetForegroundVolumeID() == result.subtraction.GetID()
        # the same scale for every case: from the engine's detection threshold, not from a per-case percentile
        display = result.subtraction.GetDisplayNode()
        assert display.GetLowerThreshold() == pytest.approx(ENHANCEMENT_THRESHOLD)
        assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx(outputs.enhancementScale())
    # a map with no enhancement (noise of sd 0.01) colours nothing, at any depth
    for offset in (15.0, 19.0, 23.0):
        assert not _overlayDrawn(views["noise"], offset).any()
    # the enhancing region (6 x 6 voxels of 2 mm in a 52 x 60 mm view) is coloured, and the brain around it is not
    assert 0.005 < _overlayDrawn(views["lesion"], 19.0).mean() < 0.05
    assert not _overlayDrawn(views["lesion"], 5.0).any()
    # the colour node is reused, not duplicated, on the next run
    assert len([n for n in scene.GetNodesByName(outputs.ENHANCEMENT_COLOR_NAME)]) == 1
    # its colours are the engine's, which the montages' overlay panels draw too
    colours = scene.GetFirstNodeByName(outputs.ENHANCEMENT_COLOR_NAME).GetColorTransferFunction()
    for position, rgb in OVERLAY_COLOURS:
        assert colours.GetColor(position) == pytest.approx(rgb)


def test_the_panel_legend_states_the_scale():
    threshold, top = outputs.enhancementScale()
    legend = outputs.scaleLegend(threshold, top)
    assert f"below {threshold:g}" in legend and f"{top:g}" in legend and "same scale for every case" in legend


def test_outputs_that_are_inputs_or_shared_are_refused_before_any_work(scene):
    t1, t2 = _volume(scene, "T1", _head(), np.eye(4)), _volume(scene, "T2", _head(seed=2), np.eye(4))
    mine = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "mine")
    logic = SynthesisLogic(scene)
    inputNodes = {"t1": t1, "t2": t2}
    assert logic.outputProblem(inputNodes, None, {"synthetic": mine, "subtraction": None}) is None
    assert "T1 input" in logic.outputProblem(inputNodes, None, {"synthetic": t1})
    assert "BRAIN MASK input" in logic.outputProblem(inputNodes, mine, {"subtraction": mine})
    assert "same volume" in logic.outputProblem(inputNodes, None, {"synthetic": mine, "subtraction": mine})
    before = slicer.util.arrayFromVolume(t1).copy()
    with pytest.raises(InputError, match="T2 input"):
        logic.start(inputNodes, None, SynthesisSettings(device="cpu"), {"synthetic": t2})
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(t1), before)
    assert t2.GetName() == "T2"


def test_a_failed_store_puts_an_overwritten_selected_output_back_as_it_was(scene, monkeypatch):
    t1 = _volume(scene, "T1", _head(), np.eye(4))
    mine = _volume(scene, "my volume", _head(seed=9)[:, :, :20], _ijkToRas((1.0, 1.0, 2.0)))
    mine.SetAttribute("Mine", "yes")
    before = slicer.util.arrayFromVolume(mine).copy()
    nodesBefore = scene.GetNumberOfNodes()

    def fail(*args):
        raise VirtualContrastError("disk full")

    # the synthetic CE-T1 has been written into the user's volume when storing the next result fails
    monkeypatch.setattr(outputs, "configureSubtractionDisplay", fail)
    with pytest.raises(VirtualContrastError, match="disk full"):
        SynthesisLogic(scene).storeResults(_resultImages(t1), t1, {"synthetic": mine}, "tiny", [])
    assert mine.GetName() == "my volume" and mine.GetAttribute("Mine") == "yes"
    assert mine.GetAttribute(outputs.SYNTHETIC_ATTRIBUTE) is None
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(mine), before)
    np.testing.assert_allclose(ijkToRasFromNode(mine), _ijkToRas((1.0, 1.0, 2.0)))
    assert scene.GetNumberOfNodes() == nodesBefore  # the new subtraction volume is gone again


def test_an_output_deleted_during_the_run_gets_a_new_node(scene):
    t1 = _volume(scene, "T1", _head(), np.eye(4))
    chosen = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "chosen")
    scene.RemoveNode(chosen)
    result = SynthesisLogic(scene).storeResults(_resultImages(t1), t1, {"synthetic": chosen}, "tiny", [])
    assert result.synthetic is not chosen and scene.IsNodePresent(result.synthetic)
    assert any("deleted" in note for note in result.notes)


# -- inputs, progress ----------------------------------------------------------------------------


def test_inputs_are_preselected_by_name():
    names = {"1": "BraTS-001-t1c", "2": "BraTS-001-t1n", "3": "BraTS-001-t2f", "4": "BraTS-001-t2w",
             "5": "ADC_map", "6": "T1_synthetic_CE", "7": "T1 post gad"}
    assert inputs.autoAssign(names, {}) == {"t1": "2", "t2": "4", "adc": "5", "flair": "3"}
    assert inputs.autoAssign({"1": "FLAIR", "2": "T2"}, {"t2": "9"}) == {"flair": "1"}
    assert inputs.matchesModality("sub-01_T1w", "t1")


@pytest.mark.parametrize("name", ["T1_post", "T1+C", "T1 POST GD", "t1Gd", "AX T1 FS POST", "T1-MPRAGE-post", "T1_CE",
                                  "t1_gad", "CE-T1", "Phantom_true_CE_T1", "T1 contrast"])
def test_post_contrast_scans_are_never_taken_as_the_pre_contrast_t1(name):
    assert not inputs.matchesModality(name, "t1")
    assert inputs.autoAssign({"1": name}, {}) == {}


@pytest.mark.parametrize("name", ["T2*", "T2 star GRE", "t2star", "SWI"])
def test_t2_star_is_not_taken_as_t2(name):
    assert not inputs.matchesModality(name, "t2")


def test_an_exact_name_wins_and_the_panel_says_what_was_automatic():
    names = {"1": "T1_MPRAGE_nav", "2": "T1", "3": "T2 star GRE", "4": "T2"}
    chosen = inputs.autoAssign(names, {})
    assert chosen == {"t1": "2", "t2": "4"}
    note = inputs.autoAssignmentNote(chosen, {"t1": "2", "t2": "4"}, names)
    assert "automatically" in note and "T1 = 'T1'" in note and "T2 = 'T2'" in note
    # a selection the user changed is no longer reported as automatic
    assert "T1 =" not in inputs.autoAssignmentNote(chosen, {"t1": "1", "t2": "4"}, names)
    assert inputs.autoAssignmentNote(chosen, {"t1": "1", "t2": None}, names) == ""


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


# -- run plans, checkpoints, dependencies, the child process ---------------------------------------------------


REAL = "vc-hrfcn16-t1-t2-flair-brats18"
PHANTOM = "vc-hrfcn16-t1-t2-adc"


@pytest.mark.parametrize("given, policy, phantom, model, missing", [
    # on real scans only the model trained on real scans, for a subset of the inputs or with missing inputs filled
    (["t1", "t2", "flair"], "error", False, REAL, []),
    (["t1", "t2", "adc", "flair"], "auxiliary", False, REAL, []),
    (["t1", "t2"], "zeros", False, REAL, ["flair"]),
    (["t1"], "zeros", False, REAL, ["t2", "flair"]),
    # on the phantom the phantom-trained models, as before
    (["t1", "t2", "adc"], "error", True, PHANTOM, []),
    (["t1", "t2"], "auxiliary", True, PHANTOM, ["adc"]),
    (["t1"], "auxiliary", True, PHANTOM, ["t2", "adc"]),
])
def test_automatic_model_plans_use_the_missing_input_policy(given, policy, phantom, model, missing):
    plan = ModelCatalog().plan("", given, policy, phantom)
    assert plan.possible, plan.problem
    assert (plan.model, plan.missing, plan.warnings) == (model, missing, [])


def test_the_plan_says_which_inputs_are_ignored_and_warns_of_phantom_only_models():
    catalog = ModelCatalog()
    plan = catalog.plan("", ["t1", "t2", "adc", "flair"], "error")
    assert plan.notes == [f"Model {REAL} uses T1+T2+FLAIR; ignored: ADC."] and plan.warnings == []
    named = catalog.plan(PHANTOM, ["t1", "t2", "adc"], "error")
    assert named.possible and len(named.warnings) == 1 and "trained on phantoms only" in named.warnings[0]
    assert catalog.plan(PHANTOM, ["t1", "t2", "adc"], "error", phantom=True).warnings == []
    # the auxiliary models are phantom-trained too: predicting a missing input with them on real scans warns
    assert any("vc-aux-t1-to-adc" in w for w in catalog.plan(PHANTOM, ["t1", "t2"], "auxiliary").warnings)


@pytest.mark.parametrize("model, given, policy, fragment", [
    ("", ["t1"], "error", "No bundled model trained on real scans works with T1: load T2+FLAIR"),
    ("", ["t1", "t2", "adc"], "error", f"load FLAIR ({REAL} needs T1+T2+FLAIR), or name a model to run it anyway "
                                       f"(trained on phantoms only: {PHANTOM})"),
    ("", ["t1", "t2"], "auxiliary", "load FLAIR"),
    ("", ["t2", "adc"], "zeros", "pre-contrast T1"),
    ("vc-hrfcn16-t1-t2-flair", ["t1", "t2"], "auxiliary", "No bundled auxiliary model predicts FLAIR"),
    (PHANTOM, ["t1", "t2"], "error", "Select ADC"),
])
def test_impossible_runs_are_refused_with_the_reason(model, given, policy, fragment):
    plan = ModelCatalog().plan(model, given, policy)
    assert not plan.possible and fragment in plan.problem


def test_a_checkpoint_is_read_once_per_file_version(tiny_t1_t2_checkpoint, tmp_path, monkeypatch):
    import VirtualContrastLib.checkpoints as checkpoints

    reads = []
    original = checkpoints.load_checkpoint
    monkeypatch.setattr(checkpoints, "load_checkpoint", lambda path, *a, **k: reads.append(path) or original(path, *a, **k))
    catalog = ModelCatalog()
    for _ in range(5):  # slider ticks and other panel updates
        assert catalog.inputs(str(tiny_t1_t2_checkpoint)) == ["t1", "t2"]
        assert catalog.plan(str(tiny_t1_t2_checkpoint), ["t1", "t2"], "error").possible
    assert len(reads) == 1
    copy = tmp_path / "copy.pt"
    copy.write_bytes(tiny_t1_t2_checkpoint.read_bytes())
    catalog.inputs(str(copy))
    assert len(reads) == 2
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    assert "broken.pt" in catalog.checkpointProblem(str(broken))
    assert not catalog.plan(str(broken), ["t1", "t2"], "error").possible


def test_installs_pin_the_installed_torch_and_check_its_version(tmp_path, monkeypatch):
    from VirtualContrastSlicerLib import dependencies

    installed = dependencies.installedVersion("torch")
    constraints = dependencies.writeTorchConstraints(tmp_path)
    assert constraints.read_text(encoding="utf-8").split() == [f"torch=={installed}"]
    assert dependencies.pipArguments(["monai>=1.4"], constraints) == ["monai>=1.4", "--constraint", str(constraints)]
    assert dependencies.torchProblem() is None
    # offline too: the install command names the installed torch, so pip cannot swap the extension's GPU build
    offline = dependencies.offlineInstructions(["monai>=1.4"])
    assert f'--find-links wheels "monai>=1.4" "torch=={installed}"' in offline
    assert "If this computer cannot reach" in offline  # a condition, not a diagnosis of whatever pip reported
    assert "torch==" not in dependencies.offlineInstructions(["torch>=2.4"])
    assert dependencies.versionTuple("2.13.0+cu126") == (2, 13, 0) and dependencies.versionTuple("2.4.0rc1") == (2, 4, 0)
    monkeypatch.setattr(dependencies, "installedVersion", lambda name: "2.1.2+cpu" if name == "torch" else None)
    assert "2.1.2" in dependencies.torchProblem() and "PyTorch Utils" in dependencies.torchProblem()
    assert dependencies.missingRequirements() == list(dependencies.SYNTHESIS_REQUIREMENTS)
    # synthesis asks for nothing the phantom or previews need
    assert not {"nilearn", "nibabel", "matplotlib"} & {r.split(">=")[0] for r in dependencies.SYNTHESIS_REQUIREMENTS}


def test_copies_of_the_images_left_by_a_slicer_that_exited_are_removed(tmp_path, scene, tiny_t1_t2_checkpoint):
    import subprocess

    from VirtualContrastSlicerLib.logic import removeStaleWorkFolders, workDirectory

    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = tmp_path / f"{exited.stdout.strip()}-abc123"
    (stale / "t1.nrrd").parent.mkdir()
    (stale / "t1.nrrd").write_bytes(b"patient")
    unrelated = tmp_path / "notes-1"
    unrelated.mkdir()
    mine = workDirectory(tmp_path)  # the next run cleans up first
    assert mine.name.startswith(f"{os.getpid()}-") and mine.is_dir()
    assert not stale.exists() and unrelated.is_dir()
    assert removeStaleWorkFolders(tmp_path) == []  # this process's own folder stays
    # a run abandoned when Slicer closes deletes its copies at once (nobody polls it any more)
    t1, t2 = _volume(scene, "T1", _head(), np.eye(4)), _volume(scene, "T2", _head(seed=2), np.eye(4))
    job = SynthesisLogic(scene).start({"t1": t1, "t2": t2}, settings=SynthesisSettings(model=str(tiny_t1_t2_checkpoint), device="cpu"))
    assert any(job.folder.iterdir())
    job.abandon()
    assert not job.folder.exists() and job.finished


def test_a_run_on_the_phantom_sample_tells_the_engine_so(scene, tiny_t1_t2_checkpoint):
    from VirtualContrastSlicerLib import sample

    t1, t2 = _volume(scene, "T1", _head(), np.eye(4)), _volume(scene, "T2", _head(seed=2), np.eye(4))
    settings = SynthesisSettings(model=str(tiny_t1_t2_checkpoint), device="cpu")
    scan = SynthesisLogic(scene).start({"t1": t1, "t2": t2}, settings=settings)
    t1.SetAttribute(sample.PHANTOM_ATTRIBUTE, "true")
    phantom = SynthesisLogic(scene).start({"t1": t1, "t2": t2}, settings=settings)
    for job in (scan, phantom):
        job.abandon()
    # the engine then takes phantom-trained models automatically and does not warn of their training
    assert "--phantom-data" not in scan.process.args and "--phantom-data" in phantom.process.args


def test_the_child_process_writes_utf8():
    from VirtualContrastSlicerLib.process import BackgroundProcess, engineEnvironment

    env = engineEnvironment()
    assert env["PYTHONUTF8"] == "1" and env["PYTHONIOENCODING"] == "utf-8"
    env["LC_ALL"] = "C"  # a non-UTF-8 locale, as on some Windows and minimal Linux systems
    lines = []
    process = BackgroundProcess([sys.executable, "-c", "print('ADC 10\\u207b\\u2076 mm\\u00b2/s, \\u00b5')"], lines.append, env=env)
    process.start()
    assert process.wait() == 0
    assert lines == ["ADC 10\u207b\u2076 mm\u00b2/s, \u00b5"]


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals; Windows ends the tree with taskkill")
def test_cancel_returns_at_once_and_still_ends_a_child_that_ignores_sigterm():
    from VirtualContrastSlicerLib.process import CANCELLED_RETURN_CODE, BackgroundProcess

    lines = []
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"
    process = BackgroundProcess([sys.executable, "-c", script], lines.append)
    process.start()
    while not lines:
        process.poll()
        time.sleep(0.01)
    process.cancel()
    # cancel did not wait for the child: it ignores SIGTERM and is still running when cancel returns
    assert process._process.poll() is None
    assert process.wait() == CANCELLED_RETURN_CODE
    assert process._process.poll() is not None


def test_in_process_run_predicts_a_missing_input_with_the_auxiliary_model(scene, tiny_t1_t2_checkpoint):
    t1 = _volume(scene, "case_T1", _head((18, 30, 26)), _ijkToRas((1.0, 1.0, 2.0), degrees=10))
    result = SynthesisLogic(scene).process(t1, model=str(tiny_t1_t2_checkpoint), device="cpu", missingPolicy="auxiliary")
    assert any("T2 was not given" in note and "auxiliary" in note for note in result.notes), result.notes
    assert result.synthetic.GetImageData().GetDimensions() == t1.GetImageData().GetDimensions()


# -- what the model expects of its inputs ------------------------------------------------------------------------


def _headArray(shape, spacing, skull: bool) -> np.ndarray:
    """A brain ellipsoid of about 1.2 l (0 outside) or, with ``skull``, a 3 l head in a noisy background."""
    grid = (np.indices(shape) + 0.5) * np.array(spacing)[::-1, None, None, None]
    centre = np.array(shape) * np.array(spacing)[::-1] / 2
    r = np.sqrt((((grid - centre[:, None, None, None]) / np.array([55.0, 75.0, 60.0])[:, None, None, None]) ** 2).sum(0))
    brain = np.where(r < 1, 100.0, 0.0)
    if not skull:
        return brain.astype(np.float32)
    noise = np.random.default_rng(0).rayleigh(3.0, shape)
    return (np.where(r < 1.4, 60.0, 0.0) + brain + noise).astype(np.float32)


def test_inputs_unlike_the_models_training_images_are_named_with_the_reason():
    from VirtualContrastLib.registry import find_model

    expected = find_model("vc-hrfcn16-t1-t2-flair-brats18").preprocessing
    assert expected["skull_stripped"] and "BraTS" in expected["summary"]
    shape, spacing = (90, 110, 100), (1.5, 1.5, 1.5)
    axial = np.diag([*spacing, 1.0])
    assert ModelCatalog.preprocessing("vc-hrfcn16-t1-t2-flair-brats18") == expected
    assert imageWarnings("T1", _headArray(shape, spacing, skull=False), axial, expected) == []
    assert imageWarnings("T1", _headArray(shape, spacing, skull=False), axial, {}) == []
    skull = imageWarnings("T1", _headArray(shape, spacing, skull=True), axial, expected)
    assert len(skull) == 1 and skull[0].startswith("T1 does not look skull-stripped")
    thick = np.diag([1.5, 1.5, 5.0, 1.0])
    assert imageWarnings("FLAIR", _headArray((27, 110, 100), (1.5, 1.5, 5.0), skull=False), thick, expected) == [
        "FLAIR has 5.0 mm slices; the model expects at most 1.5 mm."]
    oblique = np.eye(4)
    oblique[:3, :3] = _rotation(np.array([1.0, 0.0, 0.0]), 20.0) @ np.diag(spacing)
    assert imageWarnings("T2", _headArray(shape, spacing, skull=False), oblique, expected) == [
        "T2 is oblique (20° off the scanner axes); the model expects at most 10°."]
    # the phantom-trained models take the phantom's thick slices and any orientation
    phantom = find_model("vc-hrfcn16-t1-t2-adc").preprocessing
    assert imageWarnings("T2", _headArray((27, 110, 100), (1.5, 1.5, 5.0), skull=False), thick, phantom) == []
