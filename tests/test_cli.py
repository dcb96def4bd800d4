"""Settings declared once, a library without flags, and the commands made from them."""

import dataclasses
import json
import math
import os
import re
import subprocess
import sys

import pytest
from absl import flags

from bats_tf import settings, strategy
from bats_tf.commands import common
from bats_tf.errors import ConfigError
from bats_tf.search_config import SearchConfig
from bats_tf.train_config import TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("search", "train", "evaluate", "export", "study", "demo", "plot", "latency_table")


@pytest.mark.parametrize(
    "cluster, task, chief",
    [
        ({"worker": ["a:1", "b:1"]}, ("worker", 0), True),
        ({"worker": ["a:1", "b:1"]}, ("worker", 1), False),
        ({"chief": ["c:1"], "worker": ["a:1"]}, ("chief", 0), True),
        ({"chief": ["c:1"], "worker": ["a:1"]}, ("worker", 0), False),
    ],
)
def test_chief_of_a_multi_worker_cluster(monkeypatch, cluster, task, chief):
    config = {"cluster": cluster, "task": {"type": task[0], "index": task[1]}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert strategy.is_chief("multi_worker") is chief
    assert strategy.is_chief("mirrored") is True  # one machine: always the chief


def test_without_tf_config_every_process_is_the_chief(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert strategy.is_chief("multi_worker") and strategy.is_chief("default")


def test_check_at_least_names_the_flag(monkeypatch):
    fv = flags.FlagValues()
    flags.DEFINE_integer("epochs", 0, "", flag_values=fv)
    flags.DEFINE_float("lr", 1.5, "", flag_values=fv)
    fv(["prog"])
    monkeypatch.setattr(common, "FLAGS", fv)
    common.check_at_least(0, "epochs", "lr")
    with pytest.raises(common.UsageError, match=r"^--epochs=0: must be at least 1$"):
        common.check_at_least(1, "lr", "epochs")


@pytest.mark.parametrize("cls", [SearchConfig, TrainConfig])
def test_defaults_are_valid_and_saved_with_the_same_fields(cls):
    config = cls(**({"data_dir": None} if cls is SearchConfig else {}))
    config.check()
    saved = dataclasses.asdict(config)
    assert list(saved) == [f.name for f in dataclasses.fields(cls)]
    if cls is SearchConfig:
        assert saved["temperature_final"] == saved["temperature"] == 0.2


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(epochs=0), "^epochs=0: must be at least 1$"),
        (dict(temperature=0.0), r"^temperature=0.0: must be in \(0, 100\)$"),
        (dict(w_momentum=1.0), r"^w_momentum=1.0: must be in \[0, 1\)$"),
        (dict(a_lr=-1.0), "^a_lr=-1.0: must be positive$"),
        (dict(w_lr=math.nan), "^w_lr=nan: must be a finite number$"),
        (dict(order="third"), "^order=third: must be one of <first|second>$"),
        (dict(warmup_epochs=50), r"^warmup_epochs=50: must be in \[0, epochs=50\)$"),
        (dict(init_channels=6), "^groups=4: does not divide init_channels=6$"),
        (dict(temperature_final=0.1), "^temperature_final=0.1: needs temperature_schedule"),
        (dict(temperature_schedule="linear"), "^temperature_schedule=linear: set temperature_"),
        (dict(w_lr_min=0.1), r"^w_lr_min=0.1: must be in \(0, w_lr=0.025\]$"),
        (dict(dataset="folder"), "^data_dir: required with dataset=folder$"),
        (dict(deployable=True), "^init_channels=16: too narrow for deployable .* is 32$"),
        (
            dict(deployable=True, init_channels=32, search_space="darts_binary"),
            "^deployable=True: LCE has no binary depthwise conv: BATS space only$",
        ),
        (dict(cost="latency"), "^latency_table: required by cost=latency$"),
        (dict(cost="flops"), "^cost=flops: must be one of <ops|bops|latency>$"),
        (dict(cost_weight=-1.0), "^cost_weight=-1.0: must be at least 0$"),
        (dict(max_parameter_free=9), "^max_parameter_free=9: at most 2 [*] nodes = 8$"),
    ],
)
def test_a_bad_search_config_names_the_parameter(change, message):
    with pytest.raises(ConfigError, match=message):
        SearchConfig(**change).check()


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(stages=(3,)), "^stages=3: must be one of <1,2|1|2>$"),
        (dict(init_channels=9, groups=1), "^init_channels=9: must be even$"),
        (dict(val_split="test", train_part="final_train"), "^train_part=final_train: "),
        (dict(drop_path=1.0), r"^drop_path=1.0: must be in \[0, 1\)$"),
        (dict(deployable=True), "^init_channels=36: too narrow for deployable .* is 32$"),
    ],
)
def test_a_bad_train_config_names_the_parameter(change, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**change).check()


