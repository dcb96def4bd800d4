"""The Bazel BUILD file stays in step with the tree: every module, script and test listed."""

import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _targets():
    """(rule, kwargs) of every call in BUILD, read as Python syntax (Starlark is a subset)."""
    with open(os.path.join(ROOT, "BUILD"), encoding="utf-8") as f:
        tree = ast.parse(f.read(), "BUILD")
    calls = [n.value for n in tree.body if isinstance(n, ast.Expr)]
    out = []
    for call in calls:
        kwargs = {
            k.arg: ast.literal_eval(k.value)
            for k in call.keywords
            if k.arg in ("name", "srcs", "main")
        }
        out.append((call.func.id, kwargs))
    return out


def _listed(rule, name=None):
    return {
        src
        for r, kw in _targets()
        if r == rule and name in (None, kw["name"])
        for src in kw.get("srcs", [])
    }


def _files(pattern):
    return {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern))}


def test_library_lists_every_module():
    modules = _files("bats_tf/*.py") | _files("bats_tf/commands/*.py")
    assert _listed("py_library", "bats_tf") == modules
    assert _listed("py_library", "benchmarks") == _files("benchmarks/*.py")
    assert {kw["name"] for r, kw in _targets() if r == "py_library"} == {"bats_tf", "benchmarks"}


def test_every_script_has_a_binary():
    assert _listed("py_binary") == _files("scripts/*.py")


def test_every_test_file_has_a_test_target():
    assert _listed("py_test") == _files("tests/test_*.py")


def test_target_names_are_unique_and_match_files():
    names = [kw["name"] for _, kw in _targets()]
    assert len(names) == len(set(names))
    for rule, kw in _targets():
        if rule in ("py_binary", "py_test"):
            assert kw["srcs"] == [kw["main"]]
            assert kw["name"] == os.path.splitext(os.path.basename(kw["main"]))[0]
