"""Dataset readers (every layout), dataset preparation and slab sampling, on small real NIfTI files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch.utils.data import DataLoader, DistributedSampler

from model_training.__main__ import main as train_main
from model_training.datasets import list_cases
from model_training.prepare import PrepareOptions, load_case, prepare_dataset
from model_training.sampling import SamplingOptions, SlabDataset
from model_training.settings import load_config
from model_training.train import split_cases
from VirtualContrastLib.cases import LABEL_MAPS, LAYOUTS, detect_layout
from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.errors import InputError, MissingModalityError

SHAPE = (12, 20, 16)  # z, y, x


def _volume(seed: int, labels: bool = False, enhancing: int = 4) -> sitk.Image:
    """A skull-stripped-looking volume: random intensities inside an ellipsoid, 0 outside (or tumour labels,
    ``enhancing`` the enhancing tumour's value)."""
    z, y, x = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    inside = ((z - 6) / 5.5) ** 2 + ((y - 10) / 9) ** 2 + ((x - 8) / 7) ** 2 < 1
    if labels:
        array = np.zeros(SHAPE, np.int16)
        array[5:8, 8:12, 6:10] = 2
        array[6, 9:11, 7:9] = enhancing
    else:
        array = np.where(inside, np.random.default_rng(seed).uniform(100, 1000, SHAPE), 0).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 2.0, 3.0))
    return image


def _write_case(root: Path, layout: str, case_id: str, skip: tuple[str, ...] = ()) -> Path:
    folder = root / case_id
    folder.mkdir(parents=True)
    for number, (role, suffix) in enumerate(LAYOUTS[layout].items()):
        if role in skip:
            continue
        # Each layout's own enhancing label: 4 where it is rewritten to 3 (BraTS 2018-2021, UCSF-PDGM), else 3.
        image = _volume(number, labels=role == "labels", enhancing=4 if layout in LABEL_MAPS else 3)
        if role == "mask":
            image = sitk.Cast(_volume(0) > 0, sitk.sitkUInt8)
        sitk.WriteImage(image, str(folder / f"{case_id}{suffix}.nii.gz"))
    return folder


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_folder_layout_is_read_and_detected(tmp_path: Path, layout: str) -> None:
    _write_case(tmp_path, layout, "case-001")
    _write_case(tmp_path, layout, "case-002")
    assert detect_layout(tmp_path) == layout
    cases = list_cases(tmp_path)
    assert [c.case_id for c in cases] == ["case-001", "case-002"]
    expected = {role for role in LAYOUTS[layout] if role not in ("mask", "labels")}
    assert set(cases[0].images) == expected
    assert (cases[0].mask is not None) == ("mask" in LAYOUTS[layout])
    assert cases[0].labels is not None
    # T1 must not be confused with T1c / t1ce (suffix prefixes of each other).
    assert cases[0].images["t1"] != cases[0].images["t1c"]


def test_missing_modality_gives_clear_error(tmp_path: Path) -> None:
    _write_case(tmp_path, "brats2023", "BraTS-GLI-00001-000", skip=("t2",))
    case = list_cases(tmp_path, "brats2023")[0]
    with pytest.raises(MissingModalityError, match="BraTS-GLI-00001-000: missing t2"):
        case.require(["t1", "t2", "t1c"])
    index = prepare_dataset([case], tmp_path / "cache", PrepareOptions(modalities=("t1", "t2"), register=False))
    assert index["prepared"][0]["modalities"] == ["t1", "t1c"]
    with pytest.raises(InputError, match="unknown dataset layout"):
        list_cases(tmp_path, "nonsense")


def test_splits_file_selects_cases_and_records_cohort(tmp_path: Path) -> None:
    for case_id in ("A", "B", "C"):
        _write_case(tmp_path, "brats2018", case_id)
    (tmp_path / "splits.tsv").write_text("A\ttrain\tTCGA-GBM\nB\tval\tCBICA\nC\ttrain\tCBICA\n", encoding="utf-8")
    train = list_cases(tmp_path, split="train")
    assert [c.case_id for c in train] == ["A", "C"]
    assert train[0].info["cohort"] == "TCGA-GBM" and train[0].label_map == {4: 3}
    assert [c.case_id for c in list_cases(tmp_path, split="val")] == ["B"]
    with pytest.raises(InputError, match="split 'test' is not in"):
        list_cases(tmp_path, split="test")
    (tmp_path / "splits.tsv").write_text("A\ttrain\nD\ttrain\n", encoding="utf-8")
    with pytest.raises(InputError, match="no folder, e.g. D"):
        list_cases(tmp_path, split="train")
    (tmp_path / "splits.tsv").unlink()
    with pytest.raises(InputError, match="has no splits.tsv"):
        list_cases(tmp_path, split="train")