def test_each_setting_becomes_a_flag_of_its_kind():
    fv = flags.FlagValues()
    common.define_flags(TrainConfig, flag_values=fv)
    assert "verbose" not in fv  # a setting of the library, not of the command line
    assert {f.name for f in settings.declared(TrainConfig)} - set(fv) == {"verbose"}
    assert fv["structure"].parser.enum_values == ["cifar", "imagenet"]
    assert fv["epochs"].parser.lower_bound == 1
    assert fv["lr"].parser.lower_bound is None  # lr > 0: checked by the config
    fv(["prog", "--stages=2", "--groups=2", "--noshortcut", "--lr=0"])
    with pytest.raises(ConfigError, match="^lr=0.0: must be positive$"):
        common.config_from_flags(TrainConfig, fv)
    fv["lr"].value = 0.1
    config = common.config_from_flags(TrainConfig, fv)
    assert (config.stages, config.groups, config.shortcut, config.lr) == ((2,), 2, False, 0.1)


def test_a_config_error_names_the_flag_and_its_value():
    flags.FLAGS(["prog"])  # the commands' flags, as parsed
    assert common.message(ConfigError("verbose", "not now", True)) == "--verbose=False: not now"
    assert common.message(ConfigError("nothing", "unknown")) == "nothing: unknown"


def test_a_preset_name_is_the_installed_flagfile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("demo_train")  # a folder of that name (e.g. a run's output) is not a flagfile
    path = os.path.join(common.PRESETS, "search_tiny.cfg")
    assert os.path.isfile(path)
    assert common.expand_presets(["p", "--flagfile=search_tiny", "--flagfile", "demo_train"]) == [
        "p",
        f"--flagfile={path}",
        f"--flagfile={os.path.join(common.PRESETS, 'demo_train.cfg')}",
    ]
    mine = str(tmp_path / "mine.cfg")
    assert common.expand_presets(["p", f"--flagfile={mine}"]) == ["p", f"--flagfile={mine}"]
    assert os.path.samefile(os.path.join(ROOT, "configs", "search_tiny.cfg"), path)


def test_the_library_defines_no_flag():
    """Importing the library in another absl program adds no flag (TensorFlow's own aside)."""
    code = (
        "import absl.logging, absl.flags, tensorflow, tensorflow_datasets, larq\n"
        "before = set(absl.flags.FLAGS)\n"
        "import bats_tf.search, bats_tf.training, bats_tf.network, bats_tf.study\n"
        "import bats_tf.fused_kernels, bats_tf.export\n"
        "import bats_tf.search_config, bats_tf.train_config\n"
        "assert set(absl.flags.FLAGS) == before, set(absl.flags.FLAGS) - before\n"
        "absl.flags.DEFINE_bool('verbose', False, 'a program of its own')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_config_modules_load_without_tensorflow_or_absl():
    code = (
        "import sys\n"
        "import bats_tf.search_config, bats_tf.train_config, bats_tf.errors, bats_tf.signals\n"
        "import bats_tf.strategy, bats_tf.settings, bats_tf.datasets\n"
        "assert not {'tensorflow', 'absl', 'absl.flags'} & set(sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_every_flag_of_the_command(command):
    script = os.path.join(ROOT, "scripts", f"{command}.py")
    args = [script] if os.path.exists(script) else ["-m", f"bats_tf.commands.{command}"]
    result = subprocess.run([sys.executable, *args, "--help"], capture_output=True, text=True)
    assert result.returncode == 1, result.stderr[-2000:]  # absl's exit code after --help
    shown = re.sub(r"--\[no\]", "--", result.stdout)
    assert f"bats-{command.replace('_', '-')}" in shown.split("flags:")[0]  # its docstring
    assert "--verbose:" in shown
    expected = {
        "search": ["--dataset", "--data_dir", "--split", "--epochs", "--output_dir", "--a_lr"],
        "train": ["--dataset", "--data_dir", "--split", "--stages", "--genotype", "--shortcut"],
        "evaluate": ["--model", "--dataset", "--part"],
        "export": ["--model", "--threads"],
        "study": ["--search_flagfile", "--variants"],
        "demo": ["--output_dir"],
        "plot": ["--genotype", "--output", "--cell"],
        "latency_table": ["--latency_table", "--models_dir", "--runs", "--init_channels"],
    }[command]
    assert all(f"{flag}:" in shown for flag in expected), shown
    assert "--logtostderr" not in shown  # absl's own flags stay in --helpfull


@pytest.mark.parametrize("verbose", [False, True])
def test_tensorflow_starts_quietly_unless_verbose(tmp_path, verbose):
    # bats_paper is a built-in name: drawing it loads TensorFlow.
    out = str(tmp_path / "cell.svg")
    args = ["--genotype=bats_paper", f"--output={out}"] + ["--verbose"] * verbose
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "bats_tf.commands.plot", *args],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.path.exists(str(tmp_path / "cell_normal.svg"))
    assert os.path.exists(str(tmp_path / "cell_reduce.svg"))
    # TensorFlow's C++ start-up lines (e.g. "I0000 ... port.cc:153] oneDNN ...") only on demand.
    assert (re.search(r"^[IWE]\d{4} ", result.stderr, re.M) is not None) == verbose, result.stderr
