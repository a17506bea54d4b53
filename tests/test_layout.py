"""The package's import graph: no cycles, and nothing imports upward.

    cli, apps, sweep, config  (Hydra: the edge)
      -> commands: train, sample, evaluate, summary, export
        -> everything else (build, models, step, data, checkpoint, metrics, evaluator, ...)
          -> nets, losses

Imports inside functions count too: a lazy import that goes upward is still a cycle.
"""
import ast
from pathlib import Path

import ganctl

PACKAGE = Path(ganctl.__file__).parent
EDGE = {"cli", "apps", "sweep", "config", "__main__"}
COMMANDS = {"train", "sample", "evaluate", "summary", "export"}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__") or "__init__"


def imports_of(path: Path) -> set[str]:
    """The ganctl modules (without the `ganctl.` prefix) that `path` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ganctl"):
            base = node.module.removeprefix("ganctl").lstrip(".")
            for alias in node.names:  # `from ganctl import train` names a module
                sub = f"{base}.{alias.name}" if base else alias.name
                found.add(sub if (PACKAGE / f"{sub.replace('.', '/')}.py").is_file() else base)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("ganctl.") for a in node.names if a.name.startswith("ganctl.")}
    return {m for m in found if m}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) - {module_name(p)} for p in PACKAGE.rglob("*.py")}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle():
    edges = graph()
    assert {"train", "models", "evaluator", "nets.dcgan"} <= set(edges)  # the walk sees the package
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_nothing_imports_upward():
    for module, imported in graph().items():
        if module in EDGE:
            continue
        allowed_up = set() if module in COMMANDS else COMMANDS
        assert not imported & EDGE, f"{module} imports the Hydra edge: {imported & EDGE}"
        assert not imported & allowed_up, f"{module} imports a command: {imported & allowed_up}"
        assert not (module in COMMANDS and imported & COMMANDS), f"command {module} imports {imported & COMMANDS}"
        if module.startswith("nets") or module == "losses":
            assert imported <= {"errors"} | {m for m in imported if m.startswith("nets")}, (module, imported)


def test_hydra_is_imported_only_at_the_edge():
    for path in PACKAGE.rglob("*.py"):
        if module_name(path) in EDGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "hydra" for n in names), f"{module_name(path)} imports hydra"