def test_csv_manifest(tmp_path: Path) -> None:
    folder = _write_case(tmp_path / "data", "brats2021", "P1")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "case_id,t1,t2,t1c,labels\n"
        f"P1,data/P1/P1_t1.nii.gz,{folder / 'P1_t2.nii.gz'},data/P1/P1_t1ce.nii.gz,data/P1/P1_seg.nii.gz\n"
    )
    cases = list_cases(manifest)
    assert set(cases[0].images) == {"t1", "t2", "t1c"} and cases[0].labels.name == "P1_seg.nii.gz"
    manifest.write_text("case_id,t1,t1c\nP1,data/P1/P1_t1.nii.gz,data/P1/missing.nii.gz\n", encoding="utf-8")
    with pytest.raises(InputError, match="file not found"):
        list_cases(manifest)
    manifest.write_text("case_id,t1,t1c,dwi\nP1,data/P1/P1_t1.nii.gz,data/P1/P1_t1ce.nii.gz,dwi.nii.gz\n", encoding="utf-8")
    with pytest.raises(InputError, match="unknown columns dwi"):
        list_cases(manifest)
    # Training needs the target: a synthesis manifest (no t1c column) is refused with what is missing.
    manifest.write_text("case_id,t1\nP1,data/P1/P1_t1.nii.gz\n", encoding="utf-8")
    with pytest.raises(InputError, match="at least case_id,t1,t1c"):
        list_cases(manifest)


def test_prepare_normalizes_on_target_grid_and_remaps_labels(tmp_path: Path) -> None:
    _write_case(tmp_path / "data", "brats2021", "P1")
    cases = list_cases(tmp_path / "data")
    index = prepare_dataset(cases, tmp_path / "cache", PrepareOptions(register=False, dtype="float32"))
    assert not index["skipped"]
    case = load_case(tmp_path / "cache", "P1")
    brain = case["mask"] > 0
    for role in ("t1", "t2", "flair", "t1c"):
        norm = case[f"norm_{role}"]
        assert norm.shape == SHAPE
        assert norm.min() == 0.0 and norm.max() == pytest.approx(1.0)
        assert not norm[~brain].any()
    # BraTS 2021 enhancing label 4 is stored as 3 (BraTS 2023 convention).
    assert set(np.unique(case["labels"])) == {0, 2, 3}
    assert np.allclose(case["spacing"], (2.0, 2.0, 3.0))


def test_prepare_reports_skipped_cases(tmp_path: Path) -> None:
    _write_case(tmp_path / "data", "phantom", "ok")
    _write_case(tmp_path / "data", "phantom", "broken")
    (tmp_path / "data" / "broken" / "broken-t2w.nii.gz").write_bytes(b"not an image")
    index = prepare_dataset(list_cases(tmp_path / "data"), tmp_path / "cache", PrepareOptions(register=False))
    assert [c["case"] for c in index["prepared"]] == ["ok"]
    assert index["skipped"][0]["case"] == "broken" and "broken-t2w" in index["skipped"][0]["reason"]
    assert "broken" in (tmp_path / "cache" / "skipped.csv").read_text(encoding="utf-8")


def test_parallel_prepare_matches_serial(tmp_path: Path) -> None:
    for case_id in ("A", "B", "C"):
        _write_case(tmp_path / "data", "phantom", case_id)
    (tmp_path / "data" / "B" / "B-t2w.nii.gz").write_bytes(b"not an image")
    cases = list_cases(tmp_path / "data")
    serial = prepare_dataset(cases, tmp_path / "serial", PrepareOptions(register=False))
    reported = []
    parallel = prepare_dataset(cases, tmp_path / "parallel", PrepareOptions(register=False), progress=reported.append, workers=2)
    assert reported == ["A", "B", "C"]
    assert [c["case"] for c in parallel["prepared"]] == ["A", "C"] and parallel["skipped"] == serial["skipped"]
    for case_id in ("A", "C"):
        one, two = load_case(tmp_path / "serial", case_id), load_case(tmp_path / "parallel", case_id)
        assert set(one) == set(two) and all(np.array_equal(one[key], two[key]) for key in one)


def _cases(count: int = 2) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(count):
        mask = np.zeros((10, 30, 22), np.uint8)
        mask[2:8, 4:26, 3:19] = 1
        t1 = (rng.uniform(0.2, 0.6, mask.shape) * mask).astype(np.float16)
        target = t1.copy()
        target[6, 10:14, 8:12] += 0.3  # enhancement only in slice 6
        cases.append({"norm_t1": t1, "norm_t2": t1, "norm_t1c": target, "mask": mask})
    return cases


