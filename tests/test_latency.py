"""The per-op LCE latency table: real measurements on a few small shapes, the file as a cache,
its errors, the cost table built from it, and bats-latency-table end to end.

No assertion compares two timings (they depend on the machine's load): figures are checked
for being finite, >= 0, and > 0 for convolutions.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from bats_tf import cost, latency
from bats_tf.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE = "bats"
STRIDE1 = cost.EdgeShape(32, 8, 1, 1)  # LCE binarizes its convs (32 channels per group)
STRIDE2 = cost.EdgeShape(32, 8, 2, 1)
CONVS = ("group_conv_3x3", "group_conv_5x5", "dil_group_conv_3x3", "dil_group_conv_5x5")
RUNS = 20
DEVICE = "test device"
TINY_SEARCH = [  # tests/conftest.py tiny_search_config, as flags
    "--dataset=folder",
    "--init_channels=4",
    "--layers=3",
    "--nodes=2",
    "--groups=2",
]


@pytest.fixture(scope="module")
def measured():
    """Entries of the BATS space at one stride-1 shape (6 ops)."""
    return latency.measure(SPACE, [STRIDE1], runs=RUNS)


def _write_table(path, content, device=DEVICE, **changes):
    table = {
        "format": latency.FORMAT,
        "schema_version": latency.SCHEMA_VERSION,
        "unit": "ms",
        "device": device,
        "threads": 1,
        "entries": content,
        **changes,
    }
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(table))  # allow_nan: NaN and Infinity are written as such
    return str(path)


def test_entries_are_finite_and_keyed_by_edge_shape(measured):
    assert sorted(measured) == sorted(latency.needed_keys(SPACE, [STRIDE1]))
    expected = {STRIDE1.key(op) for op in ("max_pool_3x3", "avg_pool_3x3", *CONVS)}
    assert set(measured) == expected  # none and a skip at stride 1 have no entry
    assert all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in measured.values())
    assert all(measured[STRIDE1.key(op)] > 0 for op in CONVS)


def test_needed_keys_of_a_search_skip_the_ops_that_cost_nothing():
    shapes = cost.edge_shapes(16, 4, 3, 2, 2)
    keys = latency.needed_keys(SPACE, shapes)
    distinct = cost.distinct_shapes(shapes)
    assert keys == latency.needed_keys(SPACE, distinct)  # a dict or its shapes
    assert len(keys) == len(set(keys))
    for shape in distinct:
        assert shape.key("none") not in keys
        assert (shape.key("skip_connect") in keys) == (shape.stride == 2)
        assert all(shape.key(op) in keys for op in CONVS)


def test_the_file_is_a_cache(measured, tmp_path):
    path = str(tmp_path / "latency.json")
    latency.save(path, measured, DEVICE)
    assert latency.load(path) == measured
    lines = []
    again = latency.measure(SPACE, [STRIDE1], known=latency.load(path), progress=lines.append)
    assert again == {} and lines == []  # nothing measured twice
    both = [STRIDE1, STRIDE2]
    new = latency.measure(SPACE, both, known=latency.load(path), runs=RUNS, progress=lines.append)
    assert set(new) == set(latency.needed_keys(SPACE, [STRIDE2]))  # the new shape only
    assert STRIDE2.key("skip_connect") in new and len(lines) == len(new)
    assert all(math.isfinite(v) and v >= 0 for v in new.values())
    latency.save(path, new, DEVICE)
    table = latency.load(path, latency.needed_keys(SPACE, both))
    assert table == {**measured, **new}  # the old entries kept as they were
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["format"] == "bats-tf/latency-table" and saved["schema_version"] == 1
    assert (saved["unit"], saved["device"], saved["threads"]) == ("ms", DEVICE, 1)


def test_save_refuses_a_table_of_another_device_and_bad_figures(tmp_path):
    path = _write_table(tmp_path / "phone.json", {"a": 1.0}, device="Pixel 7")
    with pytest.raises(ConfigError, match="measured on 'Pixel 7', not on this device"):
        latency.save(path, {"b": 1.0}, "AMD EPYC")
    with pytest.raises(ConfigError, match="finite number"):
        latency.save(path, {"b": float("nan")}, "Pixel 7")
    assert latency.load(path) == {"a": 1.0}  # left as it was


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file; measure one with bats-latency-table"),
        ("{", "not JSON (Expecting property name"),
        ('{"format": "something else"}', "not a latency table (format 'something else'"),
        ("[1, 2]", "not a latency table (format 'list'"),
        (dict(schema_version=2), "schema_version 2; this bats-tf reads 1"),
        (dict(unit="us"), "unit 'us'; expected 'ms'"),
        (dict(entries=[1.0]), "no 'entries' object"),
        (dict(entries={"k": float("nan")}), "entry k: nan is not a finite number of ms >= 0"),
        (dict(entries={"k": float("inf")}), "entry k: inf is not a finite number"),
        (dict(entries={"k": -0.5}), "entry k: -0.5 is not a finite number of ms >= 0"),
        (dict(entries={"k": "1.0"}), "entry k: '1.0' is not a finite number"),
        (dict(entries={"k": True}), "entry k: True is not a finite number"),
    ],
)
def test_a_bad_file_is_a_one_line_error_of_latency_table(tmp_path, content, message):
    path = str(tmp_path / "latency.json")
    if isinstance(content, str):
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
    elif isinstance(content, dict):
        _write_table(path, {"k": 1.0}, **content)
    with pytest.raises(ConfigError) as caught:
        latency.load(path)
    error = caught.value
    assert error.param == "latency_table" and error.value == path
    assert message in error.message and "\n" not in str(error), error.message


def test_missing_entries_are_counted_and_named(tmp_path):
    needed = latency.needed_keys(SPACE, [STRIDE1, STRIDE2])
    path = _write_table(tmp_path / "latency.json", {k: 1.0 for k in needed[2:]})
    assert latency.load(path) == {k: 1.0 for k in needed[2:]}  # no keys asked: any table
    with pytest.raises(ConfigError) as caught:
        latency.load(path, needed)
    text = caught.value.message
    assert f"lacks 2 of the {len(needed)} entries this search needs" in text
    assert f"({needed[0]}, {needed[1]})" in text and "bats-latency-table" in text
    path = _write_table(tmp_path / "empty.json", {})
    with pytest.raises(ConfigError, match=rf"lacks {len(needed)} of .*{needed[2]}, \.\.\.\)"):
        latency.load(path, needed)


def test_the_cost_table_of_a_measured_file(measured, tmp_path):
    new = latency.measure(SPACE, [STRIDE2], runs=RUNS)
    path = str(tmp_path / "latency.json")
    latency.save(path, {**measured, **new}, DEVICE)
    shapes = {"normal": [[STRIDE1, STRIDE1]], "reduce": [[STRIDE2, STRIDE2]]}  # nodes=1
    table = cost.latency_table(
        SPACE, shapes, latency.load(path, latency.needed_keys(SPACE, shapes))
    )
    ops = list(table.primitives)
    normal, reduce = table.table
    assert table.kind == "latency" and table.table.shape == (2, 2, len(ops))
    assert np.all(np.isfinite(table.table)) and np.all(table.table >= 0)
    assert np.all(normal[:, ops.index("none")] == 0) and np.all(reduce[:, ops.index("none")] == 0)
    assert np.all(normal[:, ops.index("skip_connect")] == 0)
    for op in CONVS:
        assert np.all(normal[:, ops.index(op)] > 0) and np.all(reduce[:, ops.index(op)] > 0)
        assert normal[0, ops.index(op)] == measured[STRIDE1.key(op)]
    assert table.uniform > 0


def _command(*args):
    script = os.path.join(ROOT, "scripts", "latency_table.py")
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True)


def test_the_command_writes_a_loadable_table_and_models(tiny_folder, tmp_path):
    from bats_tf import export

    path, models = str(tmp_path / "latency.json"), str(tmp_path / "models")
    flagfile = tmp_path / "search.cfg"
    flagfile.write_text("\n".join(TINY_SEARCH) + "\n")
    args = [f"--flagfile={flagfile}", f"--data_dir={tiny_folder}", "--runs=3"]
    result = _command(*args, f"--latency_table={path}", f"--models_dir={models}")
    assert result.returncode == 0, result.stderr[-3000:]
    needed = latency.needed_keys(SPACE, cost.edge_shapes(16, 4, 3, 2, 2))  # 16px images
    assert f"{len(needed)} entries needed, 0 in {path}, {len(needed)} to measure" in result.stdout
    assert f"[{len(needed)}/{len(needed)}] " in result.stdout
    assert result.stderr == "", result.stderr  # the converters' diagnostics kept quiet
    entries = latency.load(path, needed)
    assert set(entries) == set(needed)
    with open(path, encoding="utf-8") as f:
        assert json.load(f)["device"] == latency.device()
    with open(os.path.join(models, "models.json"), encoding="utf-8") as f:
        files = json.load(f)
    assert set(files) == set(needed)
    for key in (needed[0], needed[-1], cost.EdgeShape(8, 16, 2, 2).key("skip_connect")):
        with open(os.path.join(models, files[key]), "rb") as f:
            interpreter = export.lce_interpreter(f.read())
        size, channels = (
            int(key.split("/s")[1].split("/")[0]),
            int(key.split("/c")[1].split("/")[0]),
        )
        out = interpreter.predict(np.zeros((1, size, size, channels), np.float32))
        assert out.shape[-1] == channels and np.all(np.isfinite(out))
    # A rerun measures nothing; the table is left as it was.
    before = os.stat(path).st_mtime_ns
    again = _command(*args, f"--latency_table={path}", "--image_size=16")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{len(needed)} in {path}, 0 to measure" in again.stdout
    assert os.stat(path).st_mtime_ns == before and latency.load(path) == entries


def test_bad_input_is_one_line_exit_2_and_nothing_written(tiny_folder, tmp_path):
    base = [*TINY_SEARCH, f"--data_dir={tiny_folder}", "--image_size=16"]
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    phone = _write_table(tmp_path / "phone.json", {"k": 1.0}, device="Pixel 7")
    cases = [
        ([], "error: --latency_table is required"),
        ([f"--latency_table={broken}"], f"error: --latency_table={broken}: not JSON"),
        ([f"--latency_table={phone}"], "measured on 'Pixel 7', not on this device"),
        ([f"--latency_table={tmp_path}"], "a folder"),
        ([f"--latency_table={tmp_path / 'new.json'}", "--groups=3"], "--groups=3: does not"),
        ([f"--latency_table={tmp_path / 'new.json'}", f"--models_dir={broken}"], "not a folder"),
    ]
    before = sorted(os.listdir(tmp_path))
    for extra, message in cases:
        result = _command(*base, *extra)
        assert result.returncode == 2, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
    assert sorted(os.listdir(tmp_path)) == before and broken.read_text() == "{"


def test_help_shows_the_command_and_the_search_flags():
    result = _command("--help")
    assert result.returncode == 1  # absl's exit code after --help
    assert "bats-latency-table" in result.stdout.split("flags:")[0]
    for flag in ("--latency_table", "--models_dir", "--image_size", "--runs", "--init_channels"):
        assert f"{flag}:" in result.stdout
