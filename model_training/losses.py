"""The paper's training loss (section III-C) and two-stage schedule (section III-D).

``L = λ1·MAE + λ2·(1 − SSIM) + λ3·L_local`` on normalized images in [0, 1]:

- MAE: mean |Ŷ − Y| over every voxel of the slab.
- SSIM: MONAI's ``SSIMLoss(spatial_dims=2, data_range=1)`` (Gaussian window 11, σ 1.5) applied to
  each depth slice as a 2D image and averaged over slices and batch, i.e. the paper's
  ``1/n Σ_i (1 − SSIM(Ŷ_i, Y_i))``. The authors' code used TF's multi-scale SSIM per slice; we
  use single-scale SSIM, which also works on small in-plane crops.
- Local loss: ``mean(|Ŷ − Y| · M)`` with ``M = (Y − X_T1 > δ)``. The mean runs over **all voxels
  of the slab, not over |M|**: that is what the authors' code does (Keras ``K.mean`` of the masked
  map), and the phase-2 weight λ3 = 10 was tuned for that normalisation, so we follow the code.
  Optionally, as in the authors' code, differences above ``delta_max`` (likely misregistration)
  are left out of M. Where expert tumour labels exist, M can instead be the labelled tumour region
  (``loss.local_labels`` in the config; the slab sampler supplies it as ``region``): on real scans
  the normalized difference Y − X_T1 exceeds δ in vessels, dura and every slight intensity
  mismatch, while the labels say where the tumour is.
- Histogram term (ours, off unless ``loss.histogram`` > 0; not in the paper): the 1-Wasserstein
  distance between the brain voxel values of Ŷ and Y in each slab (mean |sorted Ŷ − sorted Y|).
  L1 and SSIM regress the unpredictable brightest voxels (vessels, strong enhancement) towards the
  mean, so the output's top percentiles come out compressed; every automatic window and VC-Eval-1
  scale an image by its own 0.5/99.5 % percentiles, which then shows the whole brain too bright.
  The term asks for the target's intensity distribution without saying where each value goes.
- Detection term (ours, for networks with a detection channel; weight ``loss.detection``): binary
  cross-entropy plus soft Dice between the channel's probability and the slab's enhancement target
  (:mod:`model_training.sampling`), both over the brain. Enhancing voxels are rare (about 0.5 % of a
  slab): BCE alone is content to say "never", Dice weighs the few positives as much as the many negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

#: Paper's threshold for the enhancement mask M.
DEFAULT_DELTA = 0.1


@dataclass(frozen=True)
class Stage:
    """One stage of the schedule: number of epochs, loss weights (λ1, λ2, λ3) and learning rate."""

    epochs: int
    weights: tuple[float, float, float]
    lr: float

    @classmethod
    def from_dict(cls, data: dict) -> "Stage":
        """Build from ``{"epochs": .., "weights": [λ1, λ2, λ3], "lr": ..}``."""
        weights = tuple(float(w) for w in data["weights"])
        if len(weights) != 3:
            raise ValueError("a stage needs three loss weights [λ1, λ2, λ3]")
        if int(data["epochs"]) < 1:
            raise ValueError("a stage needs at least one epoch")
        return cls(int(data["epochs"]), weights, float(data["lr"]))


#: The paper's schedule: 40 epochs at (1, 1, 1) and lr 1e-4, then 10 at (0.1, 0.1, 10) and lr 1e-5.
PAPER_SCHEDULE = (Stage(40, (1.0, 1.0, 1.0), 1e-4), Stage(10, (0.1, 0.1, 10.0), 1e-5))


def stage_at(stages: tuple[Stage, ...] | list[Stage], epoch: int) -> tuple[int, Stage]:
    """Index and stage that 0-based ``epoch`` belongs to."""
    start = 0
    for index, stage in enumerate(stages):
        if epoch < start + stage.epochs:
            return index, stage
        start += stage.epochs
    raise ValueError(f"epoch {epoch} is past the end of the schedule ({start} epochs)")


def total_epochs(stages: tuple[Stage, ...] | list[Stage]) -> int:
    """Number of epochs in the whole schedule."""
    return sum(stage.epochs for stage in stages)


def enhancement_mask(target: torch.Tensor, t1: torch.Tensor, delta: float = DEFAULT_DELTA, delta_max: float | None = None) -> torch.Tensor:
    """Binary mask M = (Y − X_T1 > δ) (and ≤ ``delta_max`` when given), as float."""
    difference = target - t1
    mask = difference > delta
    if delta_max is not None:
        mask &= difference <= delta_max
    return mask.to(target.dtype)


def histogram_distance(prediction: torch.Tensor, target: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
    """Mean over the batch's slabs with brain of the 1-Wasserstein distance between their brain values (B, 1, D, H, W)."""
    distances = []
    for p, t, m in zip(prediction, target, brain.bool()):
        if m.any():
            distances.append((torch.sort(p[m]).values - torch.sort(t[m]).values).abs().mean())
    return torch.stack(distances).mean() if distances else prediction.sum() * 0.0


