"""The package's folders and its import graph: no cycles, and nothing imports upward.

    cli/  (Hydra: the edge)
      -> the commands: training/loop (ganctl train), commands/ (sample, eval, summary, export)
        -> everything else (training/, evaluation/, run/, sampling/, config/, data, api, ...)
          -> nets/

Imports inside functions count too: a lazy import that goes upward is still a cycle.
"""
import ast
from pathlib import Path

import ganctl

PACKAGE = Path(ganctl.__file__).parent
# Each concern is a folder; the top level holds only what every folder uses or a user imports.
FOLDERS = {"cli", "commands", "config", "evaluation", "nets", "run", "sampling", "training"}
TOP_LEVEL = {"__init__", "__main__", "api", "data", "errors"}


def is_edge(module: str) -> bool:
    return module.startswith("cli.") or module in ("cli", "__main__")


def is_command(module: str) -> bool:
    return module.startswith("commands.") or module == "training.loop"


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
    assert {"training.loop", "training.wiring", "evaluation.evaluator", "nets.dcgan"} <= set(edges)  # the walk sees the package
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_nothing_imports_upward():
    for module, imported in graph().items():
        if is_edge(module):
            continue
        edge = {m for m in imported if is_edge(m)}
        commands = set() if is_command(module) else {m for m in imported if is_command(m)}
        assert not edge, f"{module} imports the Hydra edge: {edge}"
        assert not commands, f"{module} imports a command: {commands}"
        if is_command(module):
            others = {m for m in imported if is_command(m)}
            assert not others, f"command {module} imports {others}"
        if module.startswith("nets") or module == "training.losses":
            assert imported <= {"errors"} | {m for m in imported if m.startswith("nets")}, (module, imported)


def test_every_module_lies_in_its_concern_folder():
    loose = {p.stem for p in PACKAGE.glob("*.py")} - TOP_LEVEL
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} - {"conf"}
    assert not loose, f"modules outside a folder: {sorted(loose)}"
    assert folders == FOLDERS, f"folders: {sorted(folders)}"


def test_hydra_is_imported_only_at_the_edge():
    for path in PACKAGE.rglob("*.py"):
        if is_edge(module_name(path)):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "hydra" for n in names), f"{module_name(path)} imports hydra"


def test_a_saved_config_from_before_the_folders_still_builds():
    # Runs saved before ganctl/training/ name their loss ganctl.losses.<Class>; they must still load.
    from ganctl.config.build import build, resolve_target
    from ganctl.training.losses import BCE, WGANGP
    assert resolve_target("ganctl.losses.BCE", "loss") is BCE
    saved = {"_target_": "ganctl.losses.WGANGP", "gp_weight": 10.0, "n_critic": 5}
    loss = build(saved, "loss", label_smoothing=0.0, aux_weight=0.0, feature_matching=0.0, r1=0.0, r1_every=1)
    assert isinstance(loss, WGANGP) and loss.gp_weight == 10.0
