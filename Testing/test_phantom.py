"""Physics checks of the phantom: signal equations, gadolinium, labels, geometry, determinism, CLI."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from VirtualContrastLib.config import DEFAULT_NORMALIZATION
from VirtualContrastLib.errors import InputError
from VirtualContrastLib.normalization import normalize
from VirtualContrastLib.phantom import ADC_UNIT, generate_case, write_case
from VirtualContrastLib.phantom import anatomy, cli, sequences, tissues
from VirtualContrastLib.phantom.lesions import LABEL_ED, LABEL_ET, LABEL_NCR, draw_lesions

SPACING = 3.0


@pytest.fixture(scope="module")
def clean_case():
    """Noise- and bias-free case with three tumours, enhancing and not (checked in the tests that need it)."""
    return generate_case(13, SPACING, lesion_count=3, noise=False, bias=False)


@pytest.fixture(scope="module")
def noisy_case():
    return generate_case(12, SPACING, lesion_count=2)


def _array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def _mask(case) -> np.ndarray:
    return _array(case.brain_mask) > 0


def test_template_ras_to_lps():
    """A voxel with negative RAS x (left hemisphere) must have positive LPS x in the SimpleITK image."""
    t1 = anatomy.template_channels()[0]
    from nilearn import datasets

    nifti = datasets.load_mni152_template(resolution=1)
    ijk = (40, 120, 90)
    ras = nib.affines.apply_affine(nifti.affine, ijk)
    lps = t1.TransformIndexToPhysicalPoint(ijk)
    assert ras[0] < 0 and lps[0] > 0
    np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-6)
    # The grey-matter channel holds the template value of that very voxel.
    gm_nifti = datasets.load_mni152_gm_template(resolution=1).get_fdata()
    gm_itk = anatomy.template_channels()[anatomy.CHANNELS.index("gm")]
    for index in [(60, 150, 100), (140, 100, 80)]:
        assert gm_itk.GetPixel(index) == pytest.approx(float(gm_nifti[index]), abs=1e-6)


def test_nifti_to_sitk_oblique_anisotropic(tmp_path):
    """nifti_to_sitk matches what ITK itself reads from the same oblique, anisotropic NIfTI file."""
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(0.3, -0.2, 0.5)
    linear = np.array(rotation.GetMatrix()).reshape(3, 3) @ np.diag([0.8, 1.3, 4.0])
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = [-40.0, 25.0, 12.0]
    data = np.random.default_rng(0).random((7, 9, 5)).astype(np.float32)
    image = nib.Nifti1Image(data, affine)
    path = tmp_path / "oblique.nii.gz"
    nib.save(image, path)
    ours = anatomy.nifti_to_sitk(image)
    itk = sitk.ReadImage(str(path))
    np.testing.assert_allclose(ours.GetSpacing(), itk.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(ours.GetOrigin(), itk.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ours.GetDirection(), itk.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(_array(ours), _array(itk))


def test_case_structure(noisy_case):
    case = noisy_case
    assert set(case.images) == {"t1", "t2", "flair", "adc", "t1c"}
    t1 = case.images["t1"]
    for key, image in case.images.items():
        assert image.GetSize() == t1.GetSize() and image.GetOrigin() == t1.GetOrigin(), key
        assert image.GetPixelID() == sitk.sitkFloat32
    mask = _mask(case)
    for key, image in case.images.items():
        values = _array(image)
        assert np.all(values[~mask] == 0), f"{key} is not skull-stripped"
        assert np.isfinite(values).all()
    assert 1.1e6 < mask.sum() * SPACING**3 < 2.2e6  # an adult brain, in mm^3
    labels = _array(case.seg)
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    assert not labels[~mask].any()


def test_ce_t1_equals_t1_without_gadolinium(clean_case):
    case = clean_case
    gd = _array(case.gd)
    t1, t1c = _array(case.images["t1"]), _array(case.images["t1c"])
    mask = _mask(case)
    no_gd = mask & (gd == 0)
    assert no_gd.sum() > 0.5 * mask.sum()
    np.testing.assert_allclose(t1c[no_gd], t1[no_gd], rtol=1e-5)
    # Gadolinium only brightens a T1-weighted image.
    with_gd = mask & (gd > 0.05)
    assert (t1c[with_gd] > t1[with_gd]).all()


def test_enhancement_exceeds_mask_threshold(clean_case):
    """On the training normalization, ET passes the paper's delta = 0.1 and non-enhancing tumour does not."""
    case = clean_case
    mask = _mask(case)
    t1 = normalize(_array(case.images["t1"]), mask, DEFAULT_NORMALIZATION)
    t1c = normalize(_array(case.images["t1c"]), mask, DEFAULT_NORMALIZATION)
    difference = t1c - t1
    fractions = case.fractions
    enhancing = (fractions["et"] > 0.9) & mask
    non_enhancing = ((fractions["net"] + fractions["ncr"]) > 0.9) & mask
    assert {lesion["enhancing"] for lesion in case.params["lesions"]} == {True, False}
    assert enhancing.sum() >= 5 and non_enhancing.sum() >= 5
    assert np.mean(difference[enhancing] > 0.1) > 0.95
    assert np.mean(difference[non_enhancing] > 0.1) == 0.0
    assert np.mean(difference[(_array(case.gd) == 0) & mask] > 0.1) == 0.0


