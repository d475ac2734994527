"""The shipped weights' recipe, as the commands it runs: per seed a phantom cohort and a fine-tuning of the named
starting weights on it, then the mean of the runs' weights with their card beside it.

    python -m scripts.tools.recipe --start START.pt --out models/model.pt [--dry_run]

From the bundle root. With the defaults it runs the 0.4.0 recipe: for each seed s in 1 2 3,

    python -m scripts.phantom phantoms_organs_s{s} --n 12 --seed {s} --shape 96 80 40 --spacing 3.75 3.75 7.8
        --per_map 4 --anatomy A/abdomen_template.nii.gz A/lumbar_b.nii.gz A/wholebody_a.nii.gz
        A/wholebody_b_lumbar.nii.gz A/wholebody_c_pelvis.nii.gz O --organs O --fov random --borders true
    python -m monai.bundle run training
        --config_file "['configs/train.yaml','configs/robust_train.yaml','configs/finetune.yaml']"
        --dataset_dir phantoms_organs_s{s} --num_workers 0 --seed {s} --epochs 60 --val_interval 5
        --learning_rate 0.0003 --pretrained_ckpt START.pt --output_dir runs/organs_s{s}

(``A`` = ``../shared/data/anatomy``, ``O`` = ``../shared/data/organs/upper_abdomen_ct.nii.gz``; the robust recipe's
real scan, TUM02, from ``../shared/data/TUM02``), then

    python -m scripts.training.average_weights OUT runs/organs_s1/models/model.pt ... runs/organs_s3/models/model.pt

The starting weights of 0.4.0 are those of 0.3.1 (``git show 38d2c80:models/model.pt > 0.3.1.pt``; their one-file
form is read with a warning). Every input is an option, so that the same code runs at toy size
(``tests/tools/test_recipe.py``); ``--dry_run`` prints the commands instead of running them. Each command must
succeed and leave its output (the cohort's ``datalist.json``, the run's ``models/model.pt`` with its card) before the
next runs.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from scripts.errors import InputError
from scripts.model_card import card_path

ANATOMY = Path("../shared/data/anatomy")
ORGANS = Path("../shared/data/organs/upper_abdomen_ct.nii.gz")
MAPS = [
    ANATOMY / name
    for name in (
        "abdomen_template.nii.gz",
        "lumbar_b.nii.gz",
        "wholebody_a.nii.gz",
        "wholebody_b_lumbar.nii.gz",
        "wholebody_c_pelvis.nii.gz",
    )
] + [ORGANS]
CONFIGS = "['configs/train.yaml','configs/robust_train.yaml','configs/finetune.yaml']"


def _words(values: Sequence) -> list[str]:
    return [str(v) for v in values]


def shell_line(command: Sequence[str]) -> str:
    """``command`` as a line to paste into a POSIX shell: a word with special characters in double quotes where
    that needs no escape (the config list, as the README writes it), else as ``shlex`` quotes it."""
    quoted = []
    for word in command:
        plain = shlex.quote(word) == word or any(c in word for c in '"$`\\!')
        quoted.append(shlex.quote(word) if plain else f'"{word}"')
    return " ".join(quoted)


def cohort_command(args: argparse.Namespace, seed: int) -> list[str]:
    """The phantom cohort of ``seed``."""
    command = ["python", "-m", "scripts.phantom", str(cohort_dir(args, seed)), "--n", str(args.n), "--seed", str(seed)]
    command += ["--shape", *_words(args.shape), "--spacing", *_words(args.spacing)]
    if args.anatomy:
        command += ["--per_map", str(args.per_map), "--anatomy", *_words(args.anatomy)]
    if args.organs is not None:
        command += ["--organs", str(args.organs)]
    return command + ["--fov", args.fov, "--borders", str(args.borders).lower()]


def training_command(args: argparse.Namespace, seed: int) -> list[str]:
    """The fine-tuning of ``args.start`` on the cohort of ``seed``."""
    command = ["python", "-m", "monai.bundle", "run", "training", "--config_file", CONFIGS]
    command += ["--dataset_dir", str(cohort_dir(args, seed)), "--num_workers", "0", "--seed", str(seed)]
    command += ["--epochs", str(args.epochs), "--val_interval", str(args.val_interval)]
    command += ["--learning_rate", str(args.learning_rate), "--pretrained_ckpt", str(args.start)]
    if args.real_cases is not None:
        command += ["--real_cases", args.real_cases]
    return command + ["--output_dir", str(run_dir(args, seed))]


def average_command(args: argparse.Namespace) -> list[str]:
    """The mean of the runs' best weights, written to ``args.out`` with their card."""
    runs = [str(run_dir(args, seed) / "models" / "model.pt") for seed in args.seeds]
    return ["python", "-m", "scripts.training.average_weights", str(args.out), *runs]


