"""The CLI starts light: help and listings import no heavy dependency, lazy sub-commands are
imported only when they run. Behaviour only (which modules get loaded, what is printed), no
timings: ``benchmarks/cli_startup.py`` measures the time."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# A child python runs the CLI in-process and writes the names of the modules it loaded.
_CHILD = """
import json, sys
from orchestra.cli import main
try:
    main(sys.argv[2:])
except SystemExit as e:
    code = e.code
else:
    code = 0
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""

HEAVY = ("numpy", "pydantic", "pydantic_core", "litellm", "langgraph", "torch", "orchestra.spec",
         "orchestra.runtime", "orchestra.outcomes", "orchestra.trace")
LAZY_MODULES = ("orchestra.doctor", "orchestra.eval", "orchestra.training", "orchestra.outcomes",
                "orchestra.trace.viewer", "orchestra.trace.export", "orchestra.serve")


def run_cli(tmp_path: Path, *args: str) -> tuple[str, set[str]]:
    """Run ``orchestra ARGS`` in a child python: its stdout and the modules it imported."""
    report = tmp_path / "modules.json"
    env = {**os.environ, "COLUMNS": "200", "ORCHESTRA_HOME": str(tmp_path)}
    p = subprocess.run([sys.executable, "-c", _CHILD, str(report), *args], check=False,
                       capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    data = json.loads(report.read_text())
    assert data["code"] == 0, (p.stdout, p.stderr)
    return p.stdout, set(data["modules"])


def listed(help_text: str, command: str) -> bool:
    """Whether ``--help`` lists ``command`` (an indented line that starts with its name)."""
    return re.search(rf"^ +{re.escape(command)}(?: |$)", help_text, re.MULTILINE) is not None


def loaded(modules: set[str], roots: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == r or m.startswith(r + ".") for r in roots))


def test_help_lists_every_command_and_imports_nothing_heavy(tmp_path: Path) -> None:
    out, modules = run_cli(tmp_path, "--help")
    assert loaded(modules, HEAVY + LAZY_MODULES) == []
    for name in ("run", "resume", "chat", "doctor", "viewer", "eval", "pools", "traces",
                 "policies", "data", "train", "serve", "keys"):
        assert listed(out, name), name
    assert "Check what a first run needs" in out
    # Plain help: typer's rich formatting (typer.rich_utils, markdown-it) is never imported.
    assert loaded(modules, ("typer.rich_utils", "markdown_it")) == []


def test_policies_list_imports_nothing_heavy(tmp_path: Path) -> None:
    out, modules = run_cli(tmp_path, "policies", "list")
    assert loaded(modules, HEAVY + LAZY_MODULES) == []
    for name in ("single", "cheapest", "strongest", "random", "cascade", "ensemble", "knn", "mlp",
                 "mf", "gnn"):
        assert f"│ {name} " in out, name
    assert "recipe" in out


def test_pools_list_imports_nothing_heavy(tmp_path: Path) -> None:
    out, modules = run_cli(tmp_path, "pools", "list")
    assert loaded(modules, HEAVY + LAZY_MODULES) == []
    assert "│ local " in out and "│ hosted " in out
    assert "smollm2, gemma3" in out and "invalid" not in out


def test_lazy_commands_are_imported_only_when_they_run(tmp_path: Path) -> None:
    out, modules = run_cli(tmp_path, "traces", "--help")
    assert "export" in out and loaded(modules, ("orchestra.trace.export",)) == []
    out, modules = run_cli(tmp_path, "traces", "export", "--help")
    assert "--grades" in out or "--out" in out
    assert "orchestra.trace.export" in modules
    out, modules = run_cli(tmp_path, "doctor", "--help")
    assert "--json" in out and "orchestra.doctor" in modules
    out, modules = run_cli(tmp_path, "train", "--help")
    for name in ("knn", "mlp", "mf", "gnn"):
        assert listed(out, name), name
    assert loaded(modules, ("numpy", "torch", "ray", "orchestra.training.router_fit",
                            "orchestra.policies.learned.artifact")) == []


def test_lazy_one_line_help_matches_the_commands() -> None:
    """The static lines ``--help`` lists are what the commands themselves say."""
    from orchestra.cli import LAZY_COMMANDS, load_lazy

    for group, specs in LAZY_COMMANDS.items():
        for name, spec in specs.items():
            cmd = load_lazy(name, spec)
            first_paragraph = " ".join((cmd.help or "").split("\n\n")[0].split())
            assert first_paragraph == spec.help, f"{group} {name}"
            assert bool(getattr(cmd, "commands", None)) == spec.group, f"{group} {name}"


POOLS = {
    "defaults": "models:\n  - id: test/x\nagents:\n  - name: a\nrefiner: {kind: vote}\n",
    "budget": ("description: mine\npolicy: ensemble\nbudget: {rounds: 3}\nrefiner: {kind: last}\n"
               "models:\n"
               "  - {name: x, id: test/x}\n  - {id: test/y}\nagents:\n  - {name: a}\n  - {name: b}\n"),
    "no_agents": "models:\n  - id: test/x\n",
    "not_a_mapping": "- 1\n- 2\n",
    "bad_yaml": "models: [\n",
}


def test_pools_list_rows_match_validated_pools(tmp_path: Path) -> None:
    """``pools list`` reads YAML without pydantic; its rows are those of the validated pools.
    (Only a file that is not plainly a pool is validated there; ``pools show`` validates.)"""
    from orchestra._paths import named_files
    from orchestra.cli import _pool_row, _validated_pool_row

    for path in named_files("agents").values():
        assert _pool_row(path) == _validated_pool_row(path), path
    for name, text in POOLS.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        row = _pool_row(path)
        validated = _validated_pool_row(path)
        if row is None:  # not plainly a pool: the list shows the validation error
            assert str(validated[0]) == "invalid", name  # a rich Text, styled red
        else:
            assert row == validated, name
    assert _pool_row(tmp_path / "defaults.yaml") == ["test/x", "a", "cheapest", "$1.0000", ""]


@pytest.mark.parametrize("args", [["nonexistent"], ["trian"]])
def test_unknown_command_is_a_usage_error(args: list[str]) -> None:
    p = subprocess.run([sys.executable, "-m", "orchestra.cli", *args], check=False,
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert p.returncode == 2 and "No such command" in p.stderr
