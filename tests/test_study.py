"""The ablation study: plan, real runs end to end, resume, summary, bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import RUN_TIMEOUT

from bats_tf import metrics, study
from bats_tf.genotype import Genotype, derive_from_alphas, parameter_free_ops
from bats_tf.network import random_genotype

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = [sys.executable, os.path.join(ROOT, "scripts", "study.py")]


def _flagfile(path, *lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def presets(tiny_folder, tmp_path):
    data = ["--dataset=folder", f"--data_dir={tiny_folder}"]
    search = _flagfile(
        tmp_path / "search.cfg",
        *data,
        "--epochs=2",
        "--warmup_epochs=1",
        "--batch_size=4",
        "--init_channels=4",
        "--layers=3",
        "--groups=2",
        "--fused_kernels=tf",
    )
    train = _flagfile(
        tmp_path / "train.cfg",
        *data,
        "--init_channels=4",
        "--layers=3",
        "--groups=1",
        "--stages=1,2",
        "--epochs=1",
        "--batch_size=4",
    )
    return search, train


def test_plan_runs_searched_variants_over_seeds_and_random_over_its_own():
    cfg = study.StudyConfig(
        "out", "work", "s.cfg", "t.cfg", variants=("bats", "random"), seeds=(0, 1),
        random_seeds=(5, 6, 7),
    )  # fmt: skip
    runs = study.plan(cfg)
    assert [(r.variant, r.seed) for r in runs] == [
        ("bats", 0), ("random", 5), ("bats", 1), ("random", 6), ("random", 7),
    ]  # fmt: skip
    assert [r.searched for r in runs] == [True, False, True, False, False]
    with pytest.raises(ValueError, match="^teacher_flagfile: required by the kd variant$"):
        study.StudyConfig("out", "work", "s.cfg", "t.cfg", variants=("kd",))


def test_variant_commands_add_their_settings_after_the_preset():
    cfg = study.StudyConfig("out", "work", "s.cfg", "t.cfg", "teacher.cfg")
    s = study.Study(cfg)
    cmd = s.search_command(study.Run("no_temperature", 3), None)
    assert cmd[2:] == [
        "--flagfile=s.cfg", "--temperature=1", "--seed=3",
        f"--output_dir={os.path.join('work', 'no_temperature', '3', 'search')}",
    ]  # fmt: skip
    kd = study.Run("kd", 0)
    assert "--teacher=/t/model.keras" in s.search_command(kd, "/t/model.keras")
    assert "--teacher=/t/model.keras" in s.train_command(kd, "g.json", "/t/model.keras")
    assert not any("teacher" in c for c in s.train_command(study.Run("bats", 0), "g.json", None))


def _result(variant, seed, top1, free):
    return {
        "variant": variant, "seed": seed, "val_top1": top1, "val_top5": 0.9,
        "parameter_free_normal": free, "parameter_free_reduce": 0, "params": 1e6,
        "bops": 1, "search_seconds": 60.0, "train_seconds": 120.0,
    }  # fmt: skip


def test_summary_gives_every_seed_and_mean_and_std(tmp_path):
    results = [
        _result("random", 1, 0.40, 3),
        {**_result("bats", 0, 0.50, 1), "ops": 20e6, "lce_ms": 9.0},
        {**_result("bats", 1, 0.60, 2), "ops": 30e6, "lce_ms": 11.0},
        _result("random", 0, 0.30, 5),
    ]
    summary = study.write_summary(str(tmp_path), results)
    bats = summary["variants"]["bats"]
    assert bats["seeds"] == [0, 1] and bats["val_top1"]["values"] == [0.5, 0.6]
    assert bats["val_top1"]["mean"] == pytest.approx(0.55)
    assert bats["val_top1"]["std"] == pytest.approx(0.0707107, rel=1e-5)
    assert summary["variants"]["random"]["parameter_free_normal"]["values"] == [5, 3]
    table = (tmp_path / "summary.md").read_text()
    assert "| bats | 2 | 55.0% ± 7.1% | 0: 50.0%, 1: 60.0% | 1, 2 | 1.00M | 25.0M | 10.0 |" in table
    assert "| random | 2 | 35.0% ± 7.1% | 0: 30.0%, 1: 40.0% | 5, 3 | 1.00M | - | - |" in table
    assert summary["variants"]["bats"]["lce_ms"]["values"] == [9.0, 11.0]
    assert "ops" not in summary["variants"]["random"]  # figures that runs lack are left out
    assert (tmp_path / "front.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert (tmp_path / "summary.png").read_bytes()[:4] == b"\x89PNG"


def test_the_summary_holds_every_run_in_the_folder(tmp_path):
    """A study run on some variants summarizes the others' finished runs too."""
    for variant, seed in (("bats", 1), ("bats", 0), ("cost_0.05", 0), ("random", 3)):
        folder = tmp_path / variant / str(seed)
        folder.mkdir(parents=True)
        (folder / study.RESULT_FILE).write_text(json.dumps(_result(variant, seed, 0.5, 1)))
    (tmp_path / "bats" / "2").mkdir()  # a run not finished
    found = [(r["variant"], r["seed"]) for r in study.read_results(str(tmp_path))]
    assert found == [("bats", 0), ("bats", 1), ("random", 3), ("cost_0.05", 0)]


