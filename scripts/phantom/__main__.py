"""Write a cohort of synthetic lumbar Dixon MRI phantoms with labels and a MONAI datalist.

python -m scripts.phantom OUT --n 6 [--seed 0] [--shape 96 80 40] [--spacing 3.75 3.75 7.8]
    [--anatomy MAP [MAP ...] [--per_map 3]] [--confusers false] [--organs MAP] [--fov random] [--borders true]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from scripts.labels import PUBLISHED_SPACING
from scripts.phantom.cohort import DEFAULT_SHAPE, _checked_grid, make_cohort, validation_count
from scripts.phantom.fields_of_view import CHOICES, FULL


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.phantom", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder (created); receives the cases and datalist.json")
    parser.add_argument(
        "--n",
        type=int,
        default=6,
        help="procedural cases; 1 (and no --anatomy) makes a testing-only sample (default 6)",
    )
    parser.add_argument("--seed", type=int, default=0, help="cohort seed; case i uses seed*1000+i (default 0)")
    parser.add_argument("--shape", type=int, nargs=3, default=DEFAULT_SHAPE, metavar=("X", "Y", "Z"))
    parser.add_argument("--spacing", type=float, nargs=3, default=PUBLISHED_SPACING, metavar=("X", "Y", "Z"))
    parser.add_argument(
        "--anatomy", type=Path, nargs="+", default=[], metavar="MAP",
        help="real muscle label maps (MuscleMap codes) to build more cases around, --per_map of each",
    )  # fmt: skip
    parser.add_argument("--per_map", type=int, default=3, help="cases per --anatomy map (default 3)")
    parser.add_argument("--confusers", type=_boolean, default=True, help="bowel, kidneys, vessels, abdominal wall")
    parser.add_argument(
        "--organs", type=Path, default=None, metavar="MAP",
        help="a TotalSegmentator organ map (liver, spleen, kidneys ...) to paste at the levels it covers",
    )  # fmt: skip
    parser.add_argument(
        "--fov", choices=CHOICES, default=FULL,
        help="field of view: the whole grid (full), one by name, or one at random per case (default full)",
    )  # fmt: skip
    parser.add_argument(
        "--borders", type=_boolean, default=False, help="random fat planes and fascia between adjacent muscles"
    )
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="parallel processes")
    args = parser.parse_args(argv)
    try:
        if args.n < 0 or args.per_map < 1:
            raise ValueError(f"--n must be 0 or more and --per_map 1 or more, got {args.n} and {args.per_map}")
        if not args.anatomy:
            validation_count(args.n)
        _checked_grid(args.shape, args.spacing)
    except ValueError as error:
        parser.error(str(error))
    for path in args.anatomy:
        if not path.is_file():
            parser.error(f"--anatomy: no such file: {path}")
    if args.organs is not None and not args.organs.is_file():
        parser.error(f"--organs: no such file: {args.organs}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    path = make_cohort(
        args.out, args.n, seed=args.seed, shape=args.shape, spacing=args.spacing, workers=args.workers,
        anatomy=args.anatomy, per_map=args.per_map, confusers=args.confusers, organs=args.organs, fov=args.fov,
        borders=args.borders,
    )  # fmt: skip
    print(f"wrote {args.n + len(args.anatomy) * args.per_map * bool(args.anatomy)} phantoms and {path}")


if __name__ == "__main__":
    main()
