"""The paper's ablation in one command: search (or sample), train and validate every variant.

python scripts/study.py --flagfile=configs/study_cpu.cfg

Each variant and seed is a run of ``scripts/search.py`` and ``scripts/train.py`` with the
preset's flagfiles; results land in ``--output_dir/<variant>/<seed>/result.json`` and the
summary (``summary.md``, ``summary.json``, ``summary.png``) in ``--output_dir``. Rerunning the
same command skips finished runs and resumes a cut one.
"""

import bats_tf  # noqa: F401

# isort: split
import os

from absl import app, flags

from bats_tf import cli
from bats_tf.study import VARIANTS, Study, StudyConfig, StudyError

FLAGS = flags.FLAGS
D = flags
D.DEFINE_string("output_dir", None, "Results: result.json per run, diagrams, the summary.")
D.DEFINE_string("work_dir", None, "Checkpoints, models and logs (default: <output_dir>/work).")
D.DEFINE_string("search_flagfile", None, "Flagfile of every search (data, budget, sizes).")
D.DEFINE_string("train_flagfile", None, "Flagfile of every training: the one fixed recipe.")
D.DEFINE_string("teacher_flagfile", None, "Flagfile training the kd variant's real teacher.")
D.DEFINE_list("variants", list(VARIANTS), f"Variants to run, from: {', '.join(VARIANTS)}.")
D.DEFINE_list("seeds", ["0", "1"], "Seeds of each searched variant.")
D.DEFINE_list("random_seeds", ["0", "1", "2", "3"], "Seeds of the random genotypes.")


def _seeds(name: str) -> tuple[int, ...]:
    values = getattr(FLAGS, name)
    cli.check(
        values and all(v.isdigit() for v in values),
        f"--{name}={','.join(values)}: expected non-negative integers",
    )
    seeds = tuple(int(v) for v in values)
    cli.check(len(set(seeds)) == len(seeds), f"--{name}={','.join(values)}: repeated seed")
    return seeds


def config_from_flags() -> StudyConfig:
    f, check = FLAGS, cli.check
    check(f.output_dir, "--output_dir is required")
    for name in ("search_flagfile", "train_flagfile", "teacher_flagfile"):
        path = getattr(f, name)
        required = name != "teacher_flagfile" or "kd" in f.variants
        check(path or not required, f"--{name} is required")
        check(not path or os.path.isfile(path), f"--{name}={path}: no such file")
    unknown = [v for v in f.variants if v not in VARIANTS]
    check(not unknown, f"--variants: unknown {', '.join(unknown)} (from {', '.join(VARIANTS)})")
    check(len(set(f.variants)) == len(f.variants), "--variants: a variant is repeated")
    cli.check_writable_dir(f.output_dir)
    work_dir = f.work_dir or os.path.join(f.output_dir, "work")
    cli.check_writable_dir(work_dir, "--work_dir")
    return StudyConfig(
        output_dir=f.output_dir,
        work_dir=work_dir,
        search_flagfile=f.search_flagfile,
        train_flagfile=f.train_flagfile,
        teacher_flagfile=f.teacher_flagfile if "kd" in f.variants else None,
        variants=tuple(f.variants),
        seeds=_seeds("seeds"),
        random_seeds=_seeds("random_seeds"),
    )


def main(argv):
    cli.check_no_arguments(argv)
    study = Study(config_from_flags())
    try:
        summary = study.run()
    except ValueError as e:
        raise cli.UsageError(str(e)) from None
    except StudyError as e:
        raise cli.RunError(str(e)) from None
    print(f"summary: {os.path.join(FLAGS.output_dir, 'summary.md')} ({summary['runs']} runs)")


if __name__ == "__main__":
    app.run(cli.run(main), flags_parser=cli.parse_flags)
