"""Runs that survive: bad input is refused cleanly, and killed runs resume to the same result.

Every case runs a script in a subprocess, as a user would. Bad input must give exit code 2,
one ``error:`` line naming the flag or file, no traceback, and leave every file as it was.
"""

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import conftest
import numpy as np
import pytest
from conftest import RUN_TIMEOUT, as_flags, make_folder_dataset

from bats_tf.run_lock import LOCK_FILE, RunLock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The conftest tiny search with one node and the default warmup (1 of its 2 epochs); its
# batch of 4 makes 3 steps per epoch on the 12 images of each search part of 48.
KILLS = 4  # SIGKILLs per run in the kill-anywhere tests (each costs a process start-up)
ROBUST_SEARCH = {**conftest.TINY_SEARCH, "nodes": 1, "warmup_epochs": None}
TINY_SEARCH = as_flags(ROBUST_SEARCH)
TINY_TRAIN = [
    "--dataset=folder",
    "--init_channels=8",
    "--layers=1",
    "--groups=1",
    "--epochs=2",
    "--batch_size=12",
    "--stages=1,2",
    "--deterministic",
]


def _cmd(script, *args):
    return [sys.executable, os.path.join(ROOT, "scripts", f"{script}.py"), *args]


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _snapshot(*roots):
    """Every file and folder under ``roots`` with its size and modification time."""
    found = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(folder, name)
                st = os.lstat(path)
                found[path] = (st.st_size, st.st_mtime_ns)
    return found


@pytest.fixture(scope="session")
def inputs(tmp_path_factory, tiny_folder):
    """Bad (and a few good) files and folders, shared by the bad-input cases (made once per
    test worker: the cases spread over the workers, see conftest.py)."""
    root = str(tmp_path_factory.mktemp("inputs"))
    p = lambda *parts: os.path.join(root, *parts)  # noqa: E731
    os.makedirs(p("no_split"))
    os.makedirs(p("no_classes", "train"))
    os.makedirs(p("no_images", "train", "cat"))
    _write(p("no_images", "train", "cat", "notes.txt"), "no pictures here")
    make_folder_dataset(p("bad_image"), classes=2, per_class=4)
    _write(p("bad_image", "train", "class0", "000.jpg"), "a text file named like a JPEG")
    _write(p("text.txt"), "not a model, not JSON")
    _write(p("model.keras"), "not a model either")
    _write(p("genotypes", "not_json.json"), "{'normal': oops")
    good = {
        "format": "bats-tf/genotype",
        "schema_version": 1,
        "search_space": "bats",
        "normal": [["group_conv_3x3", 0], ["skip_connect", 1]],
        "normal_concat": [2],
        "reduce": [["max_pool_3x3", 0], ["group_conv_5x5", 1]],
        "reduce_concat": [2],
    }
    variants = {
        "good": {},
        "version": {"schema_version": 99},
        "unknown_op": {"normal": [["conv_7x7", 0], ["skip_connect", 1]]},
        "bad_input": {"reduce": [["max_pool_3x3", 0], ["group_conv_5x5", 5]]},
    }
    for name, change in variants.items():
        _write(p("genotypes", f"{name}.json"), json.dumps({**good, **change}))
    _write(p("other_run", "search_config.json"), json.dumps({"epochs": 99}))
    _write(p("other_run", "genotype.json"), json.dumps(good))
    _write(p("busy", "thesis.tex"), "someone else's folder")
    # Data: a class folder of broken files only; one class; a test split with other classes.
    make_folder_dataset(p("broken_class"), classes=2, per_class=4)
    for name in os.listdir(p("broken_class", "train", "class1")):
        _write(p("broken_class", "train", "class1", name), "")
    make_folder_dataset(p("one_class"), classes=1, per_class=48)
    make_folder_dataset(p("other_classes"), classes=3, per_class=8, splits=("train", "test"))
    os.rename(p("other_classes", "test", "class2"), p("other_classes", "test", "classX"))
    # Models of 16px images: 5 classes; 3 classes recorded under other names.
    _small_model(p("teacher5.keras"), 5)
    _small_model(p("named", "model.keras"), 3, ["cat", "dog", "eel"])
    _small_model(p("class9", "model.keras"), 3, ["class0", "class1", "class9"])
    # Search runs of the tiny search on {data}, recorded with other data.
    config = json.dumps(dataclasses.asdict(_tiny_search_config(tiny_folder)))
    names = ["class0", "class1", "class2"]
    for run, classes, count in (
        ("ran_on_other_classes", ["a", "b", "c"], 48),
        ("ran_on_47", names, 47),
    ):
        _write(p(run, "search_config.json"), config)
        _write(p(run, "classes.json"), json.dumps({"class_names": classes, "num_examples": count}))
    # Study flagfiles: tiny valid ones, and broken ones.
    data = f"--dataset=folder\n--data_dir={tiny_folder}\n"
    _write(p("study", "search.cfg"), data + "--epochs=2\n--batch_size=4\n--init_channels=4\n")
    _write(p("study", "train.cfg"), data + "--epochs=1\n--batch_size=4\n--init_channels=4\n")
    _write(p("study", "nan_lr.cfg"), data + "--w_lr=nan\n")
    _write(p("study", "typo.cfg"), data + "--epoch=2\n")
    _write(p("study", "no_data.cfg"), f"--dataset=folder\n--data_dir={root}/nowhere\n")
    # A folder whose lock this process holds: another run is in it.
    lock = RunLock(p("held"), "test-holder").acquire()
    yield {"root": root, "data": tiny_folder, "pid": os.getpid()}
    lock.release()


