"""The package's layers read top to bottom: no module imports a layer above its own, no cycles.

core (config, errors, text, tokenizer, model, checkpoint, ...) -> data -> training | inference ->
application (cli, console, compare, report, the public API). Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import rnn_sentiment

PACKAGE = Path(rnn_sentiment.__file__).parent
APPLICATION = {"api", "cli", "console", "compare", "report", "serving", "__init__", "__main__"}
LAYERS = {"core": 0, "data": 1, "training": 2, "inference": 2, "application": 3}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in APPLICATION:
        return "application"
    if parts[1] in ("data", "training", "inference"):
        return parts[1]
    return "core"


def imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                base = node.module
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
        # `from rnn_sentiment import train` loads the module the public name lives in.
        found |= {rnn_sentiment._EXPORTS[m.split(".")[1]] for m in found if _exported(m)}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _exported(name: str) -> bool:
    parts = name.split(".")
    return len(parts) == 2 and parts[0] == "rnn_sentiment" and parts[1] in rnn_sentiment._EXPORTS


def test_no_module_imports_a_layer_above_its_own() -> None:
    wrong = [
        f"{name} ({layer_of(name)}) imports {target} ({layer_of(target)})"
        for name, targets in imports().items()
        for target in targets
        if target != "rnn_sentiment" and LAYERS[layer_of(target)] > LAYERS[layer_of(name)]
    ]
    assert not wrong, "\n".join(wrong)


def test_training_and_inference_do_not_import_each_other() -> None:
    graph = imports()
    crossing = [
        f"{name} imports {target}"
        for name, targets in graph.items()
        for target in targets
        if {layer_of(name), layer_of(target)} == {"training", "inference"}
    ]
    assert not crossing, "\n".join(crossing)


def test_no_import_cycles() -> None:
    graph = imports()
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state and node != "rnn_sentiment":
            visit(node, [node])
    cycles = [
        c for c in cycles if "rnn_sentiment ->" not in c and not c.endswith("-> rnn_sentiment")
    ]
    assert not cycles, "\n".join(cycles)
