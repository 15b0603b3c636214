"""Relaxation times, proton density, diffusivity and gadolinium uptake of each phantom tissue at 3 T.

Values (T1, T2 in ms; PD relative to CSF; ADC in 10^-3 mm^2/s; [Gd] in mM) and where they come from.
Ranges that the literature spans are drawn per case; "[recalled]" marks numbers quoted from memory of
the source rather than re-checked against it, "[assumed]" marks plausible values chosen for this phantom.

==========================  =============  ==========  ===========  ============  ===========
tissue                      T1             T2          PD           ADC           [Gd]
==========================  =============  ==========  ===========  ============  ===========
white matter (WM)           830-1100       70-80       0.67-0.71    0.70-0.80     0
grey matter (GM)            1330-1820      85-110      0.78-0.82    0.80-0.90     0
cerebrospinal fluid (CSF)   4000-4400      1500-2000   1.00         3.00-3.20     0
enhancing tumour (ET)       1400-1900      100-120     0.83-0.87    0.90-1.20     0.15-0.50
necrotic core (NCR)         2000-3000      200-300     0.88-0.92    1.80-2.50     0
non-enhancing tumour (NET)  1400-1900      120-160     0.83-0.87    1.10-1.50     0
peritumoural oedema (ED)    1350-1900      130-180     0.88-0.92    1.30-1.70     0
venous blood / sinuses      1600-1700      30-60 eff.  0.80         1.50-2.50     0.30-0.60
choroid plexus              1200-1400      80-110      0.78-0.82    0.90-1.20     0.20-0.40
dura mater                  900-1100       40-60       0.55-0.65    0.80-1.00     0.10-0.30
==========================  =============  ==========  ===========  ============  ===========

Sources:
* WM/GM T1 and T2 at 3 T: Wansapura et al., JMRI 1999;9:531-538 (WM T1 832 ms, T2 79.6 ms; GM T1 1331 ms,
  T2 110 ms) and Stanisz et al., MRM 2005;54:507-512 (WM T1 1084 ms, T2 69 ms; GM T1 1820 ms, T2 99 ms)
  [recalled]. The two studies bracket each range. Methodological differences move all tissues together, so
  one draw per case places every normal tissue at the same relative point of its T1 (and T2) range, then
  +-3 % each; lesion tissues follow that point loosely (+- a random offset).
* CSF: T1 about 4.2 s at 3 T (Lu et al., JMRI 2005;22:13-22) [recalled]; T2 1.5-2 s; ADC of free water at
  37 degC about 3.0e-3 mm^2/s.
* PD: brain water content, WM about 0.69 and GM about 0.80 of CSF (e.g. Neeb et al., NeuroImage 2006) [recalled].
* Normal ADC: WM 0.70-0.80, GM 0.80-0.90 x 10^-3 mm^2/s (clinical DWI literature) [recalled].
* Tumour compartments: textbook glioma values (enhancing rim hypointense on T1, necrosis near-fluid, oedema
  T2-bright with raised ADC) [recalled]. Their T1 upper bounds are raised to 1900 ms so that, with the
  longer Stanisz-like normal values, lesions stay T1-hypointense relative to WM as in patients [assumed];
  non-enhancing tumour sits between enhancing tumour and oedema [assumed].
* Blood: T1 of blood at 3 T about 1.6-1.7 s (Lu et al., MRM 2004;52:679-682) [recalled]; the T2 here is an
  effective value that mimics flow voids and deoxygenation on spin echo [assumed].
* Choroid plexus and dura: [assumed]; they matter here because they lack a blood-brain barrier and enhance.
* r1 relaxivity of gadolinium chelates in plasma at 3 T, 37 degC: about 3.5-5.5 s^-1 mM^-1 (Rohrer et al.,
  Invest Radiol 2005;40:715-724: gadobutrol about 5.0, gadodiamide about 4.0) [recalled]; drawn in 4.0-5.0.
* [Gd]: tissue and blood concentrations a few minutes after 0.1 mmol/kg [assumed, order of magnitude].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TissueRange:
    """Literature ranges of one tissue's MR properties (see the module docstring for sources)."""

    t1: tuple[float, float]
    t2: tuple[float, float]
    pd: tuple[float, float]
    adc: tuple[float, float]
    gd: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class Tissue:
    """One tissue's drawn properties: T1, T2 (ms), PD, ADC (10^-3 mm^2/s), [Gd] (mM)."""

    t1: float
    t2: float
    pd: float
    adc: float
    gd: float


#: Tissue classes in the order of the fraction stack used by the generator.
TISSUE_RANGES: dict[str, TissueRange] = {
    "wm": TissueRange((830, 1100), (70, 80), (0.67, 0.71), (0.70, 0.80)),
    "gm": TissueRange((1330, 1820), (85, 110), (0.78, 0.82), (0.80, 0.90)),
    "csf": TissueRange((4000, 4400), (1500, 2000), (1.0, 1.0), (3.00, 3.20)),
    "et": TissueRange((1400, 1900), (100, 120), (0.83, 0.87), (0.90, 1.20), (0.15, 0.50)),
    "ncr": TissueRange((2000, 3000), (200, 300), (0.88, 0.92), (1.80, 2.50)),
    "net": TissueRange((1400, 1900), (120, 160), (0.83, 0.87), (1.10, 1.50)),
    "ed": TissueRange((1350, 1900), (130, 180), (0.88, 0.92), (1.30, 1.70)),
    "blood": TissueRange((1600, 1700), (30, 60), (0.80, 0.80), (1.50, 2.50), (0.30, 0.60)),
    "choroid": TissueRange((1200, 1400), (80, 110), (0.78, 0.82), (0.90, 1.20), (0.20, 0.40)),
    "dura": TissueRange((900, 1100), (40, 60), (0.55, 0.65), (0.80, 1.00), (0.10, 0.30)),
}

TISSUE_NAMES: tuple[str, ...] = tuple(TISSUE_RANGES)

#: Longitudinal relaxivity r1 of the gadolinium chelate (s^-1 mM^-1), Rohrer et al. 2005.
R1_RANGE: tuple[float, float] = (4.0, 5.0)

_NORMAL = ("wm", "gm", "csf")


def _within(bounds: tuple[float, float], position: float) -> float:
    lo, hi = bounds
    return float(lo + position * (hi - lo))


def draw_tissues(rng: np.random.Generator) -> dict[str, Tissue]:
    """Draw one case's tissue properties from :data:`TISSUE_RANGES`."""
    # A shared position in each T1/T2 range keeps the WM < GM < CSF (and lesion vs WM) ordering of one study.
    t1_pos, t2_pos = rng.uniform(size=2)
    tissues = {}
    for name, r in TISSUE_RANGES.items():
        spread = 0.0 if name in _NORMAL else 0.2
        pos1, pos2 = np.clip(np.array([t1_pos, t2_pos]) + rng.uniform(-spread, spread, size=2), 0.0, 1.0)
        jitter = rng.uniform(0.97, 1.03, size=2)
        tissues[name] = Tissue(
            t1=_within(r.t1, float(pos1)) * float(jitter[0]),
            t2=_within(r.t2, float(pos2)) * float(jitter[1]),
            pd=_within(r.pd, float(rng.uniform())),
            adc=_within(r.adc, float(rng.uniform())),
            gd=_within(r.gd, float(rng.uniform())),
        )
    return tissues
