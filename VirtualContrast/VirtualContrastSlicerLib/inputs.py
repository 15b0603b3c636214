"""Which loaded volume is which input: series-name rules and DICOM tags used to pre-select the input selectors.

A wrong guess is worse than none: a post-contrast T1 taken as the "pre-contrast" T1 silently makes
the result meaningless. So DICOM tags, where a volume carries them, overrule its name (a contrast agent
recorded in (0018,0010) or a bolus volume in (0018,1041) marks the series post-contrast whatever it is
called); names are read with the conventions of the main vendors (GE ``AX T1 C+``, ``T1 W/ C``, Siemens
``t1_mprage_sag_p2_iso_post``, Philips ``T1W_3D_TFE +C``, Canon ``T1W_SE +C``) and languages (German
``KM``/``mit KM``, Italian ``MDC``, French ``injecté``/``gado``, Spanish ``con contraste``); a name that is
exactly the modality wins over one that merely contains it, and the panel says which selections were
made automatically.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_B, _E = r"(?<![a-z])", r"(?![a-z])"

#: "Without contrast" in the languages below: removed before looking for contrast words ("T1 ohne KM" is pre-contrast).
WITHOUT_CONTRAST = re.compile(
    _B + r"(?:without|w\s*/\s*o|wo|sans|sin|senza|ohne|no|non)[\s_-]*"
    r"(?:contrast[aeo]?|km|mdc|gd|gado\w*|gad\w*|c" + _E + r")")
#: Post-contrast names: T1_post, T1+C, AX T1 C+, T1 W/ C, T1 POST GD, t1Gd, T1c, T1CE, CE-T1, T1 KM, mit KM, T1 MDC,
#: contrast/contraste/contrasto, enhanced, injecté, DCE.
POST_CONTRAST = re.compile(
    r"post|\+\s*c" + _E + r"|" + _B + r"c\s*\+|w\s*/\s*c" + _E + r"|gad|gd|contrast|enhanc|t1c|" + _B + r"ce" + _E +
    r"|" + _B + r"km" + _E + r"|" + _B + r"mdc" + _E + r"|" + _B + r"inj|" + _B + r"dce" + _E)
#: T2*-weighted names (T2*, T2 star GRE, SWI): not a T2.
T2_STAR = re.compile(r"t2\s*\*|star|swi|" + _B + r"gre" + _E)
#: Quantitative maps (T1 map, MOLLI, T2 mapping, relaxometry): numbers in ms, not weighted images.
RELAXATION_MAP = re.compile(r"map|molli|relax|rho")
#: Exponential ADC (eADC, exp ADC): high where diffusion is low, the inverse of what an ADC input means.
EXPONENTIAL_ADC = re.compile(_B + r"e[\s_-]?adc|exp")
SYNTHETIC = re.compile(r"synthetic")
#: A T1-weighted name (T1 FLAIR is a T1-weighted sequence, not the FLAIR input); MPRAGE, BRAVO and SPGR are T1 sequences.
T1_WEIGHTED = re.compile(r"t1(?!\d)|mprage|bravo|spgr")
FLAIR = re.compile(r"flair|t2f" + _E + r"|dark[\s_-]?fluid")

#: modality -> (pattern a name must contain, patterns that exclude it, exact names). Names are compared lower-case.
RULES: dict[str, tuple[re.Pattern, tuple[re.Pattern, ...], frozenset[str]]] = {
    "t1": (T1_WEIGHTED, (POST_CONTRAST, RELAXATION_MAP, SYNTHETIC), frozenset({"t1", "t1w", "t1n", "t1pre", "t1native"})),
    "t2": (re.compile(r"t2(?!\d)"), (FLAIR, T2_STAR, RELAXATION_MAP, POST_CONTRAST, SYNTHETIC), frozenset({"t2", "t2w"})),
    "adc": (re.compile(r"adc"), (EXPONENTIAL_ADC, SYNTHETIC), frozenset({"adc"})),
    "flair": (FLAIR, (T1_WEIGHTED, POST_CONTRAST, SYNTHETIC), frozenset({"flair", "t2flair", "t2f"})),
}

#: DICOM tags read for the choice (group,element as Slicer's DICOM database names them).
CONTRAST_AGENT_TAG = "0018,0010"
CONTRAST_ROUTE_TAG = "0018,1040"
CONTRAST_VOLUME_TAG = "0018,1041"
IMAGE_TYPE_TAG = "0008,0008"
TAGS = (CONTRAST_AGENT_TAG, CONTRAST_ROUTE_TAG, CONTRAST_VOLUME_TAG, IMAGE_TYPE_TAG)
#: Values scanners write into the contrast agent tag of series acquired without contrast.
_NO_AGENT = frozenset({"", "none", "no", "nil", "n/a", "na", "-", "0", "nein", "nessuno", "aucun", "ninguno"})


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", name) if t]


def contrastFromTags(tags: Mapping[str, str]) -> bool:
    """Whether a series' DICOM tags record a contrast agent: an agent (0018,0010) or a bolus volume (0018,1041) > 0."""
    agent = (tags.get(CONTRAST_AGENT_TAG) or "").strip().lower()
    try:
        volume = float((tags.get(CONTRAST_VOLUME_TAG) or "0").strip() or 0)
    except ValueError:
        volume = 0.0
    return agent not in _NO_AGENT or volume > 0