def test_enhancement_not_tumour_only(clean_case):
    """Vessels, choroid plexus and dura enhance too, so the model cannot learn "enhancement = tumour"."""
    case = clean_case
    gd = _array(case.gd)
    labels = _array(case.seg)
    outside_tumour = (gd > 0.1) & (labels == 0)
    assert outside_tumour.sum() > 50
    for name in ("blood", "choroid", "dura"):
        assert case.fractions[name].max() > 0.3, name


def test_flair_suppresses_csf(clean_case):
    case = clean_case
    f = case.fractions
    mask = _mask(case)
    pure = {name: mask & (f[name] > 0.9) for name in ("wm", "gm", "csf")}
    flair = {name: case.clean["flair"][region].mean() for name, region in pure.items()}
    t2 = {name: case.clean["t2"][region].mean() for name, region in pure.items()}
    t1 = {name: case.clean["t1"][region].mean() for name, region in pure.items()}
    assert flair["csf"] < 0.5 * min(flair["wm"], flair["gm"])
    assert t2["csf"] > 1.5 * max(t2["wm"], t2["gm"])
    assert t2["gm"] > t2["wm"] and t1["wm"] > t1["gm"] > t1["csf"]
    flair_image = _array(case.images["flair"])
    assert flair_image[pure["csf"]].mean() < flair_image[pure["wm"]].mean()


def test_flair_null_formula():
    tr, t1_csf = 9000.0, 4200.0
    ti = sequences.flair_null_ti(t1_csf, tr)
    assert sequences.flair_null_ti(t1_csf, 1e7) == pytest.approx(t1_csf * np.log(2.0))  # long-TR limit
    assert 2000.0 < ti < t1_csf * np.log(2.0)  # a finite TR leaves less to recover: earlier null
    params = sequences.draw_sequences(np.random.default_rng(0))
    params = sequences.SequenceParams(**{**params.to_dict(), "flair_tr": tr, "flair_ti": ti})
    assert sequences.flair(1.0, t1_csf, 2000.0, params) < 1e-6


def test_adc_values_in_tissue_ranges(clean_case, noisy_case):
    # Partial volume lowers the apparent ADC of CSF (bi-exponential decay): allow 5 % without noise.
    for case, tolerance in ((clean_case, 0.05), (noisy_case, 0.15)):
        adc = _array(case.images["adc"]) * ADC_UNIT / 1e-3  # in 10^-3 mm^2/s
        mask = _mask(case)
        for name in ("wm", "gm", "csf"):
            lo, hi = tissues.TISSUE_RANGES[name].adc
            region = mask & (case.fractions[name] > 0.95)
            median = float(np.median(adc[region]))
            assert lo * (1 - tolerance) - 0.02 <= median <= hi * (1 + tolerance) + 0.02, (name, median)
    # The fit recovers a known diffusivity exactly.
    s0 = np.array([2.0], np.float32)
    assert sequences.adc_fit(s0, s0 * np.exp(-1000 * 0.8e-3))[0] == pytest.approx(0.8e-3, rel=1e-4)


def test_labels_match_compartments(clean_case):
    case = clean_case
    labels = _array(case.seg)
    gd = _array(case.gd)
    mask = _mask(case)
    assert {LABEL_NCR, LABEL_ED, LABEL_ET} <= set(np.unique(labels))
    assert (gd[labels == LABEL_ET] > 0).all()
    f = case.fractions
    assert (f["et"][labels == LABEL_ET] > 0.25).all()
    # Necrosis and non-enhancing tumour take up no gadolinium of their own.
    core = (f["ncr"] + f["net"] > 0.99) & mask
    assert core.any() and (gd[core] < 1e-3).all()
    assert (f["ed"][labels == LABEL_ED] >= 0.5).all()
    # Fractions partition every brain voxel.
    total = sum(f.values())
    np.testing.assert_allclose(total[mask], 1.0, atol=1e-3)