def _small_model(path, classes, names=None):
    """A tiny Keras model of 16px images to ``classes`` logits (``names`` in classes.json)."""
    import bats_tf  # noqa: F401

    # isort: split
    import tensorflow as tf

    model = tf.keras.Sequential(
        [
            tf.keras.Input((16, 16, 3)),
            tf.keras.layers.GlobalAveragePooling2D(),
            tf.keras.layers.Dense(classes),
        ]
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model.save(path)
    if names:
        _write(
            os.path.join(os.path.dirname(path), "classes.json"), json.dumps({"class_names": names})
        )


def _tiny_search_config(data):
    """The SearchConfig the command makes of TINY_SEARCH with --data_dir=data."""
    from bats_tf.search_config import SearchConfig

    return SearchConfig(**ROBUST_SEARCH, data_dir=os.path.abspath(data))


# (id, script, arguments, text the error line must contain, needs TensorFlow).
# {out} is a fresh output path, {root} the inputs folder, {data} a good image folder.
SEARCH = [*TINY_SEARCH, "--data_dir={data}", "--output_dir={out}"]
TRAIN = [*TINY_TRAIN, "--data_dir={data}", "--output_dir={out}"]
EVAL = ["--dataset=folder", "--data_dir={data}", "--split=test", "--model={root}/model.keras"]
EXPORT = ["--dataset=folder", "--data_dir={data}", "--output_dir={out}", "--model={root}/text.txt"]
STUDY = [
    "--output_dir={out}",
    "--search_flagfile={root}/study/search.cfg",
    "--train_flagfile={root}/study/train.cfg",
    "--variants=bats,random",
]
IN_USE = "in use by another run (PID {pid}, test-holder, since "
MATCHED = "(classes are matched by name, never by position)"
CASES = [
    ("search-epochs-zero", "search", [*SEARCH, "--epochs=0"], "--epochs=0", False),
    ("search-epochs-malformed", "search", [*SEARCH, "--epochs=two"], "--epochs=two", False),
    ("search-unknown-flag", "search", [*SEARCH, "--epoch=2"], "'epoch'", False),
    ("search-unknown-space", "search", [*SEARCH, "--search_space=nas"], "--search_space", False),
    ("search-extra-argument", "search", [*SEARCH, "again"], "unexpected arguments", False),
    ("search-missing-output", "search", SEARCH[:-1], "--output_dir is required", False),
    ("search-channels", "search", [*SEARCH, "--init_channels=0"], "--init_channels=0", False),
    (
        "search-groups-not-dividing",
        "search",
        [*SEARCH, "--init_channels=6", "--groups=4"],
        "--groups=4: does not divide init_channels=6",
        False,
    ),
    ("search-nodes", "search", [*SEARCH, "--nodes=0"], "--nodes=0", False),
    ("search-layers", "search", [*SEARCH, "--layers=2"], "--layers=2", False),
    ("search-max-examples", "search", [*SEARCH, "--max_examples=1"], "--max_examples=1", False),
    (
        "search-max-examples-beyond-the-search-parts",
        "search",
        [*SEARCH, "--max_examples=25"],
        "--max_examples=25: must be in [2, 24]",
        True,
    ),
    ("search-temperature", "search", [*SEARCH, "--temperature=0"], "--temperature=0", False),
    (
        "search-final-temperature-without-schedule",
        "search",
        [*SEARCH, "--temperature_final=0.05"],
        "--temperature_final",
        False,
    ),
    ("search-warmup", "search", [*SEARCH, "--warmup_epochs=2"], "--warmup_epochs=2", False),
    ("search-lr", "search", [*SEARCH, "--w_lr=-0.1"], "--w_lr=-0.1", False),
    ("search-momentum", "search", [*SEARCH, "--w_momentum=1.5"], "--w_momentum=1.5", False),
    (
        "search-second-order-on-many-devices",
        "search",
        [*SEARCH, "--order=second", "--strategy=mirrored"],
        "--order=second",
        False,
    ),
    (
        "search-missing-data-folder",
        "search",
        [*SEARCH, "--data_dir={root}/nowhere"],
        "--data_dir={root}/nowhere",
        False,
    ),
    ("search-missing-teacher", "search", [*SEARCH, "--teacher={root}/t.keras"], "--teacher", False),
    (
        "search-output-under-a-file",
        "search",
        [*SEARCH, "--output_dir={root}/text.txt/run"],
        "is not a folder",
        False,
    ),
    (
        "search-output-holds-another-run",
        "search",
        [*SEARCH, "--output_dir={root}/other_run"],
        "holds another run",
        False,
    ),
    (
        "search-output-not-a-run",
        "search",
        [*SEARCH, "--output_dir={root}/busy"],
        "not empty and not a search run",
        False,
    ),
    (
        "search-tf-config-not-json",
        "search",
        [*SEARCH, "--strategy=multi_worker", "TF_CONFIG=[not json"],
        "TF_CONFIG",
        False,
    ),
    (
        "search-missing-flagfile",
        "search",
        [*SEARCH, "--flagfile={root}/nowhere.cfg"],
        "nowhere.cfg",
        False,
    ),
    (
        "search-no-split-folder",
        "search",
        [*SEARCH, "--data_dir={root}/no_split"],
        "no split folder 'train'",
        True,
    ),
    (
        "search-empty-split",
        "search",
        [*SEARCH, "--data_dir={root}/no_classes"],
        "no class folders",
        True,
    ),
    (
        "search-class-without-images",
        "search",
        [*SEARCH, "--data_dir={root}/no_images"],
        "no_images/train/cat: no images",
        True,
    ),
    (
        "search-jpg-not-an-image",
        "search",
        [*SEARCH, "--data_dir={root}/bad_image", "--bad_images=fail"],
        "train: 1 of 9 images cannot be read: {root}/bad_image/train/class0/000.jpg: not a "
        "JPEG or PNG image (bad_images=skip leaves them out)",
        True,
    ),
    (
        "search-teacher-not-a-model",
        "search",
        [*SEARCH, "--teacher={root}/model.keras"],
        "--teacher={root}/model.keras: not a loadable Keras model",
        True,
    ),
    (
        "search-batch-larger-than-data",
        "search",
        [*SEARCH, "--batch_size=100"],
        "--batch_size=100",
        True,
    ),
    *[
        (
            f"train-genotype-{name}",
            "train",
            [*TRAIN, f"--genotype={{root}}/genotypes/{file}"],
            m,
            False,
        )
        for name, file, m in (
            ("not-json", "not_json.json", "not_json.json: not valid JSON"),
            ("schema-version", "version.json", "version.json: schema_version 99"),
            ("unknown-op", "unknown_op.json", "unknown op 'conv_7x7'"),
            ("impossible-input", "bad_input.json", "input 5 is impossible"),
            ("missing", "nowhere.json", "nowhere.json: no such genotype file"),
        )
    ],
    ("train-groups", "train", [*TRAIN, "--groups=3"], "--groups=3", False),
    ("train-stages", "train", [*TRAIN, "--stages=3"], "--stages=3", False),
    ("train-part-val", "train", [*TRAIN, "--train_part=val"], "--train_part=val", False),
    ("train-holdout-is-gone", "train", [*TRAIN, "--holdout=0.2"], "'holdout'", False),
    (
        "train-max-val-examples",
        "train",
        [*TRAIN, "--max_val_examples=0"],
        "--max_val_examples=0: 0 is not a positive integer",
        False,
    ),
    (
        "train-part-with-val-split",
        "train",
        [*TRAIN, "--val_split=test", "--train_part=final_train"],
        "--train_part=final_train",
        False,
    ),
    (
        "train-max-val-examples-beyond-val",
        "train",
        [*TRAIN, "--max_val_examples=11"],
        "--max_val_examples=11: must be in [1, 10] (the val part of folder has 10 examples)",
        True,
    ),
    ("train-batch-malformed", "train", [*TRAIN, "--batch_size=1.5"], "--batch_size=1.5", False),
    (
        "train-output-holds-a-search",
        "train",
        [*TRAIN, "--output_dir={root}/other_run"],
        "--output_dir={root}/other_run: not empty and not a training run",
        True,
    ),
    (
        "train-teacher-not-a-model",
        "train",
        [*TRAIN, "--teacher={root}/model.keras"],
        "not a loadable Keras model",
        True,
    ),
    ("evaluate-missing-model", "evaluate", ["--model={root}/nowhere.keras"], "--model", False),
    (
        "evaluate-model-not-a-model",
        "evaluate",
        [*EVAL, "--output={out}/eval.json"],
        "not a loadable Keras model",
        True,
    ),
    ("evaluate-batch", "evaluate", [*EVAL, "--batch_size=0"], "--batch_size=0", False),
    ("evaluate-unknown-part", "evaluate", [*EVAL, "--part=bogus"], "--part=bogus", False),
    ("evaluate-max-examples", "evaluate", [*EVAL, "--max_examples=0"], "--max_examples=0", False),
    (
        "evaluate-max-examples-beyond-the-part",
        "evaluate",
        [*EVAL, "--part=final_train", "--max_examples=15"],
        "--max_examples=15: must be in [1, 14] (the final_train part of folder has 14",
        True,
    ),
    (
        "evaluate-output-under-a-file",
        "evaluate",
        [*EVAL, "--output={root}/text.txt/eval.json"],
        "--output",
        False,
    ),
    ("export-threads", "export", [*EXPORT, "--threads=0,x"], "--threads=0,x", False),
    ("export-images", "export", [*EXPORT, "--num_images=0"], "--num_images=0", False),
    (
        "export-output-holds-other-files",
        "export",
        [*EXPORT, "--output_dir={root}/busy"],
        "holds other files (thesis.tex)",
        False,
    ),
    (
        "export-model-not-a-model",
        "export",
        [*EXPORT, "--model={root}/model.keras"],
        "not a loadable Keras model",
        True,
    ),
    # Non-finite numbers, in any float setting, before anything is written.
    *[
        (f"{script}-{flag}-{value}", script, [*args, f"--{flag}={value}"], msg, False)
        for script, args, flag, value in (
            ("search", SEARCH, "w_lr", "inf"),
            ("search", SEARCH, "temperature", "nan"),
            ("search", SEARCH, "kd_temperature", "-inf"),
            ("train", TRAIN, "lr", "inf"),
            ("train", TRAIN, "weight_decay", "nan"),
            ("train", TRAIN, "drop_path", "-inf"),
        )
        for msg in [f"--{flag}={value}: must be a finite number"]
    ],
    # One run per output folder: a folder another live run holds.
    ("search-folder-in-use", "search", [*SEARCH, "--output_dir={root}/held"], IN_USE, False),
    ("train-folder-in-use", "train", [*TRAIN, "--output_dir={root}/held"], IN_USE, True),
    ("export-folder-in-use", "export", [*EXPORT, "--output_dir={root}/held"], IN_USE, False),
    ("study-folder-in-use", "study", [*STUDY, "--output_dir={root}/held"], IN_USE, False),
    # The output folder inside the image folder: its files would become data.
    *[
        (
            f"{script}-output-inside-the-data",
            script,
            [*args, "--output_dir={data}/train/run"],
            "--output_dir={data}/train/run: inside --data_dir={data}; its files would become "
            "part of the data",
            False,
        )
        for script, args in (("search", SEARCH), ("train", TRAIN), ("export", EXPORT))
    ],
    # Teachers, checked before the output folder is created.
    (
        "train-teacher-other-class-count",
        "train",
        [*TRAIN, "--teacher={root}/teacher5.keras"],
        "--teacher={root}/teacher5.keras: maps 16px images to 5 classes; the data has 16px "
        "images and 3 classes",
        True,
    ),
    *[
        (
            f"{script}-teacher-other-class-names",
            script,
            [*args, "--teacher={root}/named/model.keras"],
            "--teacher={root}/named/model.keras: the data has classes it was not trained on: "
            f"class0, class1, class2; the data lacks its classes cat, dog, eel {MATCHED}",
            True,
        )
        for script, args in (("search", SEARCH), ("train", TRAIN))
    ],
    # Class names: a split with a class the model does not know; a validation split whose
    # classes differ; one class only.
    *[
        (
            f"{script}-split-with-a-class-the-model-lacks",
            script,
            [*args, "--model={root}/class9/model.keras"],
            "--split=test: the data has classes it was not trained on: class2; the data lacks "
            f"its classes class9 {MATCHED}",
            True,
        )
        for script, args in (("evaluate", EVAL), ("export", EXPORT))
    ],
    (
        "train-val-split-with-other-classes",
        "train",
        [*TRAIN, "--data_dir={root}/other_classes", "--val_split=test"],
        "--val_split=test: its classes differ from split=train's: the data has classes it was "
        f"not trained on: classX; the data lacks its classes class2 {MATCHED}",
        True,
    ),
    (
        "train-val-split-is-the-split",
        "train",
        [*TRAIN, "--val_split=train"],
        "--val_split=train: the split trained on (--split)",
        False,
    ),
    *[
        (
            f"{script}-one-class",
            script,
            [*args, "--data_dir={root}/one_class"],
            "--data_dir={root}/one_class: split 'train' has one class (class0); a classifier "
            "needs two or more",
            True,
        )
        for script, args in (("search", SEARCH), ("train", TRAIN))
    ],
    # A resumed search whose data changed since it started.
    (
        "search-resumed-on-other-classes",
        "search",
        [*SEARCH, "--output_dir={root}/ran_on_other_classes"],
        "--output_dir={root}/ran_on_other_classes: its run started on other classes",
        True,
    ),
    (
        "search-resumed-on-other-images",
        "search",
        [*SEARCH, "--output_dir={root}/ran_on_47"],
        "--output_dir={root}/ran_on_47: its run started on 47 examples of the split, the data "
        "now has 48 (images were added or removed)",
        True,
    ),
    # Broken images.
    (
        "train-class-of-broken-images",
        "train",
        [*TRAIN, "--data_dir={root}/broken_class"],
        "{root}/broken_class/train/class1: no readable image (all 4 are broken; "
        "{root}/broken_class/train/class1/000.png: empty file)",
        True,
    ),
    (
        "search-bad-images-policy",
        "search",
        [*SEARCH, "--bad_images=maybe"],
        "--bad_images",
        False,
    ),
    # Files and folders given for others.
    (
        "train-genotype-is-a-folder",
        "train",
        [*TRAIN, "--genotype={root}/genotypes"],
        "--genotype={root}/genotypes: a folder; give a genotype file",
        False,
    ),
    ("evaluate-model-is-a-folder", "evaluate", [*EVAL, "--model={root}"], "a folder", False),
    (
        "evaluate-output-is-a-folder",
        "evaluate",
        [*EVAL, "--output={root}"],
        "--output={root}: a folder; give a .json file name",
        False,
    ),
    (
        "evaluate-output-is-the-model",
        "evaluate",
        [*EVAL, "--model={root}/class9/model.keras", "--output={root}/class9/model.keras"],
        "--output={root}/class9/model.keras: the model file itself",
        False,
    ),
    # The study: its flagfiles are checked (with each variant's settings) before any write.
    (
        "study-output-not-a-study",
        "study",
        [*STUDY, "--output_dir={root}/busy"],
        "--output_dir={root}/busy: not empty and not a study (holds thesis.tex)",
        False,
    ),
    (
        "study-non-finite-setting-in-a-flagfile",
        "study",
        [*STUDY, "--search_flagfile={root}/study/nan_lr.cfg"],
        "--search_flagfile={root}/study/nan_lr.cfg: --w_lr=nan: must be a finite number",
        False,
    ),
    (
        "study-unknown-flag-in-a-flagfile",
        "study",
        [*STUDY, "--train_flagfile={root}/study/typo.cfg"],
        "--train_flagfile={root}/study/typo.cfg: Unknown command line flag 'epoch'",
        False,
    ),
    (
        "study-flagfile-data-missing",
        "study",
        [*STUDY, "--search_flagfile={root}/study/no_data.cfg"],
        "--search_flagfile={root}/study/no_data.cfg: --data_dir={root}/nowhere: no such folder",
        False,
    ),
]


def _run_case(tmp_path, inputs, args):
    names = {"out": str(tmp_path / "out"), **inputs}
    env = dict(os.environ)
    argv = []
    for a in args:
        a = a.format(**names)
        if a.startswith("TF_CONFIG="):
            env["TF_CONFIG"] = a.split("=", 1)[1]
        else:
            argv.append(a)
    return names, subprocess.run(argv, capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT)


@pytest.mark.parametrize(
    "script, args, message",
    [
        pytest.param(s, a, m, id=i, marks=[pytest.mark.slow] if tf else [])
        for i, s, a, m, tf in CASES
    ],
)
def test_bad_input_is_refused_cleanly(tmp_path, inputs, script, args, message):
    before = _snapshot(inputs["root"], inputs["data"], str(tmp_path))
    names, result = _run_case(tmp_path, inputs, _cmd(script, *args))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1 and message.format(**names) in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert _snapshot(inputs["root"], inputs["data"], str(tmp_path)) == before


def test_verbose_shows_the_traceback(tmp_path, inputs):
    args = [*SEARCH, "--init_channels=6", "--groups=4", "--verbose"]
    _, result = _run_case(tmp_path, inputs, _cmd("search", *args))
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "error: --groups=4" in result.stderr


# ------------------------------------------------------------------------ crash and resume


def _committed_step(out, folder="checkpoints"):
    """The step of the newest checkpoint listed in ``<folder>/checkpoint`` (0: none)."""
    path = os.path.join(out, folder, "checkpoint")
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as f:
        return int(re.search(r'model_checkpoint_path: "ckpt-(\d+)"', f.read()).group(1))


def _run_until(cmd, log, condition, sig, timeout=RUN_TIMEOUT):
    """Runs ``cmd``; sends ``sig`` as soon as ``condition()`` holds. Returns the exit code."""
    with open(log, "w") as err, subprocess.Popen(cmd, stdout=err, stderr=err) as proc:
        deadline = time.time() + timeout
        while proc.poll() is None and time.time() < deadline:
            if condition():
                proc.send_signal(sig)
                break
            time.sleep(0.002)
        return proc.wait(timeout=timeout)


def _results(out):
    with open(os.path.join(out, "alphas.json")) as f:
        alphas = json.load(f)
    with open(os.path.join(out, "history.json")) as f:
        history = json.load(f)
    with open(os.path.join(out, "genotype.json")) as f:
        genotype = json.load(f)
    return genotype, alphas, history


@pytest.mark.slow
def test_search_killed_at_any_moment_resumes_to_the_same_result(tiny_folder, tmp_path):
    """3 steps per epoch, 2 epochs; checkpoints every 2 steps and at the end of each epoch."""
    args = [*TINY_SEARCH, f"--data_dir={tiny_folder}", "--checkpoint_every=2"]
    ref, out = str(tmp_path / "ref"), str(tmp_path / "cut")
    ckpts, log = os.path.join(out, "checkpoints"), str(tmp_path / "log.txt")
    with open(tmp_path / "ref.txt", "w") as ref_log:  # the uninterrupted run, alongside
        reference = subprocess.Popen(
            _cmd("search", *args, f"--output_dir={ref}"), stdout=ref_log, stderr=ref_log
        )
    cmd = _cmd("search", *args, f"--output_dir={out}")

    def writing_checkpoint():
        return os.path.isdir(ckpts) and any(n.endswith("_temp") for n in os.listdir(ckpts))

    def epoch_1_written():
        return os.path.exists(os.path.join(out, "genotypes", "epoch_001.json"))

    steps = []  # the committed step after each stop
    # 1. SIGKILL while the first checkpoint (step 2, mid-epoch) is being written.
    assert _run_until(cmd, log, writing_checkpoint, signal.SIGKILL) == -signal.SIGKILL
    steps.append(_committed_step(out))
    assert steps[-1] in (0, 2)
    # 2. SIGKILL at the epoch boundary: epoch 1's outputs are written before its checkpoint.
    assert _run_until(cmd, log, epoch_1_written, signal.SIGKILL) == -signal.SIGKILL
    steps.append(_committed_step(out))
    assert steps[-1] in (2, 3)
    # 3. SIGTERM in epoch 2: a checkpoint of the step it stops after, exit code 143.
    code = _run_until(cmd, log, lambda: _committed_step(out) >= 4, signal.SIGTERM)
    with open(log) as f:
        stopped = f.read()
    assert code == 128 + signal.SIGTERM, stopped
    assert "interrupted: checkpoint at step" in stopped and "Traceback" not in stopped
    steps.append(_committed_step(out))
    assert 4 <= steps[-1] <= 6
    # 4. What a kill during the next write leaves: files that no checkpoint listing names.
    for name in ("ckpt-99.index", "ckpt-99.data-00000-of-00001", "ckpt-99_temp/part.index"):
        _write(os.path.join(ckpts, name), "cut short")
    # 5. The same command finishes the run.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert f"resumed from {os.path.join(ckpts, f'ckpt-{steps[-1]}')}" in done.stdout
    print("committed steps after each stop:", steps)

    assert reference.wait(timeout=RUN_TIMEOUT) == 0
    (g_ref, a_ref, h_ref), (g_cut, a_cut, h_cut) = _results(ref), _results(out)
    assert g_cut == g_ref
    for key in ("alpha_normal", "alpha_reduce"):
        np.testing.assert_allclose(a_cut[key], a_ref[key], rtol=1e-5, atol=1e-6)
    assert [h["epoch"] for h in h_cut] == [h["epoch"] for h in h_ref] == [1, 2]
    for got, want in zip(h_cut, h_ref):
        # The architecture metrics exist once the alphas move (not in the warm-up epoch).
        keys = [k for k in ("w_loss", "w_acc", "a_loss", "a_acc") if k in want]
        assert set(keys) == {k for k in ("w_loss", "w_acc", "a_loss", "a_acc") if k in got}
        for key in keys:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)
    assert "a_loss" not in h_ref[0] and "a_loss" in h_ref[1]
    epochs = sorted(os.listdir(os.path.join(out, "genotypes")))
    assert epochs == ["epoch_001.json", "epoch_002.json"]


