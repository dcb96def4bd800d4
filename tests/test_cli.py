"""The shared script helpers: who is the chief of a cluster, flag range checks."""

import json

import pytest
from absl import flags

from bats_tf import cli


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
    assert cli.is_chief("multi_worker") is chief
    assert cli.is_chief("mirrored") is True  # one machine: always the chief


def test_without_tf_config_every_process_is_the_chief(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cli.is_chief("multi_worker") and cli.is_chief("default")


def test_check_at_least_names_the_flag():
    fv = flags.FlagValues()
    flags.DEFINE_integer("epochs", 0, "", flag_values=fv)
    flags.DEFINE_float("lr", 1.5, "", flag_values=fv)
    fv(["prog"])
    saved = cli.FLAGS
    cli.FLAGS = fv
    try:
        cli.check_at_least(0, "epochs", "lr")
        with pytest.raises(cli.UsageError, match=r"^--epochs=0: must be at least 1$"):
            cli.check_at_least(1, "lr", "epochs")
    finally:
        cli.FLAGS = saved
