"""bats-study: the paper's ablation in one command: search (or sample), train and validate
every variant.

    bats-study --flagfile=study_cpu

Each variant and seed is a run of ``scripts/search.py`` and ``scripts/train.py`` with the
preset's flagfiles (paths, or names of installed presets); results land in
``--output_dir/<variant>/<seed>/result.json`` and the summary (``summary.md``,
``summary.json``, ``summary.png``) in ``--output_dir``. Rerunning the same command skips
finished runs and resumes a cut one.
"""

import os

from absl import flags

from bats_tf.commands import common
from bats_tf.study import VARIANTS, Study, StudyConfig, StudyError

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Results: result.json per run, diagrams, the summary.")
flags.DEFINE_string("work_dir", None, "Checkpoints, models and logs (default: <output_dir>/work).")
flags.DEFINE_string("search_flagfile", None, "Flagfile of every search (data, budget, sizes).")
flags.DEFINE_string("train_flagfile", None, "Flagfile of every training: the one fixed recipe.")
flags.DEFINE_string("teacher_flagfile", None, "Flagfile training the kd variant's real teacher.")
flags.DEFINE_list("variants", list(VARIANTS), f"Variants to run, from: {', '.join(VARIANTS)}.")
flags.DEFINE_list("seeds", ["0", "1"], "Seeds of each searched variant.")
flags.DEFINE_list("random_seeds", ["0", "1", "2", "3"], "Seeds of the random genotypes.")


def _seeds(name: str) -> tuple[int, ...]:
    values = getattr(FLAGS, name)
    common.check(
        values and all(v.isdigit() for v in values),
        f"--{name}={','.join(values)}: expected non-negative integers",
    )
    seeds = tuple(int(v) for v in values)
    common.check(len(set(seeds)) == len(seeds), f"--{name}={','.join(values)}: repeated seed")
    return seeds


def config_from_flags() -> StudyConfig:
    f, check = FLAGS, common.check
    check(f.output_dir, "--output_dir is required")
    for name in ("search_flagfile", "train_flagfile", "teacher_flagfile"):
        path = getattr(f, name) and common.preset(getattr(f, name))
        required = name != "teacher_flagfile" or "kd" in f.variants
        check(path or not required, f"--{name} is required")
        check(not path or os.path.isfile(path), f"--{name}={path}: no such file")
    unknown = [v for v in f.variants if v not in VARIANTS]
    check(not unknown, f"--variants: unknown {', '.join(unknown)} (from {', '.join(VARIANTS)})")
    check(len(set(f.variants)) == len(f.variants), "--variants: a variant is repeated")
    common.check_writable_dir(f.output_dir)
    work_dir = f.work_dir or os.path.join(f.output_dir, "work")
    common.check_writable_dir(work_dir, "--work_dir")
    return StudyConfig(
        output_dir=f.output_dir,
        work_dir=work_dir,
        search_flagfile=common.preset(f.search_flagfile),
        train_flagfile=common.preset(f.train_flagfile),
        teacher_flagfile=common.preset(f.teacher_flagfile) if "kd" in f.variants else None,
        variants=tuple(f.variants),
        seeds=_seeds("seeds"),
        random_seeds=_seeds("random_seeds"),
    )


def main(argv):
    common.check_no_arguments(argv)
    study = Study(config_from_flags())
    try:
        summary = study.run()
    except common.ConfigError:
        raise
    except ValueError as e:
        raise common.UsageError(str(e)) from None
    except StudyError as e:
        raise common.RunError(str(e)) from None
    print(f"summary: {os.path.join(FLAGS.output_dir, 'summary.md')} ({summary['runs']} runs)")


def run() -> None:
    common.start(main)


if __name__ == "__main__":
    run()