def test_slabs_are_padded_deterministic_and_cover_the_brain() -> None:
    config = ModelConfig(architecture="hrfcn", inputs=["t1", "t2"])
    dataset = SlabDataset(_cases(), config, SamplingOptions(slabs_per_epoch=16), multiple=4, seed=3)
    item = dataset[0]
    assert item["inputs"].shape == (2, 3, 32, 24)  # 30x22 padded to the multiple 4
    assert item["target"].shape == item["t1"].shape == (1, 3, 32, 24)
    assert torch.equal(dataset[5]["inputs"], dataset[5]["inputs"])
    starts = {int(s) for case in dataset.cases for s in case["valid"]}
    assert starts == set(range(0, 8))  # every start whose slab touches slices 2..7, last one included
    first = torch.stack([dataset[i]["target"] for i in range(16)])
    dataset.set_epoch(1)
    assert not torch.equal(first, torch.stack([dataset[i]["target"] for i in range(16)]))


def test_enhancement_oversampling_and_crop() -> None:
    config = ModelConfig(architecture="hrfcn", inputs=["t1"])
    options = SamplingOptions(slabs_per_epoch=20, enhancement_fraction=1.0, min_enhancing_voxels=4, crop=(16, 16))
    dataset = SlabDataset(_cases(), config, options, multiple=8, seed=0)
    for index in range(20):
        item = dataset[index]
        assert item["inputs"].shape == (1, 3, 16, 16)
        # The crop holds enhancement too, not only the slab's slices.
        assert ((item["target"] - item["t1"]) > 0.1).any()
    full = SlabDataset(_cases(), config, SamplingOptions(slabs_per_epoch=20, enhancement_fraction=1.0, min_enhancing_voxels=4), multiple=8)
    for index in range(20):
        item = full[index]
        assert ((item["target"] - item["t1"]) > 0.1).any()


def test_labels_drive_enhancement_sampling_and_local_region() -> None:
    """With labels, 'enhancing' slabs are those holding the enhancing label, not the intensity difference."""
    cases = _cases()
    for case in cases:
        case["labels"] = np.zeros(case["mask"].shape, np.int16)
        case["labels"][3, 10:14, 8:12] = 3  # enhancing tumour in slice 3 (the difference is in slice 6)
        case["labels"][4, 10:14, 8:12] = 1
    config = ModelConfig(architecture="hrfcn", inputs=["t1"])
    options = SamplingOptions(slabs_per_epoch=20, enhancement_fraction=1.0, min_enhancing_voxels=4, local_labels=(1, 3))
    dataset = SlabDataset(cases, config, options, multiple=2)
    assert {int(s) for s in dataset.cases[0]["rich"]} == {1, 2, 3}
    for index in range(20):
        item = dataset[index]
        assert item["region"].shape == item["target"].shape
        assert item["region"].sum() > 0
    with pytest.raises(MissingModalityError, match="no tumour labels"):
        SlabDataset(_cases(), config, options, multiple=2)


def test_augmentation_keeps_background_zero() -> None:
    config = ModelConfig(architecture="hrfcn", inputs=["t1"])
    dataset = SlabDataset(_cases(), config, SamplingOptions(slabs_per_epoch=8, augment=True), multiple=2)
    for index in range(8):
        item = dataset[index]
        assert not item["inputs"][:, item["mask"][0] == 0].any()


def test_dataset_works_with_distributed_sampler() -> None:
    config = ModelConfig(architecture="hrfcn", inputs=["t1"])
    dataset = SlabDataset(_cases(), config, SamplingOptions(slabs_per_epoch=8), multiple=2)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=False)
        batches = list(DataLoader(dataset, batch_size=2, sampler=sampler))
        assert len(batches) == 2
        seen.append(torch.cat([b["target"] for b in batches]))
    assert not torch.equal(seen[0], seen[1])


def test_training_refuses_a_cache_normalized_otherwise_than_the_model_config(tmp_path: Path, capsys) -> None:
    _write_case(tmp_path / "data", "phantom", "A")
    spec = {"name": "brain_percentile", "lower": 1.0, "upper": 99.0}
    prepare_dataset(list_cases(tmp_path / "data"), tmp_path / "cache", PrepareOptions(register=False, normalization=spec))
    data = ["--set", f"data.train={tmp_path / 'cache'}", "--set", f"data.val={tmp_path / 'cache'}"]
    assert train_main(["train", "tiny", "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu", *data]) == 2
    err = capsys.readouterr().err
    assert "prepared with normalization" in err and '"upper": 99.0' in err and '"upper": 99.5' in err
    assert not (tmp_path / "run" / "best.pt").exists()
    matching = load_config("tiny", {"data": {"train": str(tmp_path / "cache"), "val": str(tmp_path / "cache")},
                                    "model": {"normalization": spec}})
    assert split_cases(matching) == ((tmp_path / "cache", ["A"]), (tmp_path / "cache", ["A"]))


