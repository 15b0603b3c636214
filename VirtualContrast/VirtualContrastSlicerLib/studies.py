"""DICOM identity of loaded volumes: which patient and study each comes from, and the tags auto-assignment reads.

Slicer's DICOM loader puts every loaded series under a patient and a study item of the subject
hierarchy, each with its DICOM UID (patient ID, study instance UID), and stores the series' instance
UIDs on the volume node; the tags themselves stay in Slicer's DICOM database. Volumes loaded from
files (NRRD, NIfTI) carry none of this: they are never called mixed, as nothing tells them apart.
The engine's overlap check cannot catch two patients either (two heads at the scanner centre overlap).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import slicer

#: Node attribute in which Slicer's DICOM loader keeps the instance UIDs of a loaded series (space-separated).
INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"


class DicomDatabase(Protocol):
    """The two calls of Slicer's ``ctkDICOMDatabase`` (``slicer.dicomDatabase``) read here."""

    def fileForInstance(self, sopInstanceUID: str) -> str: ...

    def fileValue(self, fileName: str, tag: str) -> str: ...


def identity(node: "slicer.vtkMRMLNode") -> tuple[str | None, str | None]:
    """(patient ID, study instance UID) of a volume loaded from DICOM; None for what the scene does not record."""
    scene = node.GetScene() if node is not None else None
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene) if scene is not None else None
    item = shNode.GetItemByDataNode(node) if shNode is not None else 0
    if not item:
        return None, None
    constants = slicer.vtkMRMLSubjectHierarchyConstants
    found = []
    for level in (constants.GetDICOMLevelPatient(), constants.GetDICOMLevelStudy()):
        ancestor = shNode.GetItemAncestorAtLevel(item, level)
        found.append(shNode.GetItemUID(ancestor, constants.GetDICOMUIDName()) or None if ancestor else None)
    return found[0], found[1]


def mixedStudiesProblem(nodes: Mapping[str, "slicer.vtkMRMLNode"]) -> str | None:
    """Why these inputs (modality -> node) cannot go together: different patients or studies; None when they can."""
    identities = {modality: identity(node) for modality, node in nodes.items() if node is not None}
    for index, (what, word) in enumerate((("patient", "patients"), ("study", "studies"))):
        known = {modality: ids[index] for modality, ids in identities.items() if ids[index]}
        if len(set(known.values())) > 1:
            groups = ", ".join(f"{'+'.join(m.upper() for m in known if known[m] == value)} from {what} {value}"
                               for value in dict.fromkeys(known.values()))
            return f"The inputs come from different {word} ({groups}): select inputs of one {what}."
    return None


def dicomTags(node: "slicer.vtkMRMLNode", database: DicomDatabase | None, tags: tuple[str, ...]) -> dict[str, str]:
    """The ``tags`` of the first instance of a volume loaded from DICOM, read from Slicer's DICOM database ({} otherwise)."""
    uids = (node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()
    if database is None or not uids:
        return {}
    fileName = database.fileForInstance(uids[0])
    if not fileName:
        return {}
    return {tag: database.fileValue(fileName, tag) for tag in tags}
