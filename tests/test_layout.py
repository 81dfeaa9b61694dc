"""The house's shape, checked from the code: no import circles, tools load only when their command runs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "resilient_llm"
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


def test_no_package_file_over_300_lines() -> None:
    """Every module reads in one sitting."""
    long = {
        str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 300
    }
    assert not long, long