def _train_results(out):
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    histories = []
    for stage in (1, 2):
        with open(os.path.join(out, f"stage{stage}", "history.json")) as f:
            histories.append(json.load(f))
    return metrics, histories


@pytest.mark.slow
def test_train_killed_at_any_moment_resumes_to_the_same_result(tiny_folder, tmp_path):
    """2 stages of 2 epochs; each epoch ends with a backup of the stage, then its history."""
    args = [*TINY_TRAIN, f"--data_dir={tiny_folder}"]
    ref, out, log = str(tmp_path / "ref"), str(tmp_path / "cut"), str(tmp_path / "log.txt")
    with open(tmp_path / "ref.txt", "w") as ref_log:  # the uninterrupted run, alongside
        reference = subprocess.Popen(
            _cmd("train", *args, f"--output_dir={ref}"), stdout=ref_log, stderr=ref_log
        )
    cmd = _cmd("train", *args, f"--output_dir={out}")

    def written(stage, name):
        return lambda: os.path.exists(os.path.join(out, f"stage{stage}", name))

    # 1. SIGKILL in the second epoch of stage 1.
    assert _run_until(cmd, log, written(1, "history.json"), signal.SIGKILL) == -signal.SIGKILL
    assert not written(1, "model.keras")()
    # 2. SIGKILL as stage 1 ends: its model is saved, its backup not yet removed.
    assert _run_until(cmd, log, written(1, "model.keras"), signal.SIGKILL) == -signal.SIGKILL
    assert not written(2, "history.json")()
    # 3. SIGTERM in the second epoch of stage 2: a backup of the batch it stopped after, then
    # a clean exit with code 143; the rerun goes on from the next batch.
    code = _run_until(cmd, log, written(2, "history.json"), signal.SIGTERM)
    with open(log) as f:
        stopped = f.read()
    assert code == 128 + signal.SIGTERM, stopped
    stop = re.search(r"interrupted: backup at (epoch 2, batch \d+|the end of epoch 1);", stopped)
    assert stop and "Traceback" not in stopped, stopped
    mid_epoch = stop.group(1).startswith("epoch")

    assert not os.path.exists(os.path.join(out, "metrics.json"))
    # 4. The same command finishes the run.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]

    assert reference.wait(timeout=RUN_TIMEOUT) == 0
    (m_ref, h_ref), (m_cut, h_cut) = _train_results(ref), _train_results(out)
    assert m_cut["epochs"] == m_ref["epochs"] == 4
    for key in ("top1", "top5", "loss"):
        np.testing.assert_allclose(m_cut[key], m_ref[key], rtol=1e-5, err_msg=key)
    for stage, (got, want) in enumerate(zip(h_cut, h_ref), 1):
        assert [h["epoch"] for h in got] == [h["epoch"] for h in want] == [0, 1]
        for g, w in zip(got, want):
            # The epoch resumed mid-way averages its training metrics over its last batches.
            resumed = stage == 2 and g["epoch"] == 1 and mid_epoch
            keys = ["val_loss", "val_top1"] + ([] if resumed else ["loss", "top1"])
            for key in keys:
                np.testing.assert_allclose(g[key], w[key], rtol=1e-5, err_msg=key)


