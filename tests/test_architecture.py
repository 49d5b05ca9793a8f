"""The floor plan holds: no import circle between seqlab's modules (function-level imports
included), and nothing outside ``seqlab/tasks/`` decides by a task's name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "seqlab"


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """Each module's imports of other seqlab modules, at any depth of its code (a function's
    import counts: it runs when the function does), ``TYPE_CHECKING`` blocks left out."""
    mods = _modules()
    graph = {}
    for name, f in mods.items():
        tree = ast.parse(f.read_text(encoding="utf-8"))
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                for n in ast.walk(node)}
        pkg = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                for a in node.names:
                    deps.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def _a_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            # a package's __init__ importing its own submodules (registration) is no layer
            if d.startswith(n + "."):
                continue
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_modules_import_each_other_without_a_circle():
    graph = import_graph()
    assert "seqlab.assemble" in graph["seqlab.cli"] or graph  # the graph was drawn
    assert _a_cycle(graph) is None, " -> ".join(_a_cycle(graph))
    # the layers the architecture page draws
    assert not any(d.startswith("seqlab.tasks") for d in graph["seqlab.config"])
    assert "seqlab.train" not in graph["seqlab.study.grid"]
    assert "seqlab.report" not in graph["seqlab.train"]


# docs/architecture.md, "What each module may import": what each never imports
COMMANDS = ("seqlab.cli", "seqlab.serve", "seqlab.bulk", "seqlab.api", "seqlab.hf")
LOOP = ("seqlab.train", "seqlab.rundir", "seqlab.card", "seqlab.report")
NEVER = {
    **{m: ("seqlab.data", "seqlab.readers", "seqlab.losses", "seqlab.heads", "seqlab.tasks",
           "seqlab.assemble", *LOOP, "seqlab.study", *COMMANDS)
       for m in ("seqlab.config", "seqlab.registry", "seqlab.files", "seqlab.metrics",
                 "seqlab.figures")},
    **{m: ("seqlab.heads", "seqlab.tasks", "seqlab.assemble", *LOOP, *COMMANDS)
       for m in ("seqlab.data", "seqlab.readers", "seqlab.losses", "seqlab.page",
                 "seqlab.study.stats")},
    "seqlab.heads": ("seqlab.tasks", "seqlab.assemble", *LOOP, "seqlab.study", *COMMANDS),
    "seqlab.tasks": ("seqlab.assemble", *LOOP, "seqlab.study.grid", "seqlab.study.report",
                     *COMMANDS),
    "seqlab.assemble": (*LOOP, "seqlab.study", *COMMANDS),
    **{m: ("seqlab.study", *COMMANDS) for m in LOOP},
    "seqlab.study": ("seqlab.train", "seqlab.report", *COMMANDS),
}


def _inside(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_no_module_imports_what_its_layer_never_imports():
    graph = import_graph()
    found = []
    for prefix, never in NEVER.items():
        for module, deps in graph.items():
            if not _inside(module, prefix):
                continue
            found += [f"{module} imports {d}" for d in sorted(deps)
                      if any(_inside(d, n) for n in never) and not _inside(d, prefix)
                      and not (prefix == "seqlab.study" and d == "seqlab.study.stats")]
    for a in COMMANDS:  # commands import no other command (the CLI dispatches to them)
        if a != "seqlab.cli":
            found += [f"{a} imports {d}" for d in graph[a] if d in COMMANDS]
    assert not found, found


def test_a_circle_is_found_where_there_is_one():
    assert _a_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _a_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_outside_the_tasks_decides_by_a_tasks_name():
    decides = re.compile(r"""(==|!=|\bin)\s*\(?["'](ner|qa)["']|["'](ner|qa)["']\s*(==|!=)""")
    found = [f"{f.relative_to(PACKAGE.parent)}:{k}" for f in PACKAGE.rglob("*.py")
             if "tasks" not in f.relative_to(PACKAGE).parts
             for k, line in enumerate(f.read_text(encoding="utf-8").splitlines(), start=1)
             if decides.search(line)]
    assert not found, found


def test_a_runs_predictions_file_is_found_whatever_its_task_writes(tmp_path):
    from seqlab.errors import DataError
    from seqlab.tasks import Task
    from seqlab.tasks.ner_files import SpanFormat, TagFormat, format_of_file

    for name in ("predictions_test.argmax.conll", "predictions_dev.latest.conll",
                 "predictions_test.conll.gz", "predictions_testing.conll"):
        (tmp_path / name).write_text("x")
    assert Task.prediction_file(tmp_path, "test").name == "predictions_test.conll.gz"
    assert Task.prediction_file(tmp_path, "test", "argmax").name == "predictions_test.argmax.conll"
    assert Task.prediction_file(tmp_path, "dev") is None  # the latest epoch's is not the run's
    (tmp_path / "predictions_test.txt").write_text("x")   # a task's own extension, not gzipped
    assert Task.prediction_file(tmp_path, "test").name == "predictions_test.txt"
    assert format_of_file(tmp_path / "predictions_test.conll.gz") is TagFormat
    assert format_of_file(tmp_path / "predictions_test.jsonl") is SpanFormat
    with pytest.raises(DataError, match="expected .conll or .jsonl"):
        format_of_file(tmp_path / "predictions_test.txt")
