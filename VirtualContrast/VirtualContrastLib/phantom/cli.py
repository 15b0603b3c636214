"""``virtual-contrast phantom``: write physics-phantom cases (BraTS-style NIfTI) and optional previews."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError


def case_id(seed: int) -> str:
    """The identifier of the phantom case generated from ``seed``."""
    return f"VCP-{seed}"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``phantom`` sub-command."""
    parser = subparsers.add_parser(
        "phantom",
        help="generate synthetic brain-tumour MRI cases with known contrast enhancement",
        description="Generate physics-phantom cases: T1, T2, FLAIR, ADC, the true CE-T1, BraTS labels and a "
                    "brain mask per case (SYNTHETIC images, research use only).",
    )
    parser.add_argument("--cases", type=int, default=1, help="number of cases (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first case; case i uses seed+i")
    parser.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per case)")
    parser.add_argument("--spacing", type=float, default=1.0, help="isotropic T1 voxel size in mm (default 1)")
    parser.add_argument("--thick-slices", action="store_true",
                        help="acquire T2, FLAIR and ADC as tilted 4-5 mm axial slices on their own grids")
    parser.add_argument("--lesions", type=int, default=None,
                        help="tumours per case (default: 0-3 at random; some tumours never enhance)")
    parser.add_argument("--preview", action="store_true", help="also write a PNG montage per case")
    parser.add_argument("--workers", type=int, default=1, help="cases generated in parallel processes (default 1)")
    parser.set_defaults(func=run)


def _generate_one(seed: int, out: Path, spacing: float, thick_slices: bool, preview: bool,
                  lesions: int | None) -> dict[str, Path]:
    from .generate import generate_case, write_case
    from .preview import write_preview

    name = case_id(seed)
    case = generate_case(seed, spacing, thick_slices=thick_slices, lesion_count=lesions)
    paths = write_case(case, out, name)
    if preview:
        paths["preview"] = write_preview(case, Path(out) / name / f"{name}-preview.png", title=name)
    return paths


def generate(cases: int, seed: int, out: Path, spacing: float = 1.0, thick_slices: bool = False,
             preview: bool = False, progress: bool = True, workers: int = 1,
             lesions: int | None = None) -> list[dict[str, Path]]:
    """Generate and write ``cases`` cases (in ``workers`` processes); returns the written paths of each case."""
    from functools import partial

    from tqdm import tqdm

    from ..parallel import ordered_map

    if cases < 1:
        raise InputError("--cases must be at least 1")
    if workers < 1:
        raise InputError("--workers must be at least 1")
    if not 0.5 <= spacing <= 6.0:
        raise InputError("--spacing must be between 0.5 and 6 mm")
    if lesions is not None and not 0 <= lesions <= 3:
        raise InputError("--lesions must be between 0 and 3")
    one = partial(_generate_one, out=out, spacing=spacing, thick_slices=thick_slices, preview=preview, lesions=lesions)
    results = ordered_map(one, range(seed, seed + cases), workers)
    return list(tqdm(results, total=cases, desc="phantom cases", unit="case", disable=not progress))


def run(args: argparse.Namespace) -> int:
    """Run the ``phantom`` sub-command."""
    written = generate(args.cases, args.seed, args.out, args.spacing, args.thick_slices, args.preview, workers=args.workers,
                       lesions=args.lesions)
    print(f"wrote {len(written)} synthetic phantom case(s) to {args.out}")
    return 0
