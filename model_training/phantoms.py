"""Phantom training data: train/val/test folders of generated cases with recorded seed ranges.

Splits take consecutive, disjoint seed ranges starting at ``first_seed`` (train, then val, then
test), so a split is reproducible from ``phantoms.json`` alone. The generator draws sequence
parameters, intensity scaling, bias field, noise and anatomy per seed, so the training cases are
domain-randomized.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPLITS = ("train", "val", "test")


def make_phantoms(out_dir: str | Path, counts: dict[str, int], first_seed: int = 1000, spacing: float = 1.0, **options: Any) -> dict[str, Any]:
    """Write ``counts[split]`` phantom cases per split under ``out_dir/<split>/``; returns the record."""
    from VirtualContrastLib.phantom import generate_case, write_case

    out_dir = Path(out_dir)
    record: dict[str, Any] = {"first_seed": first_seed, "spacing_mm": spacing, "options": options, "splits": {}}
    seed = first_seed
    for split in SPLITS:
        count = int(counts.get(split, 0))
        record["splits"][split] = {"seeds": [seed, seed + count - 1] if count else [], "cases": []}
        for offset in range(count):
            case_id = f"phantom-{seed + offset:05d}"
            write_case(generate_case(seed + offset, spacing=spacing, **options), out_dir / split, case_id)
            record["splits"][split]["cases"].append(case_id)
        seed += count
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "phantoms.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record