def test_some_tumours_do_not_enhance():
    shape = (40, 48, 40)
    wm = np.full(shape, 0.9, np.float32)
    drawn = [draw_lesions(np.random.default_rng(seed), wm, 0.1 * wm, np.full(shape, 60.0, np.float32), 4.0, 1)
             for seed in range(20)]
    enhancing = [maps.params[0]["enhancing"] for maps in drawn]
    assert 0 < sum(enhancing) < len(enhancing)
    for maps, enhances in zip(drawn, enhancing):
        assert (maps.fractions["et"].max() > 0.5) == enhances
        assert (LABEL_ET in maps.labels) == enhances


def test_determinism_per_seed():
    a = generate_case(3, 6.0)
    b = generate_case(3, 6.0)
    c = generate_case(4, 6.0)
    for key in a.images:
        np.testing.assert_array_equal(_array(a.images[key]), _array(b.images[key]))
    np.testing.assert_array_equal(_array(a.seg), _array(b.seg))
    assert a.params == b.params
    assert a.images["t1"].GetOrigin() != c.images["t1"].GetOrigin()
    overlap = (_array(a.brain_mask) > 0) & (_array(c.brain_mask) > 0)
    assert overlap.sum() < 0.98 * max((_array(a.brain_mask) > 0).sum(), (_array(c.brain_mask) > 0).sum())


def test_write_case_round_trip(tmp_path, noisy_case):
    paths = write_case(noisy_case, tmp_path, "VCP-12")
    expected = {"t1n", "t2w", "t2f", "adc", "t1c", "seg", "brainmask"}
    names = {p.name for p in (tmp_path / "VCP-12").iterdir()}
    assert names == {f"VCP-12-{s}.nii.gz" for s in expected} | {"VCP-12-params.json"}
    for key, image in {**noisy_case.images, "seg": noisy_case.seg, "brainmask": noisy_case.brain_mask}.items():
        read = sitk.ReadImage(str(paths[key]))
        np.testing.assert_allclose(read.GetSpacing(), image.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-6)
        np.testing.assert_array_equal(_array(read), _array(image))
    params = json.loads(paths["params"].read_text(encoding="utf-8"))
    assert params["seed"] == 12 and params["synthetic"] is True


def test_thick_slices_have_their_own_grid(tmp_path):
    case = generate_case(5, 6.0, thick_slices=True)
    t1 = case.images["t1"]
    for key in ("t2", "flair", "adc"):
        image = case.images[key]
        assert image.GetSpacing()[2] > t1.GetSpacing()[2]
        assert not np.allclose(image.GetDirection(), t1.GetDirection())
        # In physical space the thick image still shows the same brain.
        on_t1 = _array(sitk.Resample(image, t1, sitk.Transform(), sitk.sitkLinear, 0.0))
        mask = _mask(case)
        assert (on_t1[mask] > 0).mean() > 0.8
        assert (on_t1[~mask] == 0).mean() > 0.9
    paths = write_case(case, tmp_path, "VCP-5")
    read = sitk.ReadImage(str(paths["t2"]))
    np.testing.assert_allclose(read.GetDirection(), case.images["t2"].GetDirection(), atol=1e-5)
    np.testing.assert_allclose(read.GetOrigin(), case.images["t2"].GetOrigin(), atol=1e-3)


def test_cli_writes_cases(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["phantom", "--cases", "2", "--seed", "7", "--out", str(tmp_path), "--spacing", "6",
                              "--preview"])
    assert args.func(args) == 0
    for seed in (7, 8):
        folder = tmp_path / f"VCP-{seed}"
        for suffix in ("t1n", "t2w", "t2f", "adc", "t1c", "seg", "brainmask"):
            assert (folder / f"VCP-{seed}-{suffix}.nii.gz").is_file()
        preview = folder / f"VCP-{seed}-preview.png"
        assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.rglob(".tmp-*"))


def test_parallel_generation_writes_the_same_cases(tmp_path):
    serial = cli.generate(2, 30, tmp_path / "serial", spacing=6.0, progress=False)
    parallel = cli.generate(2, 30, tmp_path / "parallel", spacing=6.0, progress=False, workers=2)
    assert [p["t1"].parent.name for p in parallel] == ["VCP-30", "VCP-31"]
    for one, two in zip(serial, parallel):
        for key in ("t1", "t2", "t1c", "seg"):
            np.testing.assert_array_equal(_array(sitk.ReadImage(str(one[key]))), _array(sitk.ReadImage(str(two[key]))))
    with pytest.raises(InputError, match="--workers"):
        cli.generate(1, 30, tmp_path / "none", workers=0)
