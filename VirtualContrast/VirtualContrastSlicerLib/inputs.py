"""Which loaded volume is which input: name patterns used to pre-select the input selectors."""

from __future__ import annotations

from fnmatch import fnmatch

#: modality -> (patterns a name must match, patterns that exclude it); names are compared lower-case.
#: Post-contrast and synthetic volumes must never be taken for a pre-contrast input.
NAME_PATTERNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "t1": (("*t1*",), ("*t1c*", "*ce[-_ .]*", "*[-_ .]ce", "*gad*", "*synthetic*")),
    "t2": (("*t2*",), ("*flair*", "*t2f*", "*synthetic*")),
    "adc": (("*adc*",), ("*synthetic*",)),
    "flair": (("*flair*", "*t2f*"), ("*synthetic*",)),
}


def matchesModality(name: str, modality: str) -> bool:
    """Whether a volume name looks like the given input modality."""
    include, exclude = NAME_PATTERNS[modality]
    lowered = name.lower()
    return any(fnmatch(lowered, p) for p in include) and not any(fnmatch(lowered, p) for p in exclude)


def autoAssign(names: dict[str, str], assigned: dict[str, str | None]) -> dict[str, str]:
    """Pick a volume id for each unassigned modality by name, never reusing a volume.

    ``names`` maps volume ids to names in scene order; ``assigned`` maps modalities to the ids
    already chosen (None when empty). Returns only the new choices.
    """
    used = {volumeId for volumeId in assigned.values() if volumeId}
    choices: dict[str, str] = {}
    for modality in NAME_PATTERNS:
        if assigned.get(modality):
            continue
        for volumeId, name in names.items():
            if volumeId not in used and matchesModality(name, modality):
                choices[modality] = volumeId
                used.add(volumeId)
                break
    return choices