def _run(*args):
    return subprocess.run([*STUDY, *args], capture_output=True, text=True, timeout=RUN_TIMEOUT)


@pytest.mark.slow
def test_study_runs_searches_and_random_cells_end_to_end_and_resumes(presets, tmp_path):
    search, train = presets
    out, work = tmp_path / "results", tmp_path / "work"
    args = [
        f"--output_dir={out}",
        f"--work_dir={work}",
        f"--search_flagfile={search}",
        f"--train_flagfile={train}",
        "--variants=capped,random",
        "--seeds=0",
        "--random_seeds=0,1",
    ]
    first = _run(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "[3/3]" in first.stdout and "study ETA done" in first.stdout
    for variant, seed in (("capped", 0), ("random", 0), ("random", 1)):
        folder = out / variant / str(seed)
        result = json.loads((folder / "result.json").read_text())
        trained = json.loads((work / variant / str(seed) / "train" / "metrics.json").read_text())
        assert result["val_top1"] == trained["top1"] and 0 <= result["val_top1"] <= 1
        assert result["genotype"] == json.loads((folder / "genotype.json").read_text())
        assert (folder / "normal.png").exists() and (folder / "reduce.svg").exists()
        assert "python scripts/train.py --flagfile=" in result["commands"]["train"]
        assert ("search" in result["commands"]) == (variant == "capped")
        assert (folder / "alphas.json").exists() == (variant == "capped")
        assert result["configs"]["train"]["seed"] == seed
        assert len(result["commit"]) == 40
        assert result["lce_ms"] > 0 and result["latency_device"]
    # The capped run: its genotype is the alphas' capped one; the result says what the cap
    # changed against the same alphas' uncapped genotype, and counts that one's OPs as the
    # training counted the capped one's.
    capped = json.loads((out / "capped" / "0" / "result.json").read_text())
    alphas = json.loads((out / "capped" / "0" / "alphas.json").read_text())
    genotype = Genotype.from_dict(capped["genotype"])
    assert genotype == derive_from_alphas(alphas, "bats", 2)
    assert max(parameter_free_ops(genotype).values()) <= 2
    uncapped = derive_from_alphas(alphas, "bats")
    assert capped["uncapped_genotype"] == uncapped.to_dict()
    pairs = zip(genotype.normal + genotype.reduce, uncapped.normal + uncapped.reduce)
    assert capped["cap_changed_edges"] == sum(a != b for a, b in pairs)
    train_config = capped["configs"]["train"]
    assert metrics.complexity(study.trained_network(genotype, train_config))["ops"] == capped["ops"]
    want = metrics.complexity(study.trained_network(uncapped, train_config))["ops"]
    assert capped["uncapped_ops"] == want
    twin = work / "capped" / "0" / "train_uncapped"
    if capped["cap_changed_edges"]:  # the uncapped twin is trained as the capped cell was
        assert (
            json.loads((twin / "metrics.json").read_text())["top1"] == capped["uncapped_val_top1"]
        )
    else:  # the same cell: nothing to train
        assert capped["uncapped_val_top1"] == capped["val_top1"] and not twin.exists()
    assert "capped: edges the cap changed (per seed) 0: " in (out / "summary.md").read_text()
    assert (out / "summary.png").exists() and (out / "front.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["variants"]["random"]["seeds"] == [0, 1]
    # The light outputs hold no checkpoint or model.
    names = {n for _, _, files in os.walk(out) for n in files}
    assert not any(n.endswith((".keras", ".index")) or n.startswith("ckpt") for n in names)
    # A rerun finds every run done and runs nothing, but measures a latency a result lacks.
    older = out / "random" / "1" / "result.json"
    older.write_text(json.dumps({k: v for k, v in json.loads(older.read_text()).items()
                                 if k not in ("lce_ms", "latency_device")}))  # fmt: skip
    # ... and what the cap changed, from the search's alphas, to a capped result without it.
    older_capped = out / "capped" / "0" / "result.json"
    cap_keys = (
        "uncapped_genotype", "cap_changed_edges", "uncapped_ops", "uncapped_val_top1",
        "uncapped_train_seconds",
    )  # fmt: skip
    older_capped.write_text(json.dumps({k: v for k, v in capped.items() if k not in cap_keys}))
    os.remove(out / "capped" / "0" / "alphas.json")
    again = _run(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "3 runs, 3 done before" in again.stdout and "searching" not in again.stdout
    assert "random seed 1: LCE" in again.stdout and json.loads(older.read_text())["lce_ms"] > 0
    assert "capped seed 0: the cap changed" in again.stdout
    timing = "uncapped_train_seconds"  # a finished twin training is loaded, not repeated
    assert {k: v for k, v in json.loads(older_capped.read_text()).items() if k != timing} == {
        k: v for k, v in capped.items() if k != timing
    }
    assert json.loads((out / "capped" / "0" / "alphas.json").read_text()) == alphas
    # An uncapped genotype other than the capped one is trained as its twin, with the seed
    # and recipe of the capped run, when a result lacks the twin's accuracy.
    other = random_genotype(7)
    older_capped.write_text(json.dumps({**{k: v for k, v in capped.items() if k not in cap_keys},
                                        "uncapped_genotype": other.to_dict(),
                                        "cap_changed_edges": 3, "uncapped_ops": 1}))  # fmt: skip
    shutil.rmtree(twin, ignore_errors=True)
    third = _run(*args)
    assert third.returncode == 0, third.stderr[-2000:]
    assert "capped seed 0: training the uncapped twin" in third.stdout
    trained = json.loads((twin / "metrics.json").read_text())
    result = json.loads(older_capped.read_text())
    assert result["uncapped_val_top1"] == trained["top1"] and trained["config"]["seed"] == 0
    assert Genotype.load(trained["config"]["genotype"]) == other
    assert "--output_dir=" in result["commands"]["train_uncapped"]
    top1 = f"{trained['top1']:.1%} -> {capped['val_top1']:.1%}"
    assert f"val top-1 0: {top1}" in (out / "summary.md").read_text()
    # The same folder with another recipe is refused, in one line.
    other = _run(*[a for a in args if "train_flagfile" not in a], f"--train_flagfile={search}")
    assert other.returncode == 2 and "holds a study with other settings" in other.stderr


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--variants=bats,nope"], "--variants: unknown nope"),
        (["--variants=kd"], "--teacher_flagfile is required"),
        (["--seeds=0,x"], "--seeds=0,x: expected non-negative integers"),
        (["--seeds=1,1"], "--seeds=1,1: repeated seed"),
        (["--train_flagfile=missing.cfg"], "--train_flagfile=missing.cfg: no such file"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(presets, tmp_path, extra, message):
    search, train = presets
    out = tmp_path / "results"
    args = [f"--output_dir={out}", f"--search_flagfile={search}", f"--train_flagfile={train}"]
    result = _run(*args, "--variants=bats,random", *extra)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_a_subset_of_variants_without_kd_continues_a_study_with_a_teacher(tmp_path):
    """Running some variants of a study again (say, new ones) needs no teacher unless kd is
    among them; another teacher is still refused."""
    out = str(tmp_path / "out")
    full = study.StudyConfig(out, str(tmp_path / "work"), "s.cfg", "t.cfg", "teacher.cfg")
    study.Study(full).check_output_dir()
    subset = study.StudyConfig(out, str(tmp_path / "work"), "s.cfg", "t.cfg", variants=("bats",))
    study.Study(subset).check_output_dir()
    other = study.StudyConfig(out, str(tmp_path / "work"), "s.cfg", "t.cfg", "other.cfg")
    with pytest.raises(ValueError, match=r"holds a study with other settings \(teacher_flagfile\)"):
        study.Study(other).check_output_dir()
