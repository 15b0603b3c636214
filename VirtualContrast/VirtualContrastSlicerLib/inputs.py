"""Which loaded volume is which input: name rules used to pre-select the input selectors.

A wrong guess is worse than none: a post-contrast T1 taken as the "pre-contrast" T1 silently makes
the result meaningless, so post-contrast, T2* and synthetic names are excluded, a name that is
exactly the modality wins over one that merely contains it, and the panel says which selections
were made automatically.
"""

from __future__ import annotations

import re

_NOT_LETTER_BEFORE, _NOT_LETTER_AFTER = r"(?<![a-z])", r"(?![a-z])"

#: Post-contrast names: T1_post, T1+C, T1 POST GD, t1Gd, T1c, T1CE, CE-T1, T1-MPRAGE-post, contrast, enhanced.
POST_CONTRAST = re.compile(
    r"post|\+\s*c|gad|gd|contrast|enhanc|t1c|" + _NOT_LETTER_BEFORE + r"ce" + _NOT_LETTER_AFTER)
#: T2*-weighted names (T2*, T2 star GRE, SWI): not a T2.
T2_STAR = re.compile(r"t2\s*\*|star|swi|" + _NOT_LETTER_BEFORE + r"gre" + _NOT_LETTER_AFTER)
SYNTHETIC = re.compile(r"synthetic")

#: modality -> (pattern a name must contain, patterns that exclude it, exact names). Names are compared lower-case.
RULES: dict[str, tuple[re.Pattern, tuple[re.Pattern, ...], frozenset[str]]] = {
    "t1": (re.compile(r"t1(?!\d)"), (POST_CONTRAST, SYNTHETIC), frozenset({"t1", "t1w", "t1n", "t1pre", "t1native"})),
    "t2": (re.compile(r"t2(?!\d)"), (re.compile(r"flair|t2f"), T2_STAR, SYNTHETIC), frozenset({"t2", "t2w"})),
    "adc": (re.compile(r"adc"), (SYNTHETIC,), frozenset({"adc"})),
    "flair": (re.compile(r"flair|t2f"), (POST_CONTRAST, SYNTHETIC), frozenset({"flair", "t2flair", "t2f"})),
}


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", name) if t]


def matchScore(name: str, modality: str) -> int:
    """0: not this modality; 1: the name contains it; 2: a word of the name is it; 3: the name is exactly it."""
    include, excludes, exact = RULES[modality]
    lowered = name.lower()
    if not include.search(lowered) or any(p.search(lowered) for p in excludes):
        return 0
    if "".join(_tokens(lowered)) in exact:
        return 3
    return 2 if any(t in exact for t in _tokens(lowered)) else 1


def matchesModality(name: str, modality: str) -> bool:
    """Whether a volume name looks like the given input modality."""
    return matchScore(name, modality) > 0


def autoAssign(names: dict[str, str], assigned: dict[str, str | None]) -> dict[str, str]:
    """Pick a volume id for each unassigned modality by name, never reusing a volume.

    ``names`` maps volume ids to names in scene order; ``assigned`` maps modalities to the ids
    already chosen (None when empty). The best-matching name wins, the first in scene order on a
    tie. Returns only the new choices.
    """
    used = {volumeId for volumeId in assigned.values() if volumeId}
    choices: dict[str, str] = {}
    for modality in RULES:
        if assigned.get(modality):
            continue
        scored = [(matchScore(name, modality), -order, volumeId) for order, (volumeId, name) in enumerate(names.items())
                  if volumeId not in used]
        best = max(scored, default=(0, 0, None))
        if best[0] > 0:
            choices[modality] = best[2]
            used.add(best[2])
    return choices


def autoAssignmentNote(autoAssigned: dict[str, str], current: dict[str, str | None], names: dict[str, str]) -> str:
    """The panel's note on the inputs that are still as they were selected automatically ('' when none)."""
    kept = [f"{modality.upper()} = '{names.get(volumeId, volumeId)}'" for modality, volumeId in autoAssigned.items()
            if current.get(modality) == volumeId]
    if not kept:
        return ""
    return "Selected automatically by name: " + ", ".join(kept) + ". Check them before synthesizing."