# --- refused and damaged data (issue 26) -------------------------------------------------------


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("virtual-contrast-train "), err
    return err


@pytest.mark.parametrize("value", [5, -1])
@pytest.mark.parametrize(("layout", "seg", "accepted"), [("brats2021", "_seg", "[0, 1, 2, 4]"), ("phantom", "-seg", "[0, 1, 2, 3]")])
def test_prepare_refuses_label_values_outside_the_layout(tmp_path: Path, value: int, layout: str, seg: str, accepted: str) -> None:
    # Issue 26: such a case was cached silently, with no enhancing tumour for sampling, loss and evaluation.
    folder = _write_case(tmp_path / "data", layout, "P1")
    labels = sitk.ReadImage(str(folder / f"P1{seg}.nii.gz"))
    labels[3, 3, 3] = value
    sitk.WriteImage(labels, str(folder / f"P1{seg}.nii.gz"))
    index = prepare_dataset(list_cases(tmp_path / "data", layout), tmp_path / "cache", PrepareOptions(register=False))
    [skipped] = index["skipped"]
    assert skipped["case"] == "P1" and f"has values [{value}] outside its layout's labels {accepted}" in skipped["reason"]
    assert not index["prepared"] and not (tmp_path / "cache" / "P1.npz").exists()


def test_prepare_on_a_full_disk_is_one_line_and_keeps_the_cache(tmp_path: Path, capsys) -> None:
    from test_bad_inputs import file_size_limit

    _write_case(tmp_path / "data", "phantom", "A")
    command = ["prepare", str(tmp_path / "data"), "--out", str(tmp_path / "cache"), "--no-register", "--quiet"]
    assert train_main(command) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in (tmp_path / "cache").iterdir()}
    # Preparing again on a full disk: the case's file and the index stay as they were, no partial file is left.
    with file_size_limit(4096):
        assert train_main(command) == 2
    err = _one_line_error(capsys)
    assert f"cannot write {tmp_path / 'cache' / 'A.npz'}: disk full" in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "cache").iterdir()} == before
    assert set(load_case(tmp_path / "cache", "A")) >= {"norm_t1", "mask"}


def test_prepare_into_an_existing_cache_merges_or_refuses(tmp_path: Path, capsys) -> None:
    for case_id in ("A", "B"):
        _write_case(tmp_path / f"data-{case_id}", "phantom", case_id)
    cache = tmp_path / "cache"
    prepare = ["--out", str(cache), "--no-register", "--quiet"]
    assert train_main(["prepare", str(tmp_path / "data-A"), *prepare]) == 0
    assert train_main(["prepare", str(tmp_path / "data-B"), *prepare]) == 0
    assert f"merged into the existing cache {cache}: kept 1 cases prepared before" in capsys.readouterr().out
    index = json.loads((cache / "index.json").read_text(encoding="utf-8"))
    assert [entry["case"] for entry in index["prepared"]] == ["A", "B"]
    # Other options would mix two normalizations in one cache: refused, the index untouched.
    assert train_main(["prepare", str(tmp_path / "data-B"), *prepare, "--normalization", '{"name": "brain_percentile", "lower": 1, "upper": 99}']) == 2
    assert "already holds a cache prepared with other options" in _one_line_error(capsys)
    assert json.loads((cache / "index.json").read_text(encoding="utf-8")) == index


def test_damaged_caches_and_bad_options_are_one_line_errors(tmp_path: Path, capsys) -> None:
    _write_case(tmp_path / "data", "phantom", "A")
    cache = tmp_path / "cache"
    assert train_main(["prepare", str(tmp_path / "data"), "--out", str(cache), "--no-register", "--quiet"]) == 0
    capsys.readouterr()
    train = ["train", "tiny", "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu", "--set", f"data.train={cache}",
             "--set", "data.val=null"]
    (cache / "A.npz").write_bytes((cache / "A.npz").read_bytes()[:300])
    with pytest.raises(InputError, match=r"cached case A \(.*A.npz\) is damaged \(BadZipFile\); prepare it again"):
        load_case(cache, "A")
    assert train_main(train) == 2
    assert "cached case A" in _one_line_error(capsys)
    (cache / "index.json").write_text('{"prepared": [', encoding="utf-8")
    assert train_main(train) == 2
    assert "index.json is damaged" in _one_line_error(capsys)
    assert train_main(["prepare", str(tmp_path / "data"), "--out", str(tmp_path / "other"), "--normalization", "{lower: 1}"]) == 2
    assert "--normalization '{lower: 1}' is not a valid normalization spec" in _one_line_error(capsys)
    assert train_main(["prepare", str(tmp_path / "data"), "--out", str(tmp_path / "other"), "--normalization", '{"name": "z"}']) == 2
    assert "unknown normalization 'z'" in _one_line_error(capsys)
    assert not (tmp_path / "other").exists()
