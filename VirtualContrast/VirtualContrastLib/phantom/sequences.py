"""MR signal equations of the phantom's sequences and per-case draws of their parameters.

All times in ms; T1/T2 arrays broadcast. Signals are in arbitrary units proportional to proton density.

* T1-weighted: 3D MPRAGE (inversion-prepared FLASH readout). The longitudinal magnetization is followed
  through one inversion cycle (inversion, recovery for ``TI - n/2 * esp``, ``n`` readout pulses of flip
  ``alpha`` every ``esp`` ms, recovery for ``TD``) and the cycle's steady state is solved in closed form,
  as in Deichmann et al., NeuroImage 2000;12:112-127 and Marques et al., NeuroImage 2010;49:1271-1281
  (MP2RAGE appendix, one inversion). The signal is read at the centre of k-space (pulse n/2, linear
  ordering), magnitude reconstructed. Typical 3 T values: TR 2300, TI 900, alpha 9 deg, esp 7.1, n 176.
* T2-weighted (turbo) spin echo: ``S = PD (1 - exp(-TR/T1)) exp(-TE/T2)``.
* FLAIR: ``S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)``; TI nulls CSF:
  ``TI = T1_csf ln(2 / (1 + exp(-TR/T1_csf)))`` (which is ``T1_csf ln 2`` for long TR), set from the
  scanner's nominal CSF T1, so suppression is near-complete but not exact.
* Diffusion: spin-echo EPI ``S_b = S_0 exp(-b ADC)`` at b = 0 and b = 1000 s/mm^2; the ADC map is fitted as
  ``ADC = -ln(S_b / S_0) / b`` (Chen et al. 2022, following the BTIP protocol).
* Contrast enhancement: ``1/T1' = 1/T1 + r1 [Gd]`` (T2 shortening at these doses is ignored).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

B_VALUE = 1000.0  # s/mm^2


@dataclass(frozen=True)
class SequenceParams:
    """One case's drawn acquisition parameters (times in ms, angles in degrees)."""

    mprage_tr: float
    mprage_ti: float
    mprage_flip: float
    mprage_esp: float
    mprage_n: int
    t2_tr: float
    t2_te: float
    flair_tr: float
    flair_te: float
    flair_ti: float
    dwi_tr: float
    dwi_te: float

    def to_dict(self) -> dict[str, float]:
        """Plain dict for the case's parameter file."""
        return asdict(self)


def flair_null_ti(t1_csf: float, tr: float) -> float:
    """Inversion time that nulls a tissue of longitudinal relaxation ``t1_csf`` at repetition ``tr``."""
    return float(t1_csf * np.log(2.0 / (1.0 + np.exp(-tr / t1_csf))))


def draw_sequences(rng: np.random.Generator) -> SequenceParams:
    """Draw sequence parameters around typical clinical 3 T brain-tumour protocols."""
    flair_tr = float(rng.uniform(8000, 10000))
    nominal_t1_csf = float(rng.uniform(4000, 4400))
    return SequenceParams(
        mprage_tr=float(rng.uniform(1900, 2400)),
        mprage_ti=float(rng.uniform(850, 1000)),
        mprage_flip=float(rng.uniform(8, 10)),
        mprage_esp=float(rng.uniform(6.5, 7.5)),
        mprage_n=int(rng.integers(160, 193)),
        t2_tr=float(rng.uniform(4000, 6500)),
        t2_te=float(rng.uniform(85, 110)),
        flair_tr=flair_tr,
        flair_te=float(rng.uniform(90, 125)),
        flair_ti=flair_null_ti(nominal_t1_csf, flair_tr),
        dwi_tr=float(rng.uniform(4000, 7000)),
        dwi_te=float(rng.uniform(60, 90)),
    )


def mprage(pd: np.ndarray, t1: np.ndarray, p: SequenceParams) -> np.ndarray:
    """Steady-state MPRAGE magnitude signal at the centre of k-space (see module docstring)."""
    t1 = np.asarray(t1, dtype=np.float64)
    n = p.mprage_n
    half = n / 2.0
    t_a = p.mprage_ti - half * p.mprage_esp
    t_d = p.mprage_tr - p.mprage_ti - half * p.mprage_esp
    if t_a <= 0 or t_d <= 0:
        raise ValueError("MPRAGE timing is inconsistent: the readout does not fit between inversions")
    alpha = np.deg2rad(p.mprage_flip)
    e1 = np.exp(-p.mprage_esp / t1)
    q = np.cos(alpha) * e1
    m_ss = (1.0 - e1) / (1.0 - q)  # steady state of the readout train alone (M0 = 1)
    e_a, e_d, q_n = np.exp(-t_a / t1), np.exp(-t_d / t1), q**n
    efficiency = 0.96  # adiabatic inversion is not perfect
    # M_a = 1 - (1 + eff * M_pre) e_a;  M_b = m_ss + (M_a - m_ss) q^n;  M_pre = 1 - (1 - M_b) e_d
    a0, a1 = 1.0 - e_a, -efficiency * e_a
    m_pre = (1.0 - e_d + e_d * (m_ss * (1.0 - q_n) + q_n * a0)) / (1.0 - e_d * q_n * a1)
    m_a = a0 + a1 * m_pre
    m_centre = m_ss + (m_a - m_ss) * q**half
    return (np.asarray(pd) * np.sin(alpha) * np.abs(m_centre)).astype(np.float32)


def spin_echo(pd: np.ndarray, t1: np.ndarray, t2: np.ndarray, tr: float, te: float) -> np.ndarray:
    """Spin-echo signal ``PD (1 - exp(-TR/T1)) exp(-TE/T2)``."""
    return (np.asarray(pd) * (1.0 - np.exp(-tr / np.asarray(t1))) * np.exp(-te / np.asarray(t2))).astype(np.float32)


def flair(pd: np.ndarray, t1: np.ndarray, t2: np.ndarray, p: SequenceParams) -> np.ndarray:
    """Magnitude inversion-recovery spin-echo (FLAIR) signal."""
    t1 = np.asarray(t1)
    recovery = np.abs(1.0 - 2.0 * np.exp(-p.flair_ti / t1) + np.exp(-p.flair_tr / t1))
    return (np.asarray(pd) * recovery * np.exp(-p.flair_te / np.asarray(t2))).astype(np.float32)


def enhanced_t1(t1: np.ndarray, gd: np.ndarray, r1: float) -> np.ndarray:
    """T1 (ms) shortened by gadolinium: ``1/T1' = 1/T1 + r1 [Gd]`` with r1 in s^-1 mM^-1."""
    return (1.0 / (1.0 / np.asarray(t1, dtype=np.float64) + r1 * np.asarray(gd) / 1000.0)).astype(np.float32)


def adc_fit(s0: np.ndarray, sb: np.ndarray, b: float = B_VALUE) -> np.ndarray:
    """Log-ratio ADC fit ``-ln(S_b / S_0) / b`` in mm^2/s; voxels without signal give 0."""
    s0 = np.asarray(s0, dtype=np.float32)
    sb = np.asarray(sb, dtype=np.float32)
    tiny = np.float32(1e-6)
    valid = s0 > tiny
    ratio = np.where(valid, np.maximum(sb, tiny) / np.maximum(s0, tiny), 1.0)
    return np.where(valid, -np.log(ratio) / b, 0.0).astype(np.float32)
