"""Relaxation times, proton density, diffusivity and gadolinium uptake of each phantom tissue at 3 T.

Values (T1, T2 in ms; PD relative to CSF; ADC in 10^-3 mm^2/s; [Gd] in mM) and where they come from.
Ranges that the literature spans are drawn per case. Tags: "[checked: ...]" means the source's own text
(abstract or full text) was read and reports the numbers quoted; "[secondary: ...]" means the numbers were
only seen quoted by a third party, not in the source itself; "[not verified]" means no source text was
found; "[assumed]" marks plausible values chosen for this phantom.

==========================  =============  ==========  ===========  ============  ===========
tissue                      T1             T2          PD           ADC           [Gd]
==========================  =============  ==========  ===========  ============  ===========
white matter (WM)           830-1100       70-80       0.67-0.71    0.70-0.80     0
grey matter (GM)            1330-1820      85-110      0.78-0.85    0.80-0.90     0
cerebrospinal fluid (CSF)   4000-4400      1500-2400   1.00         3.00-3.20     0
enhancing tumour (ET)       1400-1900      100-120     0.83-0.87    0.90-1.20     0.15-0.50
necrotic core (NCR)         2000-3000      200-300     0.88-0.92    1.80-2.50     0
non-enhancing tumour (NET)  1400-1900      120-160     0.83-0.87    1.10-1.50     0
peritumoural oedema (ED)    1350-1900      130-180     0.88-0.92    1.30-1.70     0
venous blood / sinuses      1580-1850      30-60 eff.  0.80         1.50-2.50     0.30-0.60
choroid plexus              1200-1400      80-110      0.78-0.82    0.90-1.20     0.20-0.40
dura mater                  900-1100       40-60       0.55-0.65    0.80-1.00     0.10-0.30
==========================  =============  ==========  ===========  ============  ===========

Sources (literature check of this table: see also the limits noted per item):
* WM/GM T1 and T2 at 3 T. The ranges bracket two studies whose primary text was not retrieved: Wansapura et
  al., "NMR relaxation times in the human brain at 3.0 tesla", JMRI 1999;9:531-538 (WM T1 832 +- 10 ms, T2
  79.2 +- 0.6 ms; GM T1 1331 +- 13 ms, T2 110 +- 2 ms) and Stanisz et al., "T1, T2 relaxation and
  magnetization transfer in tissue at 3T", MRM 2005;54:507-512 (WM T1 1084 +- 45 ms, T2 69 +- 3 ms; GM T1 1820
  +- 114 ms, T2 99 +- 7 ms) [secondary: both as quoted in the comments of GannetQuantify.m,
  github.com/markmikkelsen/Gannet]. Primary check of T1: Gelman et al., MRM 2001;45:71-79 (abstract,
  suppr.wilddata.cn/browses/detail/pubmed/11146488): R1 frontal WM 1.184 s^-1 (T1 ~ 845 ms), prefrontal cortex
  0.567 s^-1 (T1 ~ 1764 ms) [checked: Gelman 2001 abstract] -- inside both ranges. T2 depends on the method:
  Gelman et al., Radiology 1999;210:759-767 (abstract, ncbi.nlm.nih.gov/pubmed/10207479) report R2 frontal WM
  18.0 s^-1 (T2 ~ 56 ms) and prefrontal cortex 14.4 s^-1 (T2 ~ 69 ms) with GESFIDE (gradient-echo sampling of
  FID and echo), below the ranges here; the ranges follow the spin-echo values above, which is what the
  T2-weighted signal equation needs [T2 ranges: secondary only]. Methodological differences move all tissues
  together, so one draw per case places every normal tissue at the same relative point of its T1 (and T2)
  range, then +-3 % each; lesion tissues follow that point loosely (+- a random offset).
* CSF T1: Lu et al., JMRI 2005;22:13-22 report CSF T1 3817 +- 424 ms, noting it may be underestimated and that
  ~4300 ms is likely more accurate [secondary: as quoted in GannetQuantify.m; the JMRI abstract read
  (ncbi.nlm.nih.gov/pubmed/15971174) gives no CSF value]. The quantification of T1 and T2 of subarachnoid CSF
  at 3 T (MRM, PMC10696635, pmc.ncbi.nlm.nih.gov/articles/PMC10696635) reports T1 4309 +- 147 ms and T2 1886
  +- 68 ms in the subarachnoid space, 4454 +- 188 ms and 2373 +- 72 ms in the frontal horns [checked:
  PMC10696635 abstract]. The T1 range 4000-4400 is kept (inside one SD of both compartments); the T2 upper
  bound was raised from 2000 to 2400 ms to include ventricular CSF. ADC of CSF about 3.2e-3 mm^2/s (CSF
  histogram peak, AJNR 2000;21:1078 Fig. 2, www.ajnr.org/cgi/content-nw/full/21/6/1078/F1) [checked: AJNR
  2000;21:1078 figure legend].
* PD (water content relative to CSF): "A Single-Scan, Rapid Whole-Brain Protocol for Quantitative Water
  Content Mapping With Neurobiological Implications", Front. Neurol. 2019 (Forschungszentrum Juelich,
  frontiersin.org/articles/10.3389/fneur.2019.01333/full): WM 69.1 % (SD 1.7 %), GM 83.7 % (SD 1.2 %) at 3 T,
  calibrated to CSF [checked: Front. Neurol. 2019 abstract]. The GM upper bound was raised from 0.82 to 0.85
  to include that mean. The earlier citation "Neeb et al., NeuroImage 2006" could not be found [not verified].
* Normal ADC: Helenius et al., "Diffusion-Weighted MR Imaging in Normal Human Brains in Various Age Groups",
  AJNR 2002;23:194-199 (pmc.ncbi.nlm.nih.gov/articles/PMC7975251), 1.5 T, b = 1000: cortical GM 0.89 +- 0.04
  (range 0.78-1.09), WM 0.70 +- 0.03 (range 0.62-0.79) x 10^-3 mm^2/s [checked: Helenius 2002 abstract].
* Tumour compartments. ADC of enhancing tumour: Toh et al., AJNR 2008;29:471-475 (PMC8118870): GBM
  solid-enhancing ADC 0.963 +- 0.119 x 10^-3 mm^2/s [checked: Toh 2008 abstract]; El-Serougy et al.,
  Neuroradiol J 2016;29:400-407 (PMC5033100): MD of the solid part 1.16 +- 0.22 (high grade), 1.78 +- 0.33
  (low grade) [checked: El-Serougy 2016 abstract]. ADC of necrosis, non-enhancing tumour and oedema: no cohort
  values found; one illustrated GBM (PLOS ONE 2016,
  journals.plos.org/plosone/article/figures?id=10.1371/journal.pone.0162565, Fig. 2) shows necrosis 1.85 and
  enhancing tumour 0.87 [not verified as cohort ranges]. T1/T2/PD of the tumour compartments are textbook
  glioma values (enhancing rim hypointense on T1, necrosis near-fluid, oedema T2-bright with raised ADC) [not
  verified]; as a plausibility check only, an MR-fingerprinting study of paediatric/young-adult tumours (de
  Blank et al., quoted at neurosurgerywiki.com/wiki/doku.php?id=magnetic_resonance_fingerprinting) gives T1
  1863 +- 70 ms for high-grade and 1355 +- 187 ms for low-grade solid tumour [secondary]. Tumour T1 upper
  bounds are raised to 1900 ms so that, with the longer Stanisz-like normal values, lesions stay
  T1-hypointense relative to WM as in patients [assumed]; non-enhancing tumour sits between enhancing tumour
  and oedema [assumed].
* Blood T1: Lu et al., "Determining the longitudinal relaxation time (T1) of blood at 3.0 Tesla", MRM
  2004;52:679-682 (www.ai-bt.com/si.php?db=pubmed&id=15334591): 1664 +- 14 ms arterial and 1584 +- 5 ms venous
  at Hct 0.42, in vitro [checked: Lu 2004 abstract]. In vivo values are longer: internal jugular vein 1852 +-
  104 ms (24 adults; PubMed 21500258 via proxy.weglot.com) [checked: its abstract]; internal carotid artery
  1841 ms recommended for adults (PMC5250597) [checked: its abstract]. The range was widened from 1600-1700 to
  1580-1850 to span in-vitro venous to in-vivo jugular values. The T2 is an effective value that mimics flow
  voids and deoxygenation on spin echo [assumed]; PD and ADC [assumed].
* Choroid plexus and dura: [assumed]; they matter here because they lack a blood-brain barrier and enhance.
* r1 relaxivity at 3 T, 37 degC, drawn in 4.0-5.0 s^-1 mM^-1 (R1_RANGE). The earlier citation of Rohrer et
  al., Invest Radiol 2005;40:715-724 (gadobutrol ~5.0, gadodiamide ~4.0) could not be found [not verified].
  Szomolanyi, Rohrer et al., "Comparison of the Relaxivities of Macrocyclic Gadolinium-Based Contrast Agents
  in Human Plasma at 1.5, 3, and 7 T, and Blood at 3 T", Invest Radiol 2019;54:559-564
  (pmc.ncbi.nlm.nih.gov/articles/PMC6738537), 3 T: gadobutrol 4.97 +- 0.59 (plasma) and 3.47 +- 0.16 (blood);
  gadoteridol 3.28 +- 0.09 / 2.61 +- 0.16; gadoterate 3.00 +- 0.13 / 2.72 +- 0.17 [checked: Szomolanyi 2019
  abstract]. The range therefore models gadobutrol in plasma; gadoteridol/gadoterate, and any agent in whole
  blood, relax less (about 2.6-3.3).
* [Gd]: tissue and blood concentrations a few minutes after 0.1 mmol/kg [assumed, order of magnitude]. For
  comparison, quantitative T1 in untreated glioblastoma (publikationen.ub.uni-frankfurt.de, docId 57191) drops
  by 838 +- 210 ms in enhancing tumour after contrast [checked: its abstract]; with a pre-contrast T1 near
  1650 ms and r1 ~ 4.5 that is roughly 0.1-0.25 mM, the lower part of the ET range here.
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
    "gm": TissueRange((1330, 1820), (85, 110), (0.78, 0.85), (0.80, 0.90)),
    "csf": TissueRange((4000, 4400), (1500, 2400), (1.0, 1.0), (3.00, 3.20)),
    "et": TissueRange((1400, 1900), (100, 120), (0.83, 0.87), (0.90, 1.20), (0.15, 0.50)),
    "ncr": TissueRange((2000, 3000), (200, 300), (0.88, 0.92), (1.80, 2.50)),
    "net": TissueRange((1400, 1900), (120, 160), (0.83, 0.87), (1.10, 1.50)),
    "ed": TissueRange((1350, 1900), (130, 180), (0.88, 0.92), (1.30, 1.70)),
    "blood": TissueRange((1580, 1850), (30, 60), (0.80, 0.80), (1.50, 2.50), (0.30, 0.60)),
    "choroid": TissueRange((1200, 1400), (80, 110), (0.78, 0.82), (0.90, 1.20), (0.20, 0.40)),
    "dura": TissueRange((900, 1100), (40, 60), (0.55, 0.65), (0.80, 1.00), (0.10, 0.30)),
}

TISSUE_NAMES: tuple[str, ...] = tuple(TISSUE_RANGES)

#: Longitudinal relaxivity r1 (s^-1 mM^-1): gadobutrol in plasma at 3 T (Szomolanyi et al. 2019).
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
