"""The house's rules, checked on every run of the suite.

- The layer order, written once in pyproject.toml (``[tool.importlinter]``), holds: import-linter's
  contracts (each layer imports only from those below it, no command imports a command, the
  engine … inference import no MLflow, Hydra, OmegaConf or Optuna, the Hydra plugins import only
  the sweeps and tracking layers) are all kept.
- No import cycles among rnnlab's and the plugins' modules (grimp's graph, module-level and
  function-level imports alike).
- Only the store module builds an ``MlflowClient`` or works out a tracking URI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest
from helpers.processes import ROOT
from importlinter.cli import lint_imports

PACKAGES = ("rnnlab", "hydra_plugins")
STORE = ROOT / "rnnlab" / "tracking" / "store.py"


def sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_the_layer_contracts_are_kept(monkeypatch):
    monkeypatch.chdir(ROOT)  # import-linter reads pyproject.toml from the working folder
    assert lint_imports(no_cache=True, no_logo=True) == 0


def strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's components of size > 1: the import cycles."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in graph.modules:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return out


def test_no_import_cycles():
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False, cache_dir=None)
    for module in list(graph.modules):  # the namespace hydra_plugins holds others' plugins too
        if module.startswith("hydra_plugins.") and not module.startswith("hydra_plugins.rnnlab_"):
            graph.remove_module(module)
    # a package importing its own children (an __init__ re-exporting them) is not a cycle
    for module in list(graph.modules):
        for child in graph.find_children(module):
            if graph.direct_import_exists(importer=module, imported=child):
                graph.remove_import(importer=module, imported=child)
    assert strongly_connected(graph) == []


def calls(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every call and attribute read that builds a client or reads a URI."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("MlflowClient", "get_tracking_uri"):
                found.append((node.lineno, name))
            # os.environ.get("MLFLOW_TRACKING_URI") / os.getenv("MLFLOW_TRACKING_URI")
            if name in ("get", "getenv") and any(
                isinstance(a, ast.Constant) and a.value == "MLFLOW_TRACKING_URI" for a in node.args
            ):
                found.append((node.lineno, "MLFLOW_TRACKING_URI"))
        if (  # os.environ["MLFLOW_TRACKING_URI"], read
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and isinstance(node.slice, ast.Constant)
            and node.slice.value == "MLFLOW_TRACKING_URI"
        ):
            found.append((node.lineno, "MLFLOW_TRACKING_URI"))
    return found


def test_only_the_store_builds_a_client_or_resolves_the_tracking_uri():
    elsewhere = {
        f"{p.relative_to(ROOT)}:{line} {name}"
        for p in sources()
        if p != STORE
        for line, name in calls(p)
    }
    assert elsewhere == set()
    assert {name for _, name in calls(STORE)} == {"MlflowClient", "MLFLOW_TRACKING_URI"}


@pytest.mark.parametrize(
    "code",
    ["MlflowClient(uri)", "mlflow.get_tracking_uri()", 'os.environ.get("MLFLOW_TRACKING_URI")',
     'os.environ["MLFLOW_TRACKING_URI"]'],
)  # fmt: skip
def test_the_client_check_would_catch_each_form(tmp_path, code):
    path = tmp_path / "m.py"
    path.write_text(f"x = {code}\n")
    assert calls(path)
