"""Which loaded volume is which input (series names of the main vendors and languages, DICOM tags), auto-assignment
once per volume, and the refusal to mix patients or studies, on real MRML nodes from slicer-core."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import slicer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "VirtualContrast"))

from VirtualContrastLib.errors import InputError  # noqa: E402
from VirtualContrastSlicerLib import inputs, studies  # noqa: E402
from VirtualContrastSlicerLib.logic import SynthesisLogic  # noqa: E402

# -- series names -----------------------------------------------------------------------------------------------

#: (series name as scanners and sites write it, the input it is, or None for none of them)
SERIES_NAMES = [
    # GE
    ("AX T1", "t1"), ("Sag T1 3D BRAVO", "t1"), ("SAG T1 FLAIR", "t1"), ("AX T1 PRE", "t1"), ("Ax 3D FSPGR", "t1"),
    ("AX T1 C+", None), ("T1 FS C+", None), ("Sag T1 3D BRAVO C+", None), ("T1 W/ C", None), ("+C AX T1", None),
    ("AX T1 POST", None), ("T1 W/O C", "t1"), ("AX T2 FSE", "t2"), ("AX T2 FLAIR", "flair"), ("AX T2* GRE", None),
    ("ADC (10^-6 mm²/s)", "adc"),
    # Siemens
    ("t1_mprage_sag_p2_iso", "t1"), ("t1_mprage_sag_p2_iso_post", None), ("t1_se_tra_KM", None), ("t1_fl3d_tra_ce", None),
    ("t2_tse_tra", "t2"), ("t2_tirm_tra_dark-fluid", "flair"), ("ep2d_diff_3scan_trace_p2_ADC", "adc"),
    ("ep2d_diff_EXP", None), ("t2_swi_tra", None), ("t1_vibe_dce", None),
    # Philips
    ("T1W_3D_TFE", "t1"), ("sT1W_3D_TFE", "t1"), ("T1W_3D_TFE +C", None), ("T1W_SE_GD", None), ("T2W_TSE", "t2"),
    ("T2W_FLAIR", "flair"), ("dADC", "adc"), ("eADC", None), ("T1 map", None), ("T2 MAP", None), ("T1_MOLLI", None),
    # Canon
    ("T1W_SE", "t1"), ("T1W_SE +C", None), ("T1W_SE CE", None), ("FLAIR", "flair"),
    # German, Italian, French, Spanish
    ("T1 KM", None), ("T1 mit KM", None), ("T1 ohne KM", "t1"), ("T1 nativ", "t1"), ("T1 MDC", None),
    ("T1 post MDC", None), ("T1 senza mdc", "t1"), ("T1 gado", None), ("T1 injecté", None), ("T1 sans contraste", "t1"),
    ("T1 con contraste", None), ("T1 sin contraste", "t1"), ("T1 Gd", None),
    # research and sample conventions
    ("BraTS-001-t1n", "t1"), ("BraTS-001-t1c", None), ("BraTS-001-t2f", "flair"), ("BraTS-001-t2w", "t2"),
    ("sub-01_T1w", "t1"), ("Phantom_true_CE_T1", None), ("T1_synthetic_CE", None), ("t2fs_tra", "t2"),
]


@pytest.mark.parametrize("name, modality", SERIES_NAMES)
def test_series_names_of_the_main_vendors_and_languages(name, modality):
    found = [m for m in inputs.RULES if inputs.matchesModality(name, m)]
    assert found == ([modality] if modality else []), name


# -- DICOM tags over names --------------------------------------------------------------------------------------

AGENT, VOLUME, IMAGE_TYPE = inputs.CONTRAST_AGENT_TAG, inputs.CONTRAST_VOLUME_TAG, inputs.IMAGE_TYPE_TAG


@pytest.mark.parametrize("tags, modality, matches", [
    ({AGENT: "Gadovist"}, "t1", False),                        # a plain name, but the series records an agent
    ({AGENT: "", VOLUME: "7.5"}, "t1", False),                 # a bolus volume without the agent's name
    ({AGENT: "NONE", VOLUME: "0"}, "t1", True),                # written by scanners for native series
    ({AGENT: ""}, "t1", True),
    ({IMAGE_TYPE: "DERIVED\\PRIMARY\\T1 MAP"}, "t1", False),   # a relaxation map, whatever its name
    ({IMAGE_TYPE: "DERIVED\\PRIMARY\\DIFFUSION\\ADC"}, "adc", True),
    ({IMAGE_TYPE: "DERIVED\\PRIMARY\\DIFFUSION\\EADC"}, "adc", False),
])
def test_dicom_tags_overrule_the_name(tags, modality, matches):
    name = {"t1": "T1 AX", "adc": "DWI series 5"}[modality]
    assert inputs.matchesModality(name, modality, tags) is matches


def test_a_tagged_post_contrast_series_is_not_chosen_as_the_t1():
    names = {"1": "AX T1 SE", "2": "T1 AX"}
    assert inputs.autoAssign(names, {}, {"1": {AGENT: "Dotarem 0.5 mmol/ml"}}) == {"t1": "2"}


class DicomDatabaseStandIn:
    """Stand-in for ``slicer.dicomDatabase`` (CTK's ``ctkDICOMDatabase``, a Qt object): instance -> file -> tags."""

    def __init__(self, files: dict[str, dict[str, str]]) -> None:
        self.files = files

    def fileForInstance(self, uid: str) -> str:
        return f"/dicom/{uid}.dcm" if uid in self.files else ""

    def fileValue(self, fileName: str, tag: str) -> str:
        return self.files[Path(fileName).stem].get(tag, "")


def test_tags_are_read_through_the_instance_uids_the_dicom_loader_stores(scene):
    node = _volume("T1 AX")
    database = DicomDatabaseStandIn({"1.2.3": {AGENT: "Gadovist"}})
    assert studies.dicomTags(node, database, inputs.TAGS) == {}
    node.SetAttribute(studies.INSTANCE_UIDS_ATTRIBUTE, "1.2.3 1.2.4")
    tags = studies.dicomTags(node, database, inputs.TAGS)
    assert tags[AGENT] == "Gadovist" and not inputs.matchesModality(node.GetName(), "t1", tags)
    assert studies.dicomTags(node, None, inputs.TAGS) == {}


# -- real MRML: study identity and auto-assignment -----------------------------------------------------------------


def _volume(name: str):
    array = np.random.default_rng(len(name)).random((6, 8, 8)).astype(np.float32)
    return slicer.util.addVolumeFromArray(array, np.diag([2.0, 2.0, 2.0, 1.0]), name=name)


def _loadedFromDicom(node, patientId: str, studyUid: str) -> None:
    """File a volume under a patient and study item with their DICOM UIDs, as Slicer's DICOM plugins do."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    uidName = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMUIDName()
    patient = shNode.GetItemByUID(uidName, patientId)
    if not patient:
        patient = shNode.CreateSubjectItem(shNode.GetSceneItemID(), f"Patient {patientId}")
        shNode.SetItemUID(patient, uidName, patientId)
    study = shNode.GetItemByUID(uidName, studyUid)
    if not study:
        study = shNode.CreateStudyItem(patient, f"MR brain {studyUid}")
        shNode.SetItemUID(study, uidName, studyUid)
    item = shNode.GetItemByDataNode(node)
    if item:
        shNode.SetItemParent(item, study)
    else:
        shNode.CreateItem(study, node)


def test_study_identity_comes_from_the_subject_hierarchy(scene):
    node = _volume("T1")
    assert studies.identity(node) == (None, None)
    _loadedFromDicom(node, "P1", "1.2.840.1")
    assert studies.identity(node) == ("P1", "1.2.840.1")


def test_inputs_of_two_patients_or_studies_are_refused(scene):
    t1, t2, adc, mask = _volume("T1"), _volume("T2"), _volume("ADC"), _volume("mask")
    _loadedFromDicom(t1, "P1", "1.1")
    _loadedFromDicom(t2, "P1", "1.1")
    assert studies.mixedStudiesProblem({"t1": t1, "t2": t2, "adc": adc}) is None  # a file without identity cannot be told apart
    _loadedFromDicom(adc, "P2", "2.1")
    problem = studies.mixedStudiesProblem({"t1": t1, "t2": t2, "adc": adc})
    assert problem == "The inputs come from different patients (T1+T2 from patient P1, ADC from patient P2): select inputs of one patient."
    _loadedFromDicom(mask, "P1", "1.9")
    assert "different studies" in studies.mixedStudiesProblem({"t1": t1, "mask": mask})
    # the logic refuses the run before any work, with that message
    with pytest.raises(InputError, match="different patients"):
        SynthesisLogic(scene).start({"t1": t1, "t2": t2, "adc": adc})


def _volumes(scene) -> dict[str, inputs.Volume]:
    nodes = [scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode") for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
    return {n.GetID(): inputs.Volume(n.GetName(), studies.identity(n)[1]) for n in nodes}


def test_inputs_are_assigned_once_and_a_cleared_slot_stays_empty(scene):
    assigner = inputs.AutoAssigner()
    t1, adc = _volume("T1"), _volume("ADC")
    current = {"t1": None, "t2": None, "adc": None, "flair": None}
    current.update(assigner.update(_volumes(scene), current))
    assert current == {"t1": t1.GetID(), "t2": None, "adc": adc.GetID(), "flair": None}
    # the user clears the ADC; entering the module again or loading another volume does not bring it back
    current["adc"] = None
    assert assigner.update(_volumes(scene), current) == {}
    t2 = _volume("T2")
    assert assigner.update(_volumes(scene), current) == {"t2": t2.GetID()}
    current["t2"] = t2.GetID()
    _volume("ADC_2")
    assert assigner.update(_volumes(scene), current) == {}


def test_a_second_patients_volume_never_fills_an_empty_slot(scene):
    assigner = inputs.AutoAssigner()
    t1, t2 = _volume("T1"), _volume("T2")
    for node in (t1, t2):
        _loadedFromDicom(node, "P1", "1.1")
    current = {"t1": None, "t2": None, "adc": None, "flair": None}
    current.update(assigner.update(_volumes(scene), current))
    assert current["t1"] == t1.GetID() and current["t2"] == t2.GetID()
    otherAdc, ownAdc = _volume("ADC other"), _volume("ADC")
    _loadedFromDicom(otherAdc, "P2", "2.1")
    _loadedFromDicom(ownAdc, "P1", "1.1")
    assert assigner.update(_volumes(scene), current) == {"adc": ownAdc.GetID()}


def test_two_studies_loaded_at_once_give_inputs_of_one(scene):
    nodes = {}
    for study in ("1.1", "2.1"):
        for name in ("T1", "T2"):
            nodes[study, name] = _volume(f"{name} {study}")
            _loadedFromDicom(nodes[study, name], f"P{study}", study)
    chosen = inputs.AutoAssigner().update(_volumes(scene), {"t1": None, "t2": None, "adc": None, "flair": None})
    assert chosen == {"t1": nodes["1.1", "T1"].GetID(), "t2": nodes["1.1", "T2"].GetID()}