def _imageTypes(tags: Mapping[str, str]) -> set[str]:
    return {value.strip().upper() for value in (tags.get(IMAGE_TYPE_TAG) or "").split("\\") if value.strip()}


def tagVerdict(tags: Mapping[str, str], modality: str) -> bool | None:
    """What the DICOM tags say: False (not this modality), True (ImageType names it: ADC), or None (no evidence)."""
    if not tags:
        return None
    if contrastFromTags(tags):
        return False
    types = _imageTypes(tags)
    if modality == "adc":
        if types & {"EADC", "EXP", "EXPONENTIAL"}:
            return False
        return True if "ADC" in types else None
    # a derived relaxation map (Philips/Siemens write "T1 MAP", "T2 MAP" or "MAP" into ImageType) is not a weighted image
    return False if any("MAP" in value for value in types) else None


def matchScore(name: str, modality: str, tags: Mapping[str, str] | None = None) -> int:
    """0: not this modality; 1: the name contains it; 2: a word of the name is it; 3: the name is exactly it (or tags say so)."""
    verdict = tagVerdict(tags or {}, modality)
    if verdict is not None:
        return 3 if verdict else 0
    include, excludes, exact = RULES[modality]
    lowered = WITHOUT_CONTRAST.sub(" ", name.lower())
    if not include.search(lowered) or any(p.search(lowered) for p in excludes):
        return 0
    if "".join(_tokens(lowered)) in exact:
        return 3
    return 2 if any(t in exact for t in _tokens(lowered)) else 1


def matchesModality(name: str, modality: str, tags: Mapping[str, str] | None = None) -> bool:
    """Whether a volume (its name, and DICOM tags where it has them) looks like the given input modality."""
    return matchScore(name, modality, tags) > 0


def autoAssign(names: dict[str, str], assigned: dict[str, str | None], tags: Mapping[str, Mapping[str, str]] | None = None,
               modalities: tuple[str, ...] | None = None) -> dict[str, str]:
    """Pick a volume id for each unassigned modality by name and tags, never reusing a volume.

    ``names`` maps volume ids to names in scene order; ``assigned`` maps modalities to the ids
    already chosen (None when empty); ``tags`` maps volume ids to their DICOM tags where known;
    only ``modalities`` (default: all) are filled. The best match wins, the first in scene order on
    a tie. Returns only the new choices.
    """
    tags = tags or {}
    used = {volumeId for volumeId in assigned.values() if volumeId}
    choices: dict[str, str] = {}
    for modality in modalities or tuple(RULES):
        if assigned.get(modality):
            continue
        scored = [(matchScore(name, modality, tags.get(volumeId)), -order, volumeId) for order, (volumeId, name) in enumerate(names.items())
                  if volumeId not in used]
        best = max(scored, default=(0, 0, None))
        if best[0] > 0:
            choices[modality] = best[2]
            used.add(best[2])
    return choices


@dataclass
class Volume:
    """What auto-assignment knows of a loaded volume: its name, study (None when it carries no DICOM identity) and tags."""

    name: str
    study: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


class AutoAssigner:
    """Pre-selects inputs once per loaded volume: entering the module or adding volumes never refills a slot the
    user cleared, never replaces a choice, and never mixes studies.

    Each volume is offered to the empty slots only when it first appears. A slot the user emptied stays
    empty until the panel is empty again (a new case starts). New volumes fill slots only when they
    belong to the study of the inputs already selected; with none selected, one study is taken (the
    first that has a T1).
    """

    def __init__(self) -> None:
        self.offered: set[str] = set()
        self.cleared: set[str] = set()
        self.assigned: dict[str, str] = {}
        self._seen: dict[str, str | None] = {}

    def update(self, volumes: dict[str, Volume], current: dict[str, str | None]) -> dict[str, str]:
        """New choices (modality -> volume id) for the volumes loaded since the last call, given the current selection."""
        for modality, volumeId in current.items():
            if self._seen.get(modality) and not volumeId:
                self.cleared.add(modality)
        if not any(current.values()):
            self.cleared = set()
        new = {volumeId: volume for volumeId, volume in volumes.items() if volumeId not in self.offered}
        self.offered |= set(volumes)
        anchor = next((volumes[i].study for i in current.values() if i in volumes and volumes[i].study), None)
        groups = [anchor] if anchor else list(dict.fromkeys(v.study for v in new.values()))
        open_ = tuple(m for m in RULES if m not in self.cleared)
        options = []
        for study in groups:
            # identity-less volumes (NRRD, NIfTI files) cannot be told apart by study: they go with any
            candidates = {i: v for i, v in new.items() if v.study in (study, None)}
            options.append(autoAssign({i: v.name for i, v in candidates.items()}, current,
                                      {i: v.tags for i, v in candidates.items()}, open_))
        # one study only: the first that brings a T1, else the first that brings anything
        choices = next((c for c in options if "t1" in c), next((c for c in options if c), {}))
        self.assigned.update(choices)
        self._seen = {**current, **choices}
        return choices


def autoAssignmentNote(autoAssigned: dict[str, str], current: dict[str, str | None], names: dict[str, str]) -> str:
    """The panel's note on the inputs that are still as they were selected automatically ('' when none)."""
    kept = [f"{modality.upper()} = '{names.get(volumeId, volumeId)}'" for modality, volumeId in autoAssigned.items()
            if current.get(modality) == volumeId]
    if not kept:
        return ""
    return "Selected automatically (series name, DICOM tags): " + ", ".join(kept) + ". Check them before synthesizing."