@pytest.fixture(scope="module")
def diverged(tmp_path_factory, tiny_folder):
    """A search whose loss becomes non-finite at step 2: (output folder, command, result)."""
    out = str(tmp_path_factory.mktemp("diverged") / "run")
    args = [*TINY_SEARCH, f"--data_dir={tiny_folder}", "--checkpoint_every=1", "--w_lr=1e30"]
    cmd = _cmd("search", *args, f"--output_dir={out}")
    return out, cmd, subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(diverged):
    out, _, result = diverged
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    step = int(re.search(r"non-finite loss at step (\d+)", errors[0]).group(1))
    assert step >= 2 and _committed_step(out) == step - 1
    assert not os.path.exists(os.path.join(out, "genotype.json"))


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "listing", "incompatible"])
def test_damaged_checkpoint_is_named_and_left_alone(diverged, tmp_path, damage):
    out, cmd, _ = diverged
    run = str(tmp_path / "run")
    shutil.copytree(out, run)
    cmd = [a.replace(out, run) for a in cmd]
    ckpts = os.path.join(run, "checkpoints")
    expected = "ckpt-1: checkpoint is corrupt or from another configuration"
    if damage == "truncated":
        _truncate(os.path.join(ckpts, "ckpt-1.data-00000-of-00001"))
    elif damage == "listing":
        _write(os.path.join(ckpts, "checkpoint"), "model_checkpoint_path: ckpt-1 garbage")
        expected = "unreadable checkpoint list"
    else:  # the run's config edited to another model size: its checkpoint no longer fits
        path = os.path.join(run, "search_config.json")
        with open(path) as f:
            config = json.load(f)
        _write(path, json.dumps({**config, "init_channels": 8}))
        cmd.append("--init_channels=8")
    before = _snapshot(run)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1, result.stderr
    assert len(errors) == 1 and expected in errors[0] and "output_dir" in errors[0], errors
    assert "Traceback" not in result.stderr
    lock = os.path.join(run, LOCK_FILE)  # records who held the folder last: the run refused
    assert {k: v for k, v in _snapshot(run).items() if k != lock} == {
        k: v for k, v in before.items() if k != lock
    }


