"""The house's shape, checked from the code: no import circles, no import running back up, tools load only when
their command runs, and tests/ and benchmarks/ never import each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "resilient_llm"
TOOLS = ("resilient_llm.cli.bench", "resilient_llm.testing.fault_server", "matplotlib")  # rich: structlog takes it


def loaded_after(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(done.stdout.split())


def test_importing_the_library_loads_no_tool() -> None:
    """``import resilient_llm`` loads neither the bench nor the fault server (nor their plotting and table deps)."""
    assert not loaded_after("import resilient_llm") & set(TOOLS)


def test_doctor_loads_no_bench_or_fault_server() -> None:
    """Building the CLI and running doctor's checks never imports the bench or the test double."""
    code = "from resilient_llm.cli import build_parser; build_parser(); import resilient_llm.cli.doctor"
    assert not loaded_after(code) & set(TOOLS)


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("resilient_llm"):
            for alias in node.names:  # ``from package import module`` imports the module
                submodule = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / submodule.replace(".", "/")).with_suffix(".py").exists()
                found.add(submodule if is_module else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("resilient_llm")}
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_circles() -> None:
    """The package's import graph (every import, deferred ones included) has no cycle."""
    graph = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done or name not in graph:
            return
        assert name not in visiting, " -> ".join([*visiting[visiting.index(name) :], name])
        visiting.append(name)
        for target in graph[name]:
            if target not in ("resilient_llm", name) and not name.startswith(target + "."):
                visit(target)
        visiting.pop()
        done.add(name)

    for name in graph:
        visit(name)


# The package's parts from the top floor down: a module imports only modules of its own tier or below. A module is in
# the tier of its longest listed prefix; a new module that fits none is reported, to be placed here.
TIERS = (
    ("tools", ("resilient_llm.cli",)),
    ("integrations", ("resilient_llm.testing", "resilient_llm.dropin")),
    (
        "engine",
        (
            "resilient_llm",
            "resilient_llm.process",
            "resilient_llm.engine",
            "resilient_llm.hop",
            "resilient_llm.stack",
            "resilient_llm.config",
        ),
    ),
    (
        "layers",
        (
            "resilient_llm.layers",
            "resilient_llm.endpoints",
            "resilient_llm.stores",
            "resilient_llm.recorder",
            "resilient_llm.prometheus",
        ),
    ),
    ("policy", ("resilient_llm.policy",)),
    (
        "foundation",
        (
            "resilient_llm.errors",
            "resilient_llm.types",
            "resilient_llm.validation",
            "resilient_llm.redact",
            "resilient_llm.protocol",
            "resilient_llm.runtime",
            "resilient_llm.logs",
            "resilient_llm.model_names",
            "resilient_llm.clock",
            "resilient_llm.timers",
            "resilient_llm.loop_lag",
            "resilient_llm.routing",
        ),
    ),
)


def tier_of(module: str) -> int | None:
    """The index of ``module``'s tier in TIERS (0 is the top), or None when no listed prefix covers it."""
    best: tuple[int, int] | None = None  # (prefix length, tier)
    for index, (_, prefixes) in enumerate(TIERS):
        for prefix in prefixes:
            covers = module == prefix or (module.startswith(prefix + ".") and prefix != "resilient_llm")
            if covers and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def test_every_module_has_a_tier() -> None:
    """Each module of the package is placed in one of the tiers (a new one gets its place in TIERS)."""
    assert [m for m in (module_name(p) for p in PACKAGE.rglob("*.py")) if tier_of(m) is None] == []


def test_no_import_runs_back_up() -> None:
    """No module imports one of a higher tier: tools over integrations over the engine over layers over policy over
    the foundation."""
    upward = []
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        for target in imports_of(path):
            here, there = tier_of(name), tier_of(target)
            if here is not None and there is not None and there < here:
                upward.append(f"{name} ({TIERS[here][0]}) -> {target} ({TIERS[there][0]})")
    assert upward == []


def top_level_imports(folder: Path) -> dict[str, set[str]]:
    """Per file under ``folder``, the top-level packages it imports (deferred imports included)."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
        found[str(path.relative_to(REPO))] = names
    return found


def test_tests_and_benchmarks_never_import_each_other() -> None:
    """What both need lives in resilient_llm.testing: no test imports a benchmark, no benchmark imports a test."""
    assert {f for f, names in top_level_imports(REPO / "tests").items() if "benchmarks" in names} == set()
    assert {f for f, names in top_level_imports(REPO / "benchmarks").items() if "tests" in names} == set()