def detection_loss(logits: torch.Tensor, target: torch.Tensor, brain: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """BCE + soft Dice of enhancement logits (B, 1, D, H, W) against a 0/1 target, over the brain voxels of the batch;
    ``weight`` (same shape, optional) weighs each voxel's BCE term."""
    brain = brain.float()
    voxels = brain.sum().clamp_min(1.0)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none") * brain
    bce = (bce if weight is None else bce * weight).sum() / voxels
    probability = torch.sigmoid(logits) * brain
    overlap = (probability * target).sum()
    # The +1 smooths a batch with no positives: Dice then asks only for low probabilities.
    dice = 1.0 - (2.0 * overlap + 1.0) / (probability.sum() + (target * brain).sum() + 1.0)
    return bce + dice


def parts_loss(logits: torch.Tensor, parts: torch.Tensor, brain: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy + mean soft Dice of the tumour's parts (nnU-Net's loss) for logits (B, K, D, H, W) against labels
    (B, 1, D, H, W) in 0..K-1, over the brain voxels of the batch; ``weight`` (B, 1, D, H, W, optional) weighs each
    voxel's cross-entropy term. The Dice is averaged over the K - 1 foreground parts, so each part is learnt as a rare class."""
    brain = brain.float()
    voxels = brain.sum().clamp_min(1.0)
    labels = parts[:, 0].long()
    ce = nn.functional.cross_entropy(logits, labels, reduction="none")[:, None] * brain
    ce = (ce if weight is None else ce * weight).sum() / voxels
    probability = torch.softmax(logits, dim=1) * brain
    onehot = nn.functional.one_hot(labels, logits.shape[1]).movedim(-1, 1).float() * brain
    dims = (0, 2, 3, 4)
    overlap, total = (probability * onehot).sum(dims), probability.sum(dims) + onehot.sum(dims)
    dice = 1.0 - (2.0 * overlap[1:] + 1.0) / (total[1:] + 1.0)  # +1 as in detection_loss: a part absent from the batch asks for low probabilities
    return ce + dice.mean()


class VirtualContrastLoss(nn.Module):
    """λ1·MAE + λ2·SSIM loss (2D per slice) + λ3·local loss (+ λh·histogram + λd·detection); ``weights`` is set per stage."""

    def __init__(self, weights: tuple[float, float, float] = (1.0, 1.0, 1.0), delta: float = DEFAULT_DELTA, delta_max: float | None = None,
                 histogram_weight: float = 0.0, detection_weight: float = 0.0) -> None:
        super().__init__()
        from monai.losses import SSIMLoss

        self.weights = tuple(weights)
        self.delta = delta
        self.delta_max = delta_max
        self.histogram_weight = histogram_weight
        self.detection_weight = detection_weight
        self.ssim = SSIMLoss(spatial_dims=2, data_range=1.0)

    def terms(self, prediction: torch.Tensor, target: torch.Tensor, t1: torch.Tensor,
              region: torch.Tensor | None = None, brain: torch.Tensor | None = None,
              enhancing: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Unweighted terms for tensors (B, 1, D, H, W): ``mae``, ``ssim``, ``local`` (over ``region`` when given, else M),
        ``histogram`` over ``brain`` when the histogram weight is on, and ``detection`` when ``prediction`` has the
        detection channel (B, 2, D, H, W) and its weight is on (then ``enhancing`` and ``brain`` are needed)."""
        detection = None
        if prediction.shape[1] > 1 and self.detection_weight > 0:
            if enhancing is None or brain is None:
                raise ValueError("the detection term needs the slabs' enhancement target and brain mask")
            detection = detection_loss(prediction[:, 1:2].float(), enhancing.float(), brain)
        prediction = prediction[:, :1].float()
        target = target.float()
        error = (prediction - target).abs()
        mask = region.float() if region is not None else enhancement_mask(target, t1.float(), self.delta, self.delta_max)
        # SSIM on each depth slice as its own 2D image: (B, 1, D, H, W) -> (B·D, 1, H, W).
        slices = lambda x: x.transpose(1, 2).reshape(-1, 1, *x.shape[-2:])  # noqa: E731
        terms = {
            "mae": error.mean(),
            "ssim": self.ssim(slices(prediction), slices(target)),
            "local": (error * mask).mean(),
        }
        if self.histogram_weight > 0:
            if brain is None:
                raise ValueError("the histogram term needs the brain mask of the slabs")
            terms["histogram"] = histogram_distance(prediction, target, brain)
        if detection is not None:
            terms["detection"] = detection
        return terms

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, t1: torch.Tensor,
                region: torch.Tensor | None = None, brain: torch.Tensor | None = None,
                enhancing: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted total and the unweighted terms."""
        terms = self.terms(prediction, target, t1, region, brain, enhancing)
        total = self.weights[0] * terms["mae"] + self.weights[1] * terms["ssim"] + self.weights[2] * terms["local"]
        if "histogram" in terms:
            total = total + self.histogram_weight * terms["histogram"]
        if "detection" in terms:
            total = total + self.detection_weight * terms["detection"]
        return total, terms