# ------------------------------------------------------ references, full disks, kill anywhere


def _timed_run(cmd, log, progress):
    """Runs ``cmd`` to its end, watching ``progress()`` (what it has made lasting: a value that
    changes with each checkpoint or finished part). Returns its wall time, its start-up (the
    time to its first progress) and the mean time from one progress to the next."""
    began, changes, last = time.time(), [], progress()
    with open(log, "w") as out, subprocess.Popen(cmd, stdout=out, stderr=out) as proc:
        while proc.poll() is None:
            now = progress()
            if now != last:
                changes.append(time.time() - began)
                last = now
            time.sleep(0.005)
    with open(log) as f:
        assert proc.returncode == 0, f.read()[-3000:]
    seconds = time.time() - began
    startup = changes[0] if changes else seconds
    return {
        "seconds": seconds,
        "startup": startup,
        "unit": (seconds - startup) / max(len(changes), 1),
    }


def _search_cmd(data, out):
    args = [*TINY_SEARCH, f"--data_dir={data}", "--checkpoint_every=1"]
    return _cmd("search", *args, f"--output_dir={out}")


def _train_cmd(data, out):
    return _cmd("train", *TINY_TRAIN, f"--data_dir={data}", f"--output_dir={out}")


def _read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def _search_progress(out):
    """Checkpoint step, epochs in history.json, final diagrams: what a search has kept."""
    epochs = len(_read_json(os.path.join(out, "history.json"), []))
    return _committed_step(out), epochs, os.path.exists(os.path.join(out, "normal.png"))


