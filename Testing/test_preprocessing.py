"""Preprocessing: physical-space resampling, overlap checks, brain masks, the working grid round trip."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import head as make_head
from conftest import rotation
from VirtualContrastLib.config import DEFAULT_NORMALIZATION
from VirtualContrastLib.errors import GeometryError, MissingModalityError
from VirtualContrastLib.normalization import intensity_range, normalize
from VirtualContrastLib.preprocessing import (
    WorkingGrid,
    coverage_fraction,
    default_brain_mask,
    is_skull_stripped,
    prepare_inputs,
    resample_to_reference,
)


def head(shape=(20, 28, 24), spacing=(1.5, 1.5, 3.0), origin=(-20.0, -25.0, -30.0), direction=None, seed=0) -> sitk.Image:
    """This module's head: a slightly flattened ellipsoid on a (20, 28, 24) grid unless told otherwise."""
    return make_head(shape, spacing, origin, direction, seed, radii=(0.4, 0.42, 0.42))


def physical_grid(size, spacing, origin, direction=None) -> sitk.Image:
    image = sitk.Image(size, sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def test_shifted_input_is_resampled_not_misaligned():
    t1 = head(shape=(20, 28, 24), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    # The T2 lives on a coarser, rotated grid with another origin; a bright cube sits at
    # physical x in [8, 14], y in [10, 16], z in [6, 12] mm.
    t2 = physical_grid((40, 40, 40), (0.7, 0.7, 0.7), (26.0, -4.0, -5.0), rotation((0, 0, 90)))
    points = np.array([t2.TransformIndexToPhysicalPoint((i, j, k)) for k in range(40) for j in range(40) for i in range(40)])
    cube = np.all((points >= (8, 10, 6)) & (points <= (14, 16, 12)), axis=1).reshape(40, 40, 40)
    t2_array = 10.0 + 90.0 * cube
    t2 = sitk.GetImageFromArray(t2_array.astype(np.float32))
    t2.CopyInformation(physical_grid((40, 40, 40), (0.7, 0.7, 0.7), (26.0, -4.0, -5.0), rotation((0, 0, 90))))

    on_t1 = sitk.GetArrayFromImage(resample_to_reference(t2, t1))
    # T1 voxel (x, y, z) = (11, 13, 9) is the cube centre; (2, 2, 2) is far outside it.
    assert on_t1[9, 13, 11] == pytest.approx(100.0, abs=1e-3)
    assert on_t1[2, 2, 2] == pytest.approx(10.0, abs=1e-3)

    full_mask = sitk.Cast(t1 * 0 + 1, sitk.sitkUInt8)
    prepared = prepare_inputs({"t1": t1, "t2": t2}, DEFAULT_NORMALIZATION, brain_mask=full_mask, min_overlap=0.01)
    restored = sitk.GetArrayFromImage(prepared.grid.to_reference(prepared.channels["t2"]))
    assert restored[9, 13, 11] == pytest.approx(1.0)
    assert restored[2, 2, 2] < 0.2


@pytest.mark.parametrize("degrees", [(0, 0, 0), (30, 10, 5), (45, 45, 0), (180, 90, 0), (-60, 45, 45)])
def test_working_grid_round_trip_is_exact_for_oblique_anisotropic_grids(degrees):
    image = head(spacing=(0.9, 1.3, 3.5), origin=(12.5, -7.0, 40.0), direction=rotation(degrees))
    mask = sitk.Cast(image > 0, sitk.sitkUInt8)
    grid = WorkingGrid.create(image, mask, in_plane_multiple=8, margin=(1, 2, 2))
    working = grid.to_working(image)
    assert working.shape[1] % 8 == 0 and working.shape[2] % 8 == 0
    back = grid.to_reference(working)
    assert back.GetSize() == image.GetSize()
    assert back.GetSpacing() == image.GetSpacing() and back.GetOrigin() == image.GetOrigin()
    assert back.GetDirection() == image.GetDirection()
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))


def test_working_axis_0_runs_inferior_to_superior():
    # A sagittally acquired T1 (index axes: A-P, S-I, L-R): slabs must still be axial.
    direction = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    image = head(shape=(16, 20, 24), spacing=(1.0, 1.0, 1.0), direction=direction)
    array = sitk.GetArrayFromImage(image)
    superior = max(np.argwhere(array > 0).tolist(), key=lambda idx: image.TransformIndexToPhysicalPoint(idx[::-1])[2])
    marker = sitk.Image(image)
    marker[superior[::-1]] = 1000.0
    grid = WorkingGrid.create(marker, sitk.Cast(marker > 0, sitk.sitkUInt8), margin=(0, 0, 0))
    working = grid.to_working(marker)
    assert np.unravel_index(np.argmax(working), working.shape)[0] == working.shape[0] - 1


