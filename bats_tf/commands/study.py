"""bats-study: the paper's ablation in one command: search (or sample), train and validate
every variant.

    bats-study --flagfile=study_cpu

Each variant and seed is a run of ``scripts/search.py`` and ``scripts/train.py`` with the
preset's flagfiles (paths, or names of installed presets); results land in
``--output_dir/<variant>/<seed>/result.json`` and the summary (``summary.md``,
``summary.json``, ``summary.png``) in ``--output_dir``. Rerunning the same command skips
finished runs and resumes a cut one. The flagfiles are checked (every setting, with each
variant's own) before anything is written; then the study holds ``--output_dir``'s lock to
its end.
"""

import os
import sys

from absl import flags

from bats_tf import run_lock
from bats_tf.commands import common
from bats_tf.search_config import SearchConfig
from bats_tf.study import TEACHER, VARIANTS, Study, StudyConfig, StudyError
from bats_tf.train_config import TrainConfig

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


def _check_flagfiles() -> None:
    """The flagfiles hold valid settings of a search and a training, with every variant's
    own settings added (as the study runs them), and name existing data folders."""
    f = FLAGS
    checks = []
    for name in f.variants:
        extra = tuple(v.replace(TEACHER, "teacher.keras") for v in VARIANTS[name].search or ())
        if VARIANTS[name].search is not None:
            checks.append(("search_flagfile", SearchConfig, extra))
        checks.append(("train_flagfile", TrainConfig, VARIANTS[name].train))
    if "kd" in f.variants:
        checks.append(("teacher_flagfile", TrainConfig, ()))
    for name, cls, extra in dict.fromkeys(checks):
        _check_flagfile(name, cls, extra)


def _check_flagfile(name: str, cls, extra) -> None:
    path = common.preset(getattr(FLAGS, name))
    values = flags.FlagValues()
    flags.DEFINE_string("output_dir", None, "", flag_values=values)
    flags.DEFINE_bool("verbose", False, "", flag_values=values)
    common.define_bad_images_flag(values)
    common.define_flags(cls, values)
    teacher = {"teacher": None} if any(e.startswith("--teacher=") for e in extra) else {}
    try:
        values([sys.argv[0], f"--flagfile={path}", *extra])
        config = common.config_from_flags(cls, values, **teacher)
    except flags.Error as e:
        raise common.UsageError(f"--{name}={path}: {str(e).removeprefix('flag ')}") from None
    except common.ConfigError as e:
        shown = e.param if e.param not in values else f"{e.param}={values[e.param].value}"
        added = f" (with the variant's {' '.join(extra)})" if extra else ""
        raise common.UsageError(f"--{name}={path}: --{shown}: {e.message}{added}") from None
    if config.dataset == "folder":
        common.check(
            os.path.isdir(config.data_dir),
            f"--{name}={path}: --data_dir={config.data_dir}: no such folder",
        )


def main(argv):
    common.check_no_arguments(argv)
    study = Study(config_from_flags())
    try:
        study.check_output_dir(record=False)  # nothing written yet
    except common.ConfigError as e:
        raise common.UsageError(f"--output_dir={FLAGS.output_dir}: {e.message}") from None
    _check_flagfiles()
    run_lock.RunLock(FLAGS.output_dir, "bats-study").acquire()  # held until the process ends
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
