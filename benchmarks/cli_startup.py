"""CLI start-up time: each command of the current tree side by side with the previous version.

Run from the repository root::

    .venv/bin/python benchmarks/cli_startup.py [--runs 9] [--ref HEAD]

The previous version is ``--ref`` (default ``HEAD``, i.e. the last commit, without the working
tree's changes), checked out for the run as a temporary ``git worktree`` under the system temp
folder and removed at the end. Both versions run with this python (the same virtualenv) as::

    python -c "import sys; sys.path.insert(0, TREE); from orchestra.cli import main; main()" ARGS

from an empty working directory, so each imports its own ``orchestra`` package. Every command
gets one warm-up per version, then ``--runs`` timed runs; the versions alternate run by run, so
drift in the machine's load hits both alike. Wall time and the child's CPU time (user + system,
which changes less when other processes compete for the CPUs) are reported as medians. Floors:
``python -c pass``, ``import typer`` and ``import typer.rich_utils`` (what typer's rich
``--help`` needs). Results go to ``benchmarks/results/cli_startup.json``; a table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "results" / "cli_startup.json"

COMMANDS = [
    "--help", "policies list", "pools list", "train --help", "run --help", "chat --help",
    "pools show local", "traces --help", "traces export --help", "data --help", "eval --help",
    "train gnn --help", "viewer --help", "doctor --help",
]
FLOORS = {"python -c pass": "pass", "import typer": "import typer",
          "import typer.rich_utils": "import typer.rich_utils"}


def cli_code(tree: Path) -> str:
    return (f"import sys; sys.path.insert(0, {str(tree)!r}); "
            "from orchestra.cli import main; main()")


def timed(argv: list[str], cwd: Path) -> tuple[float, float, int]:
    """Wall seconds, child CPU seconds (user + system) and exit code of one run."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


def measure(cases: dict[str, list[str]], runs: int, cwd: Path) -> dict[str, dict[str, Any]]:
    """Median wall and CPU time of each case; cases alternate within every round."""
    walls: dict[str, list[float]] = {k: [] for k in cases}
    cpus: dict[str, list[float]] = {k: [] for k in cases}
    codes: dict[str, set[int]] = {k: set() for k in cases}
    for argv in cases.values():  # warm-up: page cache, .pyc files
        timed(argv, cwd)
    for _ in range(runs):
        for key, argv in cases.items():
            wall, cpu, code = timed(argv, cwd)
            walls[key].append(wall)
            cpus[key].append(cpu)
            codes[key].add(code)
    return {k: {"wall_s": statistics.median(walls[k]), "cpu_s": statistics.median(cpus[k]),
                "exit_codes": sorted(codes[k])} for k in cases}


def machine_info() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for pkg in ("typer", "click", "rich", "pydantic", "numpy", "PyYAML"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"platform": platform.platform(), "python": sys.version.split()[0],
            "cpus": os.cpu_count(), "versions": versions}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, text=True, capture_output=True,
                          check=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=9, help="timed runs per command and version")
    ap.add_argument("--ref", default="HEAD", help="git revision of the previous version")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()

    ref = git("rev-parse", "--short", args.ref)
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    with tempfile.TemporaryDirectory(prefix="orchestra-cli-bench-") as tmp:
        before = Path(tmp) / "before"
        cwd = Path(tmp) / "cwd"
        cwd.mkdir()
        git("worktree", "add", "--detach", str(before), ref)
        try:
            cases: dict[str, list[str]] = {}
            for name, code in FLOORS.items():
                cases[f"floor|{name}"] = [sys.executable, "-c", code]
            for cmd in COMMANDS:
                for version, tree in (("before", before), ("after", REPO)):
                    cases[f"{version}|{cmd}"] = [sys.executable, "-c", cli_code(tree), *cmd.split()]
            load_before = os.getloadavg()
            t0 = time.perf_counter()
            res = measure(cases, args.runs, cwd)
            elapsed = time.perf_counter() - t0
            load_after = os.getloadavg()
        finally:
            git("worktree", "remove", "--force", str(before))

    commands: dict[str, dict[str, Any]] = {}
    for cmd in COMMANDS:
        b, a = res[f"before|{cmd}"], res[f"after|{cmd}"]
        # A command the previous version lacks (exit code 2: no such command) has no "before".
        missing = b["exit_codes"] == [2] and a["exit_codes"] != [2]
        commands[cmd] = {
            "before_s": None if missing else round(b["wall_s"], 4),
            "after_s": round(a["wall_s"], 4),
            "ratio": None if missing else round(a["wall_s"] / b["wall_s"], 3),
            "before_cpu_s": None if missing else round(b["cpu_s"], 4),
            "after_cpu_s": round(a["cpu_s"], 4),
            "exit_codes": {"before": b["exit_codes"], "after": a["exit_codes"]},
        }
    floors = {name: {"wall_s": round(res[f"floor|{name}"]["wall_s"], 4),
                     "cpu_s": round(res[f"floor|{name}"]["cpu_s"], 4)} for name in FLOORS}
    result = {
        "benchmark": "cli_startup",
        "what": "median wall / CPU seconds of `orchestra ARGS` (python -c main() form), previous "
                "version vs current tree, same python, versions alternating run by run",
        "runs": args.runs,
        "before": {"ref": ref, "tree": "git worktree of ref"},
        "after": {"tree": str(REPO), "based_on": git("rev-parse", "--short", "HEAD"),
                  "uncommitted_changes": dirty},
        "machine": machine_info(),
        "loadavg": {"before": load_before, "after": load_after},
        "elapsed_s": round(elapsed, 1),
        "floors": floors,
        "commands": commands,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    from rich.console import Console
    from rich.table import Table

    def s(x: float | None) -> str:
        return "—" if x is None else f"{x:.3f}"

    t = Table(title=f"CLI start-up, median of {args.runs} (wall s; CPU s in brackets) · before "
                    f"{ref} · load {load_before[0]:.1f}→{load_after[0]:.1f}")
    for col in ("command", "before", "after", "after/before"):
        t.add_column(col, justify="left" if col == "command" else "right")
    for name, f in floors.items():
        t.add_row(f"[dim]{name}[/]", "", f"[dim]{f['wall_s']:.3f} ({f['cpu_s']:.3f})[/]", "")
    t.add_section()
    for cmd, r in commands.items():
        t.add_row(f"orchestra {cmd}", f"{s(r['before_s'])} ({s(r['before_cpu_s'])})",
                  f"{s(r['after_s'])} ({s(r['after_cpu_s'])})",
                  "—" if r["ratio"] is None else f"{r['ratio']:.2f}")
    Console().print(t)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