def cohort_dir(args: argparse.Namespace, seed: int) -> Path:
    return args.workdir / f"phantoms_organs_s{seed}"


def run_dir(args: argparse.Namespace, seed: int) -> Path:
    return args.workdir / "runs" / f"organs_s{seed}"


def steps(args: argparse.Namespace) -> list[tuple[list[str], list[Path]]]:
    """Every command of the recipe in order, each with the files it must leave."""
    listed: list[tuple[list[str], list[Path]]] = []
    for seed in args.seeds:
        listed.append((cohort_command(args, seed), [cohort_dir(args, seed) / "datalist.json"]))
        model = run_dir(args, seed) / "models" / "model.pt"
        listed.append((training_command(args, seed), [model, card_path(model)]))
    listed.append((average_command(args), [args.out, card_path(args.out)]))
    return listed


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.tools.recipe",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--start", type=Path, required=True, help="the weights every run fine-tunes (named, always)")
    parser.add_argument("--out", type=Path, required=True, help="the averaged weights; their card goes beside them")
    parser.add_argument("--workdir", type=Path, default=Path("."), help="where the cohorts and runs/ go")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="one cohort and one run per seed")
    parser.add_argument("--n", type=int, default=12, help="procedural phantoms per cohort")
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 80, 40], help="phantom grid (voxels)")
    parser.add_argument("--spacing", type=float, nargs=3, default=[3.75, 3.75, 7.8], help="phantom voxel size (mm)")
    parser.add_argument("--anatomy", type=Path, nargs="*", default=MAPS, help="label maps to build phantoms around")
    parser.add_argument("--per_map", type=int, default=4, help="phantoms per --anatomy map")
    parser.add_argument("--organs", type=Path, default=ORGANS, help="organ map to paste; 'none' for none")
    parser.add_argument("--fov", default="random", help="phantoms' field of view (scripts.phantom --fov)")
    parser.add_argument("--borders", type=lambda t: t.lower() == "true", default=True, help="fat planes, fascia")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--val_interval", type=int, default=5)
    parser.add_argument("--learning_rate", type=float, default=0.0003)
    parser.add_argument(
        "--real_cases", default=None, help="training's --real_cases (default: the robust recipe's, TUM02; '[]': none)"
    )
    parser.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    if args.organs is not None and str(args.organs).lower() == "none":
        args.organs = None
    return args


def run(command: list[str], outputs: list[Path]) -> None:
    """Run ``command`` (``python`` as this interpreter) and check that it left ``outputs``."""
    print(shell_line(command), flush=True)
    subprocess.run([sys.executable, *command[1:]], check=True)
    missing = [str(path) for path in outputs if not path.is_file()]
    if missing:
        raise InputError(f"{shell_line(command)} left no {', '.join(missing)}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    listed = steps(args)
    if args.dry_run:
        print("\n".join(shell_line(command) for command, _ in listed))
        return
    if not args.start.is_file():
        raise SystemExit(f"python -m scripts.tools.recipe: error: --start: no such file: {args.start}")
    for command, outputs in listed:
        run(command, outputs)
    print(f"{args.out}: the mean of {len(args.seeds)} fine-tunings of {args.start}, its card in {card_path(args.out)}")


if __name__ == "__main__":
    main()
