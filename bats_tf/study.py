"""The paper's ablation as one experiment: does the search beat random cells, and why?

For each variant and seed, a *run* searches a genotype with the variant's settings (or samples
one, for ``random``), trains it with one fixed recipe, and reports its accuracy on the ``val``
part of the data partition (:mod:`bats_tf.data`), which neither the search nor the training
reads. Each step is the project's own script, run as a subprocess with the study's flagfiles,
so any run can be repeated by hand from the commands its ``result.json`` records.

Light outputs (``result.json``, genotype, cell diagrams, the summary) go to ``output_dir``,
meant to be kept in version control; checkpoints, models and logs to ``work_dir``. Rerunning
the study skips finished runs, and a cut run resumes where its search or training stopped.
"""

from __future__ import annotations

import ctypes
import dataclasses
import glob
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from bats_tf.errors import ConfigError
from bats_tf.genotype import ALPHAS_FILE, Genotype, derive_from_alphas, parameter_free_ops
from bats_tf.io_utils import atomic_write_json, atomic_write_text

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")
CONFIG_FILE = "study.json"
RESULT_FILE = "result.json"
TEACHER = "{teacher}"  # placeholder in a variant's flags for the study's teacher model
LATENCY = "lce_ms"  # a result's LCE latency: batch 1, 1 thread (export.network_latency_ms)
LATENCY_RUNS = 50
# The training settings that shape the network whose latency a result reports.
NETWORK_SETTINGS = (
    "structure", "init_channels", "layers", "groups", "search_space", "stem_multiplier",
    "scaling", "shortcut", "deployable",
)  # fmt: skip
_PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent dies


