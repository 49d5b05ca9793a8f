"""The task protocol: both tasks implement all of it, and the loop and CLI use nothing else."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from seqlab.tasks import Task, get_task
from seqlab.errors import ConfigError

MEMBERS = [name for name, _ in inspect.getmembers(Task) if not name.startswith("_")] + \
    list(Task.__annotations__)


@pytest.mark.parametrize("name", ["ner", "qa"])
def test_every_task_implements_the_protocol(name):
    cls = get_task(name)
    missing = [m for m in MEMBERS if not hasattr(cls, m) and m != "tokenizer"]
    assert not missing, missing


def test_unknown_task():
    with pytest.raises(ConfigError, match="task: expected one of ner, qa"):
        get_task("pos")


def test_loop_and_cli_know_no_task():
    root = Path(__file__).parents[1] / "seqlab"
    for module in ("train.py", "cli.py"):
        text = (root / module).read_text()
        assert "tasks.ner" not in text and "tasks.qa" not in text, module
        assert '== "qa"' not in text and '== "ner"' not in text, module
