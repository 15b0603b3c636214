"""One phantom case: warped anatomy + tumours + gadolinium -> T1, T2, FLAIR, ADC and the true CE-T1.

Tissue classes mix per voxel by their fractions (partial volume): each image is the fraction-weighted sum of
the classes' signals. The contrast-enhanced T1 uses the same MPRAGE equation with ``1/T1' = 1/T1 + r1 [Gd]``
in the classes that take up gadolinium (enhancing tumour, blood, choroid plexus, dura), so CE-T1 equals the
pre-contrast T1 wherever [Gd] = 0 except for independent noise. Outputs are skull-stripped (0 outside the
brain) like BraTS, and all images are SYNTHETIC.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import INTENDED_USE
from ..cases import LAYOUTS
from . import acquisition, anatomy, lesions, sequences, tissues

#: Image keys of a case, and the file suffix each is written with: the "phantom" layout of :mod:`..cases`.
FILE_SUFFIXES = {key: LAYOUTS["phantom"][role].lstrip("-") for key, role in
                 {"t1": "t1", "t2": "t2", "flair": "flair", "adc": "adc", "t1c": "t1c", "seg": "labels", "brainmask": "mask"}.items()}

#: ADC images are stored in 10^-6 mm^2/s (WM about 750), the usual integer scaling of scanner ADC maps.
ADC_UNIT = 1e-6

_THICK = ("t2", "flair", "adc")


@dataclass
class PhantomCase:
    """A generated case: images on their grids, labels, brain mask and [Gd] on the T1 grid, drawn values.

    ``clean`` holds the noise-, bias- and gain-free signals on the T1 grid (z, y, x arrays) and
    ``fractions`` the tissue-class fractions, both for checks against the physics.
    """

    images: dict[str, sitk.Image]
    seg: sitk.Image
    brain_mask: sitk.Image
    gd: sitk.Image
    params: dict[str, object]
    clean: dict[str, np.ndarray] = field(default_factory=dict)
    fractions: dict[str, np.ndarray] = field(default_factory=dict)


def _on_grid(array: np.ndarray, grid: sitk.Image, pixel: int = sitk.sitkFloat32) -> sitk.Image:
    image = sitk.Cast(sitk.GetImageFromArray(array), pixel)
    image.CopyInformation(grid)
    return image


def _tissue_fractions(anat: dict[str, np.ndarray], lesion: lesions.LesionMaps, veins: np.ndarray) -> dict[str, np.ndarray]:
    """Fractions of every class in :data:`tissues.TISSUE_NAMES`; they sum to 1 inside the brain."""
    mask = (anat["mask"] > 0.5).astype(np.float32)
    gm, wm = anat["gm"] * mask, anat["wm"] * mask
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    blood = np.clip(anat["blood"] + veins, 0.0, 1.0) * mask
    structures = {"blood": blood, "choroid": anat["choroid"] * mask, "dura": anat["dura"] * mask}
    # Smooth profiles have endless tails: below 2 % a structure is absent, so [Gd] is exactly 0 elsewhere.
    structures = {k: np.where(v >= 0.02, v, 0.0) for k, v in structures.items()}
    total = sum(structures.values())
    squeeze = np.where(total > 1.0, 1.0 / np.maximum(total, 1e-6), 1.0)
    structures = {k: v * squeeze for k, v in structures.items()}
    normal = 1.0 - sum(structures.values())
    base = {"wm": wm * normal, "gm": gm * normal, "csf": csf * normal, **structures}
    keep = 1.0 - sum(lesion.fractions.values())
    out = {name: base[name] * keep if name in base else lesion.fractions[name] * mask for name in tissues.TISSUE_NAMES}
    return {k: v.astype(np.float32) for k, v in out.items()}


def _mix(fractions: dict[str, np.ndarray], per_class: dict[str, float]) -> np.ndarray:
    out = np.zeros(next(iter(fractions.values())).shape, np.float32)
    for name, value in per_class.items():
        out += np.float32(value) * fractions[name]
    return out


def generate_case(seed: int, spacing: float = 1.0, *, lesion_count: int | None = None, noise: bool = True,
                  bias: bool = True, thick_slices: bool = False, elastic: bool = True) -> "PhantomCase":
    """Generate one phantom case; the same ``seed`` and options always give the same case.

    ``spacing`` (mm) is the isotropic T1 grid (1 for realism, 2-3 for fast tests and training);
    ``lesion_count`` fixes the number of tumours (default: 0-3 at random); ``noise``/``bias`` switch the
    Rician noise and coil bias off for physics checks; ``thick_slices`` acquires T2, FLAIR and ADC as
    tilted thick axial slices on their own grids; ``elastic`` adds the smooth per-case deformation.
    """
    if not 0.5 <= spacing <= 6.0:
        raise ValueError("spacing must be between 0.5 and 6 mm")
    rng = np.random.default_rng(seed)
    grid = anatomy.output_grid(rng, spacing)
    warp = anatomy.draw_warp(rng, grid, elastic=elastic)
    anat = anatomy.warped_anatomy(grid, warp)
    mask = anat["mask"] > 0.5
    shape = mask.shape
    # Cortical veins: patches of sulcal CSF near the surface, different in every case.
    sulcal = np.clip(anat["mask"] - anat["gm"] - anat["wm"], 0.0, 1.0)
    near_surface = np.clip((12.0 - anat["depth"]) / 4.0, 0.0, 1.0)
    veins = 0.8 * sulcal * near_surface * np.clip(lesions.smooth_noise(rng, shape, spacing, 6.0, order=1) - 1.6, 0.0, 1.0)
    lesion = lesions.draw_lesions(rng, anat["wm"] * mask, anat["gm"] * mask, anat["depth"], spacing, lesion_count)
    fractions = _tissue_fractions(anat, lesion, veins)
    tissue = tissues.draw_tissues(rng)
    seq = sequences.draw_sequences(rng)
    r1 = float(rng.uniform(*tissues.R1_RANGE))

    gd_per_class = {"et": tissue["et"].gd * lesion.gd_scale, "blood": tissue["blood"].gd,
                    "choroid": tissue["choroid"].gd, "dura": tissue["dura"].gd}
    gd = sum(fractions[k] * np.float32(v) for k, v in gd_per_class.items()).astype(np.float32)

    t1w = {k: float(sequences.mprage(t.pd, t.t1, seq)) for k, t in tissue.items()}
    clean = {"t1": _mix(fractions, t1w)}
    t1c = clean["t1"].copy()
    for name, conc in gd_per_class.items():
        where = fractions[name] > 0
        conc_here = conc[where] if np.ndim(conc) else conc
        t1_short = sequences.enhanced_t1(tissue[name].t1, conc_here, r1)
        enhanced = sequences.mprage(tissue[name].pd, t1_short, seq)
        t1c[where] += fractions[name][where] * (enhanced - np.float32(t1w[name]))
    clean["t1c"] = t1c
    clean["t2"] = _mix(fractions, {k: float(sequences.spin_echo(t.pd, t.t1, t.t2, seq.t2_tr, seq.t2_te)) for k, t in tissue.items()})
    clean["flair"] = _mix(fractions, {k: float(sequences.flair(t.pd, t.t1, t.t2, seq)) for k, t in tissue.items()})
    s0 = {k: float(sequences.spin_echo(t.pd, t.t1, t.t2, seq.dwi_tr, seq.dwi_te)) for k, t in tissue.items()}
    clean["dwi_b0"] = _mix(fractions, s0)
    clean["dwi_b1000"] = _mix(fractions, {k: s0[k] * float(np.exp(-sequences.B_VALUE * t.adc * 1e-3)) for k, t in tissue.items()})
    clean["adc"] = np.where(mask, sequences.adc_fit(clean["dwi_b0"], clean["dwi_b1000"]) / ADC_UNIT, 0.0).astype(np.float32)

    acq = _acquire(clean, mask, grid, rng, noise=noise, bias=bias, thick_slices=thick_slices)
    params = {
        "seed": int(seed), "spacing_mm": float(spacing), "synthetic": True, "intended_use": INTENDED_USE,
        "options": {"lesion_count": lesion_count, "noise": noise, "bias": bias, "thick_slices": thick_slices,
                    "elastic": elastic},
        "label_convention": "BraTS 2021+: 1 = necrotic core + non-enhancing tumour (NETC merged into NCR), "
                            "2 = peritumoural oedema, 3 = enhancing tumour",
        "units": {"t1_t2_ms": "ms", "adc": "1e-6 mm^2/s", "gd": "mM", "r1": "1/(s mM)", "pd": "relative to CSF"},
        "tissues": {k: vars(t) for k, t in tissue.items()},
        "sequences": seq.to_dict(), "r1": r1, "warp": warp.params(), "lesions": lesion.params,
        "acquisition": acq.pop("params"),
    }
    images = {k: acq[k] for k in ("t1", "t2", "flair", "adc", "t1c")}
    return PhantomCase(images=images, seg=_on_grid(np.where(mask, lesion.labels, 0), grid, sitk.sitkUInt8),
                       brain_mask=_on_grid(mask.astype(np.uint8), grid, sitk.sitkUInt8),
                       gd=_on_grid(np.where(mask, gd, 0.0), grid), params=params, clean=clean, fractions=fractions)


def _acquire(clean: dict[str, np.ndarray], mask: np.ndarray, grid: sitk.Image, rng: np.random.Generator,
             *, noise: bool, bias: bool, thick_slices: bool) -> dict:
    """Turn clean T1-grid signals into scanner images: bias, slice profile, Rician noise, grids, gain, skull strip.

    Partial volume is already in the clean signals (tissue fractions from the smooth template, soft lesion
    edges, and a template low-passed for coarse grids), so no extra in-plane point-spread blur is applied.
    """
    snr = {"t1": rng.uniform(25, 45), "t2": rng.uniform(25, 45), "flair": rng.uniform(18, 35), "dwi": rng.uniform(18, 35)}
    strength = {k: float(rng.uniform(0.05, 0.25)) if bias else 0.0 for k in ("t1", "t2", "flair", "dwi")}
    gain = {k: float(10 ** rng.uniform(2.0, 3.5)) for k in ("t1", "t2", "flair")}
    thickness = float(max(rng.uniform(4.0, 5.0), 1.5 * grid.GetSpacing()[2]))
    fields = {k: acquisition.bias_field(grid, rng, s) for k, s in strength.items()}
    thick_grids = {k: acquisition.thick_slice_grid(grid, rng, thickness) for k in _THICK} if thick_slices else {}
    mask_image = _on_grid(mask.astype(np.uint8), grid, sitk.sitkUInt8)

    def scan(signal: np.ndarray, key: str, modality: str) -> tuple[np.ndarray, sitk.Image]:
        """Signal through the scanner; returns the array and the grid it was acquired on."""
        sigma = float(np.median(signal[mask])) / snr[key]
        signal = signal * fields[key]
        target = grid
        if modality in thick_grids:
            target = thick_grids[modality]
            signal = sitk.GetArrayFromImage(acquisition.acquire_on(signal, grid, target))
        if noise:
            signal = acquisition.rician(signal, sigma, rng)
        return signal, target

    out: dict = {}
    for modality, key in (("t1", "t1"), ("t1c", "t1"), ("t2", "t2"), ("flair", "flair")):
        signal, target = scan(clean[modality], key, modality)
        out[modality] = (signal * gain[key], target)  # pre and post T1: one session, one gain
    b0, target = scan(clean["dwi_b0"], "dwi", "adc")
    b1000, _ = scan(clean["dwi_b1000"], "dwi", "adc")
    adc = np.clip(sequences.adc_fit(b0, b1000) / ADC_UNIT, 0.0, 4000.0)
    out["adc"] = (adc, target)
    images = {}
    for modality, (array, target) in out.items():
        inside = sitk.GetArrayFromImage(sitk.Resample(mask_image, target, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
        images[modality] = _on_grid(np.where(inside, array, 0.0).astype(np.float32), target)
    images["params"] = {"snr": snr, "bias_strength": strength, "gain": gain,
                        "slice_thickness_mm": thickness if thick_slices else None}
    return images


def write_case(case: PhantomCase, out_dir: str | os.PathLike, case_id: str) -> dict[str, Path]:
    """Write a case BraTS-style into ``out_dir/case_id/`` (NIfTI + params JSON), each file atomically."""
    folder = Path(out_dir) / case_id
    folder.mkdir(parents=True, exist_ok=True)
    items = {**{k: case.images[k] for k in ("t1", "t2", "flair", "adc", "t1c")}, "seg": case.seg,
             "brainmask": case.brain_mask}
    written: dict[str, Path] = {}
    for key, image in items.items():
        path = folder / f"{case_id}-{FILE_SUFFIXES[key]}.nii.gz"
        tmp = folder / f".tmp-{os.getpid()}-{path.name}"
        image = sitk.Image(image)
        image.SetMetaData("ITK_FileNotes", "VirtualContrast phantom: SYNTHETIC")
        sitk.WriteImage(image, str(tmp), useCompression=True)
        os.replace(tmp, path)
        written[key] = path
    params_path = folder / f"{case_id}-params.json"
    tmp = folder / f".tmp-{os.getpid()}-{params_path.name}"
    tmp.write_text(json.dumps(case.params, indent=1, default=float), encoding="utf-8")
    os.replace(tmp, params_path)
    written["params"] = params_path
    return written