class StudyError(RuntimeError):
    """A run of the study failed; the message names its log."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """A named set of search settings; ``search=None`` samples random genotypes instead."""

    name: str
    description: str
    search: tuple[str, ...] | None = ()
    train: tuple[str, ...] = ()


VARIANTS = {
    v.name: v
    for v in (
        Variant("bats", "the default search"),
        Variant("no_temperature", "the default search with T = 1", ("--temperature=1",)),
        Variant("darts_binary", "the binarized DARTS space", ("--search_space=darts_binary",)),
        Variant(
            "fully_binary",
            "binary weights as well as activations during the search",
            ("--weights=binary",),
        ),
        Variant(
            "kd",
            "search and training distilled from a real-valued teacher",
            (f"--teacher={TEACHER}",),
            (f"--teacher={TEACHER}",),
        ),
        Variant("random", "genotypes sampled uniformly from the BATS space", None),
        Variant(
            "cost_0.05",
            "the default search with OPs in the architecture loss at weight 0.05",
            ("--cost=ops", "--cost_weight=0.05"),
        ),
        Variant(
            "cost_0.15",
            "the default search with OPs in the architecture loss at weight 0.15",
            ("--cost=ops", "--cost_weight=0.15"),
        ),
        Variant(
            "capped",
            "the default search with at most 2 parameter-free ops per derived cell",
            ("--max_parameter_free=2",),
        ),
    )
}


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """What the study runs; the flagfiles hold the budget (data, epochs, sizes)."""

    output_dir: str
    work_dir: str
    search_flagfile: str
    train_flagfile: str
    teacher_flagfile: str | None = None
    variants: tuple[str, ...] = tuple(VARIANTS)
    seeds: tuple[int, ...] = (0, 1)
    random_seeds: tuple[int, ...] = (0, 1, 2, 3)

    def __post_init__(self):
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ConfigError(
                "variants", f"unknown {', '.join(unknown)} (from {', '.join(VARIANTS)})"
            )
        if "kd" in self.variants and not self.teacher_flagfile:
            raise ConfigError("teacher_flagfile", "required by the kd variant")


@dataclasses.dataclass(frozen=True)
class Run:
    variant: str
    seed: int

    @property
    def searched(self) -> bool:
        return VARIANTS[self.variant].search is not None

    def __str__(self) -> str:
        return f"{self.variant} seed {self.seed}"


def plan(cfg: StudyConfig) -> list[Run]:
    """Every run of the study: searched variants over ``seeds``, random over ``random_seeds``.

    Round-robin over the variants (every variant's first seed, then every second one), so a
    study cut short still compares them all.
    """
    per_variant = [
        [
            Run(name, s)
            for s in (cfg.seeds if VARIANTS[name].search is not None else cfg.random_seeds)
        ]
        for name in cfg.variants
    ]
    rounds = max(len(runs) for runs in per_variant)
    return [runs[k] for k in range(rounds) for runs in per_variant if k < len(runs)]


def _script(name: str) -> list[str]:
    """The command line of a script of the checkout, else of its installed command module."""
    path = os.path.join(SCRIPTS, name)
    if os.path.isfile(path):
        return [sys.executable, path]
    return [sys.executable, "-m", f"bats_tf.commands.{os.path.splitext(name)[0]}"]


def _fill(flags: Sequence[str], teacher: str | None) -> list[str]:
    return [f.replace(TEACHER, teacher or "") for f in flags]


class Study:
    """Runs the plan of a :class:`StudyConfig`."""

    def __init__(self, cfg: StudyConfig, log: Callable[[str], None] = print):
        self.cfg, self.log = cfg, log
        self.runs = plan(cfg)

    # ------------------------------------------------------------------ paths and commands

    def light(self, run: Run) -> str:
        return os.path.join(self.cfg.output_dir, run.variant, str(run.seed))

    def heavy(self, *parts: str) -> str:
        return os.path.join(self.cfg.work_dir, *parts)

    def teacher_command(self) -> list[str]:
        out = self.heavy("teacher")
        return [
            *_script("train.py"),
            f"--flagfile={self.cfg.teacher_flagfile}",
            f"--output_dir={out}",
        ]

    def search_command(self, run: Run, teacher: str | None) -> list[str]:
        out = self.heavy(run.variant, str(run.seed), "search")
        extra = _fill(VARIANTS[run.variant].search, teacher)
        return [
            *_script("search.py"),
            f"--flagfile={self.cfg.search_flagfile}",
            *extra,
            f"--seed={run.seed}",
            f"--output_dir={out}",
        ]

    def train_command(
        self, run: Run, genotype: str, teacher: str | None, folder: str = "train"
    ) -> list[str]:
        out = self.heavy(run.variant, str(run.seed), folder)
        return [
            *_script("train.py"),
            f"--flagfile={self.cfg.train_flagfile}",
            *_fill(VARIANTS[run.variant].train, teacher),
            f"--genotype={genotype}",
            f"--seed={run.seed}",
            f"--output_dir={out}",
        ]

    # ------------------------------------------------------------------------------ running

    def check_output_dir(self, record: bool = True) -> None:
        """Records the study's config (with ``record``), or checks it is the one already
        there; a folder holding something else than a study is refused."""
        path = os.path.join(self.cfg.output_dir, CONFIG_FILE)
        wanted = {
            k: v
            for k, v in json.loads(json.dumps(dataclasses.asdict(self.cfg))).items()
            if k not in ("variants", "seeds", "random_seeds", "work_dir")  # may grow
        }
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                found = json.load(f)
            if wanted["teacher_flagfile"] is None:  # no kd run planned: any teacher agrees
                del wanted["teacher_flagfile"]
            diff = sorted(k for k in wanted if found.get(k) != wanted[k])
            if diff:
                raise ConfigError(
                    "output_dir",
                    f"holds a study with other settings ({', '.join(diff)}); use a new output_dir",
                    self.cfg.output_dir,
                )
            return
        work = os.path.relpath(
            os.path.abspath(self.cfg.work_dir), os.path.abspath(self.cfg.output_dir)
        )
        others = [
            n
            for n in (os.listdir(self.cfg.output_dir) if os.path.isdir(self.cfg.output_dir) else [])
            if n != work and not n.startswith(".")
        ]
        if others:
            raise ConfigError(
                "output_dir",
                f"not empty and not a study (holds {', '.join(sorted(others)[:3])}); use a new "
                "output_dir",
                self.cfg.output_dir,
            )
        if record:
            atomic_write_json(path, wanted)

    def run(self) -> dict:
        """Runs every unfinished run, writing the summary after each; returns the summary."""
        self.check_output_dir()
        done = {r: self.result(r) for r in self.runs}
        if self.backfill(done):
            write_summary(self.cfg.output_dir, read_results(self.cfg.output_dir))
        todo = [r for r in self.runs if done[r] is None]
        self.log(f"study: {len(self.runs)} runs, {len(self.runs) - len(todo)} done before")
        teacher = None
        for run in todo:
            began = time.time()
            if run.variant == "kd" and teacher is None:
                teacher = self.teacher()
            done[run] = self.run_one(run, teacher)
            finished = [r for r in done.values() if r is not None]
            left = [r for r in todo if done[r] is None]
            write_summary(self.cfg.output_dir, read_results(self.cfg.output_dir))
            self.log(
                f"[{len(finished)}/{len(self.runs)}] {run}: val top-1 {done[run]['val_top1']:.2%}, "
                f"{done[run]['parameter_free_normal']} parameter-free ops in the normal cell, "
                f"{(time.time() - began) / 60:.1f} min; study ETA {_eta(finished, left)}"
            )
        return summarize(read_results(self.cfg.output_dir))  # written after each run

    def backfill(self, done: dict) -> bool:
        """Adds to finished runs' results what older code left out: the LCE latency, and
        what a cap on parameter-free ops changed; whether it added anything."""
        missing = [r for r, result in done.items() if result is not None and LATENCY not in result]
        for k, run in enumerate(missing):
            result = done[run]
            genotype = Genotype.from_dict(result["genotype"])
            result.update(lce_latency(genotype, result["configs"]["train"]))
            atomic_write_json(os.path.join(self.light(run), RESULT_FILE), result)
            self.log(f"study: [{k + 1}/{len(missing)}] {run}: LCE {result[LATENCY]:.2f} ms")
        changed = bool(missing)
        for run, result in done.items():
            if result is None or not run.searched:
                continue
            self.keep_alphas(run)
            if not result["configs"]["search"].get("max_parameter_free"):
                continue
            added = {}
            if "uncapped_genotype" not in result:
                added.update(self.cap_effect(run, result))
                self.log(f"study: {run}: the cap changed {added['cap_changed_edges']} edges")
            if "uncapped_val_top1" not in result:
                added.update(self.train_uncapped(run, {**result, **added}))
            if added:
                changed = True
                result.update(added)
                atomic_write_json(os.path.join(self.light(run), RESULT_FILE), result)
        return changed

    def keep_alphas(self, run: Run) -> None:
        """Copies the search's final alphas next to its result (if not there yet and the
        search's folder still holds them)."""
        light = os.path.join(self.light(run), ALPHAS_FILE)
        heavy = self.heavy(run.variant, str(run.seed), "search", ALPHAS_FILE)
        if not os.path.exists(light) and os.path.exists(heavy):
            atomic_write_json(light, _read_json(heavy))

    def train_uncapped(self, run: Run, result: dict) -> dict:
        """Trains the genotype the capped run's alphas give without the cap, as the capped
        one was trained (the pair differs in the cap alone); nothing to train where the cap
        changed no edge."""
        if not result["cap_changed_edges"]:
            return {"uncapped_val_top1": result["val_top1"]}
        self.log(f"study: {run}: training the uncapped twin")
        path = self.heavy(run.variant, str(run.seed), "uncapped_genotype.json")
        Genotype.from_dict(result["uncapped_genotype"]).save(path)
        cmd = self.train_command(run, path, None, folder="train_uncapped")
        seconds = self._timed(cmd, self.heavy(run.variant, str(run.seed), "train_uncapped.log"))
        trained = _read_json(
            self.heavy(run.variant, str(run.seed), "train_uncapped", "metrics.json")
        )
        self.log(f"study: {run}: the uncapped twin reached {trained['top1']:.2%}")
        return {
            "uncapped_val_top1": trained["top1"],
            "uncapped_train_seconds": round(seconds, 1),
            "commands": {**result["commands"], "train_uncapped": _portable(cmd)},
        }

    def cap_effect(self, run: Run, result: dict) -> dict:
        """What ``--max_parameter_free`` changed: the genotype the same alphas give without
        the cap, how many edges differ, and that genotype's OPs in the trained network."""
        from bats_tf import metrics

        genotype = Genotype.from_dict(result["genotype"])
        alphas = _read_json(os.path.join(self.light(run), ALPHAS_FILE))
        uncapped = derive_from_alphas(alphas, genotype.search_space, deployable=genotype.deployable)
        edges = zip(genotype.normal + genotype.reduce, uncapped.normal + uncapped.reduce)
        model = trained_network(uncapped, result["configs"]["train"])
        return {
            "uncapped_genotype": uncapped.to_dict(),
            "cap_changed_edges": sum(a != b for a, b in edges),
            "uncapped_ops": metrics.complexity(model)["ops"],
        }

    def result(self, run: Run) -> dict | None:
        path = os.path.join(self.light(run), RESULT_FILE)
        return _read_json(path) if os.path.exists(path) else None

    def teacher(self) -> str:
        """The real-valued teacher of the kd variant, trained once for the whole study."""
        path = self.heavy("teacher", "model.keras")
        if not os.path.exists(path):
            self.log("study: training the kd teacher")
            self._timed(self.teacher_command(), self.heavy("teacher.log"))
        return path

    def run_one(self, run: Run, teacher: str | None) -> dict:
        light = self.light(run)
        commands, configs = {}, {}
        if run.searched:
            self.log(f"study: {run}: searching")
            commands["search"] = self.search_command(run, teacher)
            search_dir = self.heavy(run.variant, str(run.seed), "search")
            search_seconds = self._timed(
                commands["search"], self.heavy(run.variant, str(run.seed), "search.log")
            )
            genotype_path = os.path.join(search_dir, "genotype.json")
            configs["search"] = _read_json(os.path.join(search_dir, "search_config.json"))
            genotype = Genotype.load(genotype_path)
        else:
            from bats_tf.network import random_genotype  # TensorFlow loads only here

            genotype, search_seconds = random_genotype(run.seed), 0.0
            genotype_path = os.path.join(self.heavy(run.variant, str(run.seed)), "genotype.json")
            genotype.save(genotype_path)
        self.log(f"study: {run}: training {genotype}")
        commands["train"] = self.train_command(run, genotype_path, teacher)
        train_dir = self.heavy(run.variant, str(run.seed), "train")
        train_seconds = self._timed(
            commands["train"], self.heavy(run.variant, str(run.seed), "train.log")
        )
        trained = _read_json(os.path.join(train_dir, "metrics.json"))
        configs["train"] = trained["config"]
        free = parameter_free_ops(genotype)
        latency = lce_latency(genotype, trained["config"])
        if run.searched:
            self.keep_alphas(run)
        result = {
            "variant": run.variant,
            "seed": run.seed,
            "genotype": genotype.to_dict(),
            "val_top1": trained["top1"],
            "val_top5": trained["top5"],
            "val_loss": trained["loss"],
            "val_examples": trained["val_examples"],
            "params": trained["params"],
            "bops": trained["bops"],
            "flops": trained["flops"],
            "ops": trained["ops"],
            **latency,
            "parameter_free_normal": free["normal"],
            "parameter_free_reduce": free["reduce"],
            "search_seconds": round(search_seconds, 1),
            "train_seconds": round(train_seconds, 1),
            "commands": {k: _portable(v) for k, v in commands.items()},
            "commit": code_commit(),
            "configs": configs,
        }
        if configs.get("search", {}).get("max_parameter_free"):
            result.update(self.cap_effect(run, result))
            result.update(self.train_uncapped(run, result))
        genotype.save(os.path.join(light, "genotype.json"))
        from bats_tf.visualize import write_cell_diagrams

        write_cell_diagrams(genotype, light)
        atomic_write_json(os.path.join(light, RESULT_FILE), result)  # last: marks it done
        return result

    def _timed(self, cmd: list[str], log_path: str) -> float:
        """Runs ``cmd``; returns the seconds it took, summed over resumed attempts."""
        times_path = log_path + ".seconds"
        spent = float(_read_text(times_path) or 0.0)
        began = time.time()
        run_logged(cmd, log_path)
        spent += time.time() - began
        atomic_write_text(times_path, f"{spent:.1f}\n")
        return spent


def lce_latency(genotype: Genotype, train_config: dict, runs: int = LATENCY_RUNS) -> dict:
    """The LCE latency of the network a training config builds from ``genotype`` (batch 1,
    1 thread, the fastest of 5 medians of ``runs``; :func:`bats_tf.export.network_latency_ms`),
    and where."""
    from bats_tf import export
    from bats_tf.latency import device

    model = trained_network(genotype, train_config)
    return {LATENCY: round(export.network_latency_ms(model, runs), 3), "latency_device": device()}


def trained_network(genotype: Genotype, train_config: dict):
    """The (untrained) network a training config builds from ``genotype``."""
    from bats_tf import data, network

    _, info = data.load_split(
        train_config["dataset"], train_config["split"], train_config["data_dir"]
    )
    kwargs = {k: train_config[k] for k in NETWORK_SETTINGS if k in train_config}
    return network.build_network(genotype, info.num_classes, info.image_size, **kwargs)


def run_logged(cmd: list[str], log_path: str) -> None:
    """Runs ``cmd`` with its output appended to ``log_path``; raises StudyError if it fails.

    The command dies with the study (on Linux): a study killed at any moment leaves no search
    or training running on in the background, holding its folder's lock.
    """
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    parent = os.getpid()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        code = subprocess.run(
            cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=lambda: _die_with(parent)
        ).returncode
    if code in (130, 143):
        raise KeyboardInterrupt
    if code:
        with open(log_path, encoding="utf-8") as f:
            errors = [line.strip() for line in f if line.startswith("error:")]
        reason = errors[-1] if errors else f"exit {code}"
        name = cmd[2] if cmd[1] == "-m" else os.path.basename(cmd[1])
        raise StudyError(f"{name} failed ({reason}); see {log_path}")


def _die_with(parent: int) -> None:
    """In a child process: asks the kernel for SIGKILL when ``parent`` dies (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the study died before the request was made
        os.kill(os.getpid(), signal.SIGKILL)


def code_commit() -> str | None:
    """The git commit of the code that ran (None outside a git checkout): every run of one
    study should come from the same code."""
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=SCRIPTS, capture_output=True, text=True
        )
    except OSError:
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def _portable(cmd: list[str]) -> str:
    """A command as a user would type it: ``python scripts/x.py ...`` from the repository."""
    script = os.path.relpath(cmd[1], os.path.dirname(SCRIPTS))
    return " ".join(["python", script, *cmd[2:]])


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read_text(path: str) -> str | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def _eta(finished: list[dict], left: list[Run]) -> str:
    """Time for the runs left, from the mean search and training times so far."""
    searches = [r["search_seconds"] for r in finished if r["search_seconds"] > 0]
    trainings = [r["train_seconds"] for r in finished]
    if not left:
        return "done"
    if not trainings or (any(r.searched for r in left) and not searches):
        return "unknown"
    seconds = sum(_mean(trainings) + (_mean(searches) if r.searched else 0.0) for r in left)
    return f"{seconds / 3600:.1f} h ({len(left)} runs)"


# ------------------------------------------------------------------------------- summary


SUMMARY_KEYS = (
    "val_top1", "val_top5", "parameter_free_normal", "parameter_free_reduce", "params", "bops",
    "ops", LATENCY, "search_seconds", "train_seconds", "cap_changed_edges", "uncapped_ops",
    "uncapped_val_top1",
)  # fmt: skip


def summarize(results: Sequence[dict]) -> dict:
    """Per variant: every seed's figures, and their mean and sample standard deviation."""
    variants = {}
    for name in VARIANTS:
        rows = sorted((r for r in results if r["variant"] == name), key=lambda r: r["seed"])
        if not rows:
            continue
        entry = {"description": VARIANTS[name].description, "seeds": [r["seed"] for r in rows]}
        for key in SUMMARY_KEYS:
            values = [r[key] for r in rows if key in r]
            if len(values) == len(rows):
                entry[key] = {"values": values, "mean": _mean(values), "std": _std(values)}
        variants[name] = entry
    return {"runs": len(results), "variants": variants}


def read_results(output_dir: str) -> list[dict]:
    """Every finished run's result in a study's folder, planned this time or not."""
    results = []
    for variant in VARIANTS:
        pattern = os.path.join(output_dir, glob.escape(variant), "*", RESULT_FILE)
        results += sorted((_read_json(p) for p in glob.glob(pattern)), key=lambda r: r["seed"])
    return results


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _std(xs: Sequence[float]) -> float:
    if len(xs) < 2:
        return float("nan")
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def summary_markdown(summary: dict) -> str:
    """The summary as a Markdown table: mean +- std over seeds, then every seed's value."""
    lines = [
        "| variant | runs | val top-1 (mean ± std) | val top-1 per seed | parameter-free ops, "
        "normal cell (per seed) | params | OPs | LCE ms | search min | train min |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, v in summary["variants"].items():
        top1 = v["val_top1"]
        per_seed = ", ".join(f"{s}: {x:.1%}" for s, x in zip(v["seeds"], top1["values"]))
        free = ", ".join(str(x) for x in v["parameter_free_normal"]["values"])
        std = "" if math.isnan(top1["std"]) else f" ± {top1['std']:.1%}"
        ops = f"{v['ops']['mean'] / 1e6:.1f}M" if "ops" in v else "-"
        lce = f"{v[LATENCY]['mean']:.1f}" if LATENCY in v else "-"
        lines.append(
            f"| {name} | {len(v['seeds'])} | {top1['mean']:.1%}{std} | {per_seed} | {free} | "
            f"{v['params']['mean'] / 1e6:.2f}M | {ops} | {lce} | "
            f"{v['search_seconds']['mean'] / 60:.0f} | {v['train_seconds']['mean'] / 60:.0f} |"
        )
    for name, v in summary["variants"].items():
        if "cap_changed_edges" in v:
            changed = ", ".join(
                f"{s}: {x}" for s, x in zip(v["seeds"], v["cap_changed_edges"]["values"])
            )
            ops = ", ".join(
                f"{s}: {u / 1e6:.1f}M -> {c / 1e6:.1f}M"
                for s, u, c in zip(v["seeds"], v["uncapped_ops"]["values"], v["ops"]["values"])
            )
            top1 = ", ".join(
                f"{s}: {u:.1%} -> {c:.1%}"
                for s, u, c in zip(
                    v["seeds"], v["uncapped_val_top1"]["values"], v["val_top1"]["values"]
                )
            )
            lines.append(
                f"\n{name}: edges the cap changed (per seed) {changed}; without -> with the "
                f"cap, from the same alphas: OPs {ops}; val top-1 {top1}."
            )
    return "\n".join(lines) + "\n"


def front_plot(results: Sequence[dict]) -> bytes:
    """PNG: validation top-1 against OPs and against LCE latency, one point per run, one
    colour per variant (the accuracy/cost front)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    names = [n for n in VARIANTS if any(r["variant"] == n for r in results)]
    for i, name in enumerate(names):
        rows = [r for r in results if r["variant"] == name]
        top1 = [100 * r["val_top1"] for r in rows]
        marker = "x" if VARIANTS[name].search is None else "o"
        for ax, key, scale in ((axes[0], "ops", 1e-6), (axes[1], LATENCY, 1.0)):
            pairs = [(r[key] * scale, t) for r, t in zip(rows, top1) if key in r]
            if pairs:
                ax.scatter(*zip(*pairs), s=30, color=f"C{i}", marker=marker, label=name)
    axes[0].set_xlabel("OPs = BOPs/64 + FLOPs (millions)")
    axes[1].set_xlabel("LCE latency, batch 1, 1 thread (ms)")
    axes[0].set_ylabel("validation top-1 (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Accuracy against cost: {len(results)} runs, one point each (x: random cells)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def summary_plot(summary: dict) -> bytes:
    """PNG: validation top-1 per variant (one dot per seed, bar at the mean) and, beside it,
    the parameter-free op count of each normal cell."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(summary["variants"])
    fig = Figure(figsize=(10, 4), dpi=110)
    FigureCanvasAgg(fig)
    ax_acc, ax_free = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for i, name in enumerate(names):
        v = summary["variants"][name]
        for ax, key, scale in ((ax_acc, "val_top1", 100.0), (ax_free, "parameter_free_normal", 1)):
            values = [x * scale for x in v[key]["values"]]
            offsets = [(k - (len(values) - 1) / 2) * 0.08 for k in range(len(values))]
            ax.scatter([i + o for o in offsets], values, s=24, color=f"C{i}", zorder=3)
            ax.hlines(v[key]["mean"] * scale, i - 0.3, i + 0.3, color=f"C{i}", lw=2)
    for ax, label in (
        (ax_acc, "validation top-1 (%)"),
        (ax_free, "parameter-free ops, normal cell"),
    ):
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    ax_free.set_ylim(-0.5, 8.5)
    runs = summary["runs"]
    fig.suptitle(f"{runs} run{'s' * (runs != 1)}: one dot per seed, bar at the mean")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_summary(output_dir: str, results: Sequence[dict]) -> dict:
    """``summary.json``, ``summary.md``, ``summary.png`` and ``front.png`` of the finished
    runs."""
    summary = summarize(results)
    if not summary["variants"]:
        return summary
    from bats_tf.io_utils import atomic_write_bytes

    atomic_write_json(os.path.join(output_dir, "summary.json"), summary)
    atomic_write_text(os.path.join(output_dir, "summary.md"), summary_markdown(summary))
    atomic_write_bytes(os.path.join(output_dir, "summary.png"), summary_plot(summary))
    atomic_write_bytes(os.path.join(output_dir, "front.png"), front_plot(results))
    return summary