def test_skull_stripped_mask_fills_holes():
    t1 = head(spacing=(2.0, 2.0, 2.0))
    array = sitk.GetArrayFromImage(t1)
    array[10, 12:16, 10:14] = 0.0  # an enclosed dark "ventricle" at exactly 0
    holed = sitk.GetImageFromArray(array)
    holed.CopyInformation(t1)
    assert is_skull_stripped(holed)
    mask = sitk.GetArrayFromImage(default_brain_mask(holed)).astype(bool)
    assert mask[10, 12:16, 10:14].all()
    assert np.array_equal(mask[array > 0], np.ones(int((array > 0).sum()), bool))
    assert not mask[0, 0, 0]


def test_non_stripped_head_uses_otsu_and_largest_component():
    rng = np.random.default_rng(4)
    t1 = head(shape=(24, 32, 32), spacing=(2.0, 2.0, 2.0))
    array = sitk.GetArrayFromImage(t1) + rng.random((24, 32, 32)).astype(np.float32) * 5 + 1  # noisy background, no zeros
    array[1, 1, 1:3] = 400  # a bright speck apart from the head
    noisy = sitk.GetImageFromArray(array)
    noisy.CopyInformation(t1)
    assert not is_skull_stripped(noisy)
    mask = sitk.GetArrayFromImage(default_brain_mask(noisy)).astype(bool)
    brain = sitk.GetArrayFromImage(t1) > 0
    assert (mask & brain).sum() / brain.sum() > 0.97
    assert not mask[1, 1, 1] and (mask & ~brain).sum() < 0.1 * brain.sum()


def test_non_overlapping_input_is_refused_with_how_much():
    t1 = head(origin=(0.0, 0.0, 0.0))
    far = head(origin=(30.0, 0.0, 0.0))  # shifted 30 mm along x: covers about a quarter of the T1 brain
    covered = coverage_fraction(far, t1, sitk.Cast(t1 > 0, sitk.sitkUInt8))
    assert 0.0 < covered < 0.5
    with pytest.raises(GeometryError, match=rf"T2 covers only {covered:.0%} of the T1 brain"):
        prepare_inputs({"t1": t1, "t2": far}, DEFAULT_NORMALIZATION)
    elsewhere = head(origin=(500.0, 0.0, 0.0))
    with pytest.raises(GeometryError, match="ADC covers only 0%"):
        prepare_inputs({"t1": t1, "adc": elsewhere}, DEFAULT_NORMALIZATION)


def test_user_mask_on_another_grid_is_resampled_nearest():
    t1 = head(spacing=(1.5, 1.5, 3.0))
    mask = sitk.Cast(head(shape=(40, 56, 48), spacing=(0.75, 0.75, 1.5)) > 0, sitk.sitkUInt8)
    mask.SetOrigin(t1.GetOrigin())
    prepared = prepare_inputs({"t1": t1}, DEFAULT_NORMALIZATION, brain_mask=mask)
    assert prepared.mask.GetSize() == t1.GetSize() and prepared.mask.GetOrigin() == t1.GetOrigin()
    assert set(np.unique(sitk.GetArrayFromImage(prepared.mask))) == {0, 1}
    assert not any("automatically" in note for note in prepared.notes)
    outside = head(origin=(900.0, 0.0, 0.0))
    with pytest.raises(GeometryError, match="brain mask does not overlap"):
        prepare_inputs({"t1": t1}, DEFAULT_NORMALIZATION, brain_mask=sitk.Cast(outside > 0, sitk.sitkUInt8))


def test_channels_are_the_shared_normalization_on_the_working_grid():
    t1 = head(direction=rotation((20, 0, 10)))
    prepared = prepare_inputs({"t1": t1}, DEFAULT_NORMALIZATION, in_plane_multiple=4)
    mask = sitk.GetArrayFromImage(prepared.mask) > 0
    expected = normalize(sitk.GetArrayFromImage(t1), mask, DEFAULT_NORMALIZATION)
    restored = sitk.GetArrayFromImage(prepared.grid.to_reference(prepared.channels["t1"]))
    assert np.array_equal(restored, expected)
    assert prepared.t1_range == intensity_range(sitk.GetArrayFromImage(t1), mask, DEFAULT_NORMALIZATION)
    assert prepared.channels["t1"].min() >= 0.0 and prepared.channels["t1"].max() <= 1.0
    assert prepared.working_mask.shape == prepared.grid.shape


def test_t1_is_required():
    with pytest.raises(MissingModalityError, match="T1 is required"):
        prepare_inputs({"t2": head()}, DEFAULT_NORMALIZATION)
