"""What a model card says about the data a model was trained on: known limits and, for real scans, terms and citations.

Kept apart from :mod:`model_training.bundle` so that the command line can list the choices without importing torch.
"""

from __future__ import annotations

_NO_TRACE = ("A synthetic CE-T1 is predicted from pre-contrast contrast alone and cannot show blood-brain-barrier "
             "leakage that leaves no trace in the inputs.")

#: Per training data set: the card's known limits and, for real data, the data's terms and citations.
TRAINING_DATA: dict[str, dict[str, str]] = {
    "phantom": {
        "limits": "Trained only on simulated data (the VirtualContrast physics phantom: MNI152 anatomy, MR signal "
                  "equations, synthetic tumours and gadolinium). It has never seen a real scanner's images; expect it to "
                  "miss or invent features (above all enhancement) on real data, most of all for lesions unlike the "
                  "phantom's. " + _NO_TRACE,
        "terms": "",
    },
    "brats2018": {
        "limits": "Trained on 34 adult glioma cases (BraTS 2018 training data: skull-stripped, co-registered, 1 mm SRI24 "
                  "space, many scanners and protocols) on 2 CPU cores with a short schedule, and selected on 8. Expect it to "
                  "work only on inputs preprocessed like BraTS (skull-stripped, co-registered T1/T2/FLAIR); it is untested "
                  "on scans with skull, on other lesions (metastases, meningiomas, abscesses, post-operative cavities), on "
                  "children and on other field strengths or sequences than BraTS covers. With 8 validation cases its "
                  "figures carry wide uncertainty. It can miss enhancing tumour and render enhancement where there is "
                  "none (see the false-blob counts). " + _NO_TRACE,
        "terms": "Training and validation data: 42 cases of the BraTS 2018 training data (34 train, 8 val; listed above), "
                 "as published for research. The TCGA-GBM and TCGA-LGG cases derive from TCIA collections (TCIA data-usage "
                 "policy, CC BY). Cite: Menze et al., IEEE TMI 34(10) 2015; Bakas et al., Sci Data 4:170117 (2017); "
                 "Bakas et al., arXiv:1811.02629 (2018). A model trained on them is a research model.",
    },
}