def _train_progress(out):
    """Each stage's checkpoint step (-1: done), the final model, metrics.json."""
    steps = []
    for stage in ("stage1", "stage2"):
        if os.path.exists(os.path.join(out, stage, "model.keras")):
            steps.append(-1)
        else:
            steps.append(_committed_step(os.path.join(out, stage), "backup"))
    files = (os.path.exists(os.path.join(out, n)) for n in ("model.keras", "metrics.json"))
    return (*steps, *files)


@pytest.fixture(scope="module")
def search_reference(tiny_folder, tmp_path_factory):
    """The tiny search (a checkpoint at every step), never interrupted, and its timing."""
    out = str(tmp_path_factory.mktemp("search_reference") / "run")
    timing = _timed_run(_search_cmd(tiny_folder, out), out + ".log", lambda: _search_progress(out))
    return {"out": out, **timing}


@pytest.fixture(scope="module")
def train_reference(tiny_folder, tmp_path_factory):
    """The tiny two-stage training, never interrupted, and its timing (its model is exported
    below)."""
    out = str(tmp_path_factory.mktemp("train_reference") / "run")
    timing = _timed_run(_train_cmd(tiny_folder, out), out + ".log", lambda: _train_progress(out))
    return {"out": out, **timing}


def _same_search(out, reference):
    (g_ref, a_ref, h_ref), (g_cut, a_cut, h_cut) = _results(reference), _results(out)
    assert g_cut == g_ref
    for key in ("alpha_normal", "alpha_reduce"):
        np.testing.assert_allclose(a_cut[key], a_ref[key], rtol=1e-5, atol=1e-6)
    assert [h["epoch"] for h in h_cut] == [h["epoch"] for h in h_ref] == [1, 2]
    for got, want in zip(h_cut, h_ref):
        assert set(got) == set(want)
        for key in ("w_loss", "w_acc", "a_loss", "a_acc"):
            if key in want:
                np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)


def _same_training(out, reference):
    (m_ref, h_ref), (m_cut, h_cut) = _train_results(reference), _train_results(out)
    assert m_cut["epochs"] == m_ref["epochs"] == 4
    for key in ("top1", "top5", "loss"):
        np.testing.assert_allclose(m_cut[key], m_ref[key], rtol=1e-5, err_msg=key)
    for stage in ("1", "2"):
        for key, value in m_ref["stages"][stage].items():
            np.testing.assert_allclose(m_cut["stages"][stage][key], value, rtol=1e-5)
    for got, want in zip(h_cut, h_ref):
        assert [h["epoch"] for h in got] == [h["epoch"] for h in want] == [0, 1]
        for g, w in zip(got, want):  # validation of each epoch's end: exact after any resume
            for key in ("val_loss", "val_top1"):
                np.testing.assert_allclose(g[key], w[key], rtol=1e-5, err_msg=key)


# A full or read-only disk, simulated: once ``trigger`` exists, every checkpoint save fails
# with the errno given (as TensorFlow reports it), and so does every fsync of an output unless
# only the checkpoints' folder fails.
FAILING_DISK = r"""
import errno, os, runpy, sys

code, trigger, only_checkpoints, script = sys.argv[1:5]
code = getattr(errno, code)
full = lambda: os.path.exists(trigger)
real_fsync = os.fsync


def fsync(fd):
    if full() and only_checkpoints != "checkpoints":
        raise OSError(code, os.strerror(code))
    real_fsync(fd)


os.fsync = fsync
import bats_tf  # noqa
import tensorflow as tf

real_save = tf.train.CheckpointManager.save
KIND = {errno.ENOSPC: tf.errors.ResourceExhaustedError}
KIND[errno.EROFS] = tf.errors.PermissionDeniedError


def save(self, *args, **kwargs):
    if full():
        where = f"{self.directory}/ckpt-x_temp/part-00000-of-00001.data-00000-of-00001"
        raise KIND[code](None, None, f"{where}; {os.strerror(code)}")
    return real_save(self, *args, **kwargs)


tf.train.CheckpointManager.save = save
sys.argv = [script, *sys.argv[5:]]
runpy.run_path(script, run_name="__main__")
"""

