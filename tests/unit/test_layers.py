"""The dependency rule of the tree (README, "Layout"), enforced by walking every module's imports.

- shared/domain imports nothing else from the app.
- The use cases (shared/usecases) never import an engine's adapter (shared.engine.local, shared.engine.azureml),
  the dev host or the CLI.
- functions/ reaches the app only through the use cases, the context, the API models, the dashboard's presentation
  (shared/ui), errors and settings.
- shared/ui (templates, rendering, the dashboard's auth) imports only the domain.
- Nothing but the dev host and functions/ imports azure.functions.
- shared/ has no import cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "functions")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path) -> Iterator[str]:
    """Every module this one imports, at any depth of the file (lazy imports count too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:  # `from package import module` imports the module, not only the package
                submodule = f"{source}.{alias.name}"
                yield submodule if (ROOT / (submodule.replace(".", "/") + ".py")).exists() else source


ALL = modules()
GRAPH = {name: sorted(set(imports_of(name, path))) for name, path in ALL.items()}


def within(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def offenders(layer: str, allowed) -> list[str]:
    return [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if within(name, layer)
        for target in targets
        if within(target, "shared") or within(target, "functions")
        if not allowed(target)
    ]


def test_the_domain_imports_nothing_else_from_the_app():
    assert offenders("shared.domain", lambda target: within(target, "shared.domain")) == []


@pytest.mark.parametrize("adapter", ["shared.engine.local", "shared.engine.azureml", "shared.devhost", "shared.cli"])
def test_the_use_cases_never_import_an_engine_adapter_the_dev_host_or_the_cli(adapter):
    assert offenders("shared.usecases", lambda target: not within(target, adapter)) == []


def test_functions_reach_the_app_only_through_the_use_cases():
    allowed = ("functions", "shared.usecases", "shared.context", "shared.api", "shared.ui", "shared.domain.errors")
    allowed += ("shared.settings",)
    assert offenders("functions", lambda target: any(within(target, prefix) for prefix in allowed)) == []


def test_the_dashboard_presentation_imports_only_the_domain():
    allowed = ("shared.ui", "shared.domain")
    assert offenders("shared.ui", lambda target: any(within(target, prefix) for prefix in allowed)) == []


def test_only_the_dev_host_and_the_functions_import_azure_functions():
    importers = sorted(
        name
        for name, targets in GRAPH.items()
        if any(within(target, "azure.functions") for target in targets)
        and not (within(name, "shared.devhost") or within(name, "functions"))
    )
    assert importers == []


def test_shared_has_no_import_cycle():
    graph = {name: [t for t in targets if t in ALL and within(t, "shared")] for name, targets in GRAPH.items()}
    graph = {name: targets for name, targets in graph.items() if within(name, "shared")}
    cycles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in graph.get(node, []):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*trail[trail.index(target) :], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_walk_sees_the_tree():
    # a guard on this module's premise: the walk finds the layers and their imports
    assert "shared.domain.jobs" in ALL and "shared.usecases.intake" in ALL and "functions.http_api" in ALL
    assert "shared.usecases.submission" in GRAPH["shared.usecases.intake"]