FULL_DISK_END = (
    "the last checkpoint and the outputs written before are kept: free space (or fix the "
    "folder) and rerun the same command to continue"
)


def _on_failing_disk(errno_name, trigger, cmd, what="all"):
    """Runs a command of ``_cmd`` on a disk that fails once ``trigger`` exists (``what``: all
    writes, or "checkpoints"); its last stderr line, which must be its one error line."""
    script, args = cmd[1], cmd[2:]
    run = [sys.executable, "-c", FAILING_DISK, errno_name, str(trigger), what, script, *args]
    result = subprocess.run(run, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert result.returncode == 1, result.stderr[-3000:]
    assert errors == lines[-1:] and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[-1]


@pytest.mark.slow
def test_search_on_a_full_disk_keeps_its_outputs_and_continues(
    tiny_folder, tmp_path, search_reference
):
    """The disk fills at the end of epoch 2: after epoch 2's checkpoint (step 6) and its
    genotype file, at genotype.json. Epoch 1's outputs stay; the rerun finishes the run."""
    out = str(tmp_path / "run")
    cmd = _search_cmd(tiny_folder, out)
    last = _on_failing_disk("ENOSPC", f"{out}/genotypes/epoch_002.json", cmd)
    assert last == f"error: {out}/genotype.json: No space left on device (ENOSPC); {FULL_DISK_END}"
    assert _committed_step(out) == 6
    with open(os.path.join(out, "history.json")) as f:
        assert [h["epoch"] for h in json.load(f)] == [1]
    with (
        open(os.path.join(out, "genotype.json")) as a,
        open(f"{out}/genotypes/epoch_001.json") as b,
    ):
        assert json.load(a) == json.load(b)  # epoch 1's, whole
    assert not [n for _, _, files in os.walk(out) for n in files if n.startswith(".tmp-")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed from {out}/checkpoints/ckpt-6" in done.stdout
    _same_search(out, search_reference["out"])


@pytest.mark.slow
def test_training_on_a_read_only_disk_keeps_its_checkpoint_and_continues(
    tiny_folder, tmp_path, train_reference
):
    """The checkpoints' disk turns read-only after stage 2's first epoch: the checkpoint of
    its second epoch fails; stage 1's model and stage 2's first checkpoint stay; the rerun
    redoes the second epoch and finishes."""
    out = str(tmp_path / "run")
    cmd = _train_cmd(tiny_folder, out)
    last = _on_failing_disk("EROFS", f"{out}/stage2/backup/checkpoint", cmd, "checkpoints")
    assert (
        last == f"error: {out}/stage2/backup/ckpt-6: Read-only file system (EROFS); {FULL_DISK_END}"
    )
    with open(os.path.join(out, "stage2", "backup", "checkpoint")) as f:
        assert 'model_checkpoint_path: "ckpt-3"' in f.read()
    assert os.path.exists(os.path.join(out, "stage1", "model.keras"))
    assert not os.path.exists(os.path.join(out, "metrics.json"))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    _same_training(out, train_reference["out"])


def _kill_anywhere(cmd, log, progress, timing, seed, check, out, points=KILLS):
    """Runs ``cmd`` until it has been SIGKILLed at ``points`` seeded random moments. A run
    that ends by itself must have succeeded: ``check()`` compares its outputs with an
    uninterrupted run's, and the kills go on over a fresh run (``out`` removed), so every
    test has its ``points`` kills however fast the machine finishes what is left.

    For a run that resumes (``progress`` given), each attempt but about one in five (killed
    at a random moment of its start-up) is killed a random share of ``timing["unit"]`` after
    it has made progress of its own (a checkpoint, a finished stage): the kills fall on
    steps, checkpoint writes, epoch ends, stage ends and final writes, all over the run. For
    a run that starts over (``progress`` None), at a random moment of its whole length.
    """
    rng = np.random.RandomState(seed)
    attempts = 3 * points
    early = rng.uniform(size=attempts) < 0.2
    lead = rng.uniform(0.1, 1.0, attempts) * timing["startup"]
    after = rng.uniform(0.0, 1.0, attempts) * timing["unit"]
    anywhere = rng.uniform(0.1, 1.0, attempts) * timing["seconds"]
    codes, moments = [], []
    for k in range(attempts):
        if codes.count(-signal.SIGKILL) == points:
            break
        before = progress() if progress else None
        with open(log, "a") as f, subprocess.Popen(cmd, stdout=f, stderr=f) as proc:
            began = time.time()
            deadline = began + (lead[k] if early[k] or not progress else 0)
            deadline = began + anywhere[k] if not progress else deadline
            waiting = progress is not None and not early[k]
            while proc.poll() is None:
                now = time.time()
                if waiting and progress() != before:
                    deadline, waiting = now + after[k], False
                if not waiting and now >= deadline:
                    proc.kill()
                    break
                time.sleep(0.005)
            code = proc.wait()
        with open(log) as f:
            assert code in (0, -signal.SIGKILL), f.read()[-3000:]
        codes.append(code)
        moments.append((round(time.time() - began, 1), code, progress() if progress else ""))
        if code == 0:
            check()
            shutil.rmtree(out)
    print("attempts (seconds, exit code, progress kept):")
    print("\n".join(f"  {m}" for m in moments))
    assert codes.count(-signal.SIGKILL) == points, codes
    return codes


def _finish(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_search_killed_at_random_moments_finishes_as_uninterrupted(
    tiny_folder, tmp_path, search_reference
):
    out = str(tmp_path / "run")
    cmd = _search_cmd(tiny_folder, out)

    def check():
        _same_search(out, search_reference["out"])
        assert sorted(os.listdir(os.path.join(out, "genotypes"))) == [
            "epoch_001.json",
            "epoch_002.json",
        ]

    progress = lambda: _search_progress(out)  # noqa: E731
    _kill_anywhere(cmd, out + ".log", progress, search_reference, 16, check, out)
    _finish(cmd)
    check()


@pytest.mark.slow
def test_two_stage_training_killed_at_random_moments_finishes_as_uninterrupted(
    tiny_folder, tmp_path, train_reference
):
    out = str(tmp_path / "run")
    cmd = _train_cmd(tiny_folder, out)

    def check():
        _same_training(out, train_reference["out"])
        with open(os.path.join(out, "classes.json")) as f:
            assert json.load(f)["class_names"] == ["class0", "class1", "class2"]
        assert not os.path.exists(os.path.join(out, "stage1", "backup"))

    progress = lambda: _train_progress(out)  # noqa: E731
    _kill_anywhere(cmd, out + ".log", progress, train_reference, 17, check, out)
    _finish(cmd)
    check()


def _export_cmd(model, data, out):
    args = ["--dataset=folder", f"--data_dir={data}", "--num_images=20", "--runs=2"]
    return _cmd("export", f"--model={model}", *args, f"--output_dir={out}")


@pytest.mark.slow
def test_export_killed_at_random_moments_finishes_as_uninterrupted(
    tiny_folder, tmp_path, train_reference
):
    model = os.path.join(train_reference["out"], "model.keras")
    ref, out = str(tmp_path / "reference"), str(tmp_path / "run")
    timing = _timed_run(_export_cmd(model, tiny_folder, ref), ref + ".log", lambda: None)
    cmd = _export_cmd(model, tiny_folder, out)

    def check():
        for name in ("model_float.tflite", "model_lce.tflite", "classes.json"):
            with open(os.path.join(out, name), "rb") as a:
                with open(os.path.join(ref, name), "rb") as b:
                    assert a.read() == b.read(), name
        reports = []
        for folder in (out, ref):
            with open(os.path.join(folder, "export.json")) as f:
                reports.append({k: v for k, v in json.load(f).items() if k != "latency_ms"})
        assert reports[0] == reports[1]
        assert sorted(os.listdir(out)) == sorted(os.listdir(ref))  # no temporary file left

    _kill_anywhere(cmd, out + ".log", None, timing, 18, check, out)
    _finish(cmd)
    check()


@pytest.mark.slow
def test_study_killed_at_random_moments_finishes_as_uninterrupted(tiny_folder, tmp_path):
    """A study of one search and its (one-stage) training; a kill of the study ends its
    running search or training too (they die with it), and the rerun resumes them."""
    search = tmp_path / "search.cfg"
    search.write_text("\n".join([*TINY_SEARCH, f"--data_dir={tiny_folder}"]) + "\n")
    train = tmp_path / "train.cfg"
    one_stage = [a for a in TINY_TRAIN if not a.startswith("--stages")] + ["--stages=1"]
    train.write_text("\n".join([*one_stage, f"--data_dir={tiny_folder}"]) + "\n")

    def study(folder):
        args = [f"--search_flagfile={search}", f"--train_flagfile={train}", "--variants=bats"]
        return _cmd("study", *args, "--seeds=0", f"--output_dir={folder}")

    def progress(folder):
        work = os.path.join(folder, "work", "bats", "0")
        return (
            _search_progress(os.path.join(work, "search")),
            _train_progress(os.path.join(work, "train"))[::2],  # stage1, model.keras
            os.path.exists(os.path.join(folder, "bats", "0", "result.json")),
        )

    ref, out = str(tmp_path / "reference"), str(tmp_path / "run")
    timing = _timed_run(study(ref), ref + ".log", lambda: progress(ref))
    timing["unit"] /= 2  # its progress is coarse: more kills inside the search and training

    def check():
        results = []
        for folder in (out, ref):
            with open(os.path.join(folder, "bats", "0", "result.json")) as f:
                results.append(json.load(f))
        assert results[0]["genotype"] == results[1]["genotype"]
        for key in ("val_top1", "val_top5", "val_loss", "params", "bops", "flops"):
            np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-5, err_msg=key)
        configs = [json.dumps(r["configs"]) for r in results]
        assert configs[0] == configs[1].replace(ref, out)

    _kill_anywhere(study(out), out + ".log", lambda: progress(out), timing, 19, check, out)
    _finish(study(out))
    check()


@pytest.mark.slow
def test_evaluation_matches_classes_by_name_never_by_position(
    tiny_folder, tmp_path, train_reference
):
    """The same model and images (the training split) with the class folders renamed so that
    their sorted order is reversed, the model's classes.json renamed alike: the same figures.
    A split lacking a class is evaluated on the others."""
    model = os.path.join(train_reference["out"], "model.keras")
    renamed = {"class0": "c", "class1": "b", "class2": "a"}  # sorted: a, b, c
    for name, new in renamed.items():
        shutil.copytree(os.path.join(tiny_folder, "train", name), tmp_path / "data" / "train" / new)
    os.makedirs(tmp_path / "model")
    shutil.copy(model, tmp_path / "model" / "model.keras")
    _write(str(tmp_path / "model" / "classes.json"), json.dumps({"class_names": ["c", "b", "a"]}))

    def evaluate(model, data, name):
        args = ["--dataset=folder", f"--data_dir={data}", "--split=train"]
        out = str(tmp_path / f"{name}.json")
        done = subprocess.run(
            _cmd("evaluate", f"--model={model}", *args, f"--output={out}"),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        with open(out) as f:
            return json.load(f)

    original = evaluate(model, tiny_folder, "original")
    by_name = evaluate(tmp_path / "model" / "model.keras", tmp_path / "data", "renamed")
    assert original["top1"] > 0.9  # by position, the renamed classes would score 1/3
    for key in ("top1", "top5", "loss"):
        np.testing.assert_allclose(by_name[key], original[key], rtol=1e-6, err_msg=key)
    shutil.rmtree(tmp_path / "data" / "train" / "b")
    fewer = evaluate(tmp_path / "model" / "model.keras", tmp_path / "data", "fewer")
    assert fewer["top1"] > 0.9


@pytest.mark.slow
def test_two_searches_on_one_folder_the_second_is_refused(tiny_folder, tmp_path):
    """Two searches started on the same new folder (two terminals, a job sent twice)."""
    out = str(tmp_path / "run")
    cmd = _search_cmd(tiny_folder, out)
    lock = os.path.join(out, LOCK_FILE)
    with (
        open(tmp_path / "first.log", "w") as log,
        subprocess.Popen(cmd, stdout=log, stderr=log) as first,
    ):
        while not os.path.exists(lock) and first.poll() is None:
            time.sleep(0.01)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        first.kill()
    assert second.returncode == 2, second.stderr
    error = second.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: --output_dir={out}: in use by another run (PID {first.pid}, ")
    assert "bats-search, since" in error
