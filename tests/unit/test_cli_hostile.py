"""Hostile and mistaken input to the CLI (issue 10, items 4, 5, 9, 10): model output that looks
like rich markup, YAML alias bombs and duplicate keys, binary or directory pool files, bad
``--param`` values, damaged trace stores, a chat session fed bad commands, and Ctrl-C. Each bad
input is one readable line and exit 2 with nothing spent; model output prints as itself.

The models are served over loopback HTTP by :class:`~orchestra.testing_server.FakeOpenAIServer`
(real litellm, no network, no local model)."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from orchestra import cli as cli_mod
from orchestra._yaml import MAX_ALIAS_VALUES, load_yaml, read_yaml_file
from orchestra.errors import UserError

REPO = Path(__file__).resolve().parents[2]
MARKUP = "see [/] and [/code] and [/INST] [bold]x[red]"

BOMB = "".join(
    f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9 if p else ['"lol"'] * 9) + "]\n"
    for p, c in zip(["", *"abcdefgh"], "abcdefghi", strict=True))


def cli(*args: str | bytes, home: Path, stdin: str | bytes | None = None, timeout: float = 240,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "ORCHESTRA_HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "COLUMNS": "200", **(env or {})}
    p = subprocess.run([sys.executable, "-m", "orchestra.cli", *args], check=False,
                       capture_output=True,
                       input=stdin.encode() if isinstance(stdin, str) else stdin,
                       timeout=timeout, env=full_env, cwd=REPO)
    return subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode(errors="replace"),
                                       p.stderr.decode(errors="replace"))


def one_error_line(p: subprocess.CompletedProcess[str]) -> str:
    """The stderr of a refused command: exactly one ``error: …`` line, no traceback."""
    assert p.returncode == 2, (p.returncode, p.stdout[-500:], p.stderr[-2000:])
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr
    return lines[0]


POOL_YAML = """name: dead
models:
  - {name: a, id: openai/a, api_base: "http://127.0.0.1:9/v1", input_price: 1, output_price: 2,
     context_window: 4096, max_output_tokens: 16, params: {api_key: fake}}
  - {name: b, id: openai/b, api_base: "http://127.0.0.1:9/v1", input_price: 1, output_price: 2,
     context_window: 4096, max_output_tokens: 16, params: {api_key: fake}}
agents:
  - name: assistant
refiner: {kind: vote}
policy: ensemble
budget: {usd: 1.0}
"""
"""A pool whose models point at a closed port: a test that reaches a call fails loudly."""


# ----------------------------------------------------------------------------- the YAML loader
def test_alias_bomb_is_refused_at_once_naming_the_line() -> None:
    start = time.monotonic()
    with pytest.raises(UserError) as e:
        load_yaml(BOMB, "bomb.yaml")
    assert time.monotonic() - start < 2
    msg = str(e.value)
    assert msg.startswith("bomb.yaml line ") and "alias" in msg and "\n" not in msg
    assert len(msg) < 300


def test_aliases_within_the_bound_and_merge_keys_still_load() -> None:
    text = ("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  x: 3\nlist: &l [1, 2, 3]\n"
            "again: [*l, *l]\n")
    assert load_yaml(text, "f.yaml") == {"base": {"x": 1, "y": 2}, "m": {"x": 3, "y": 2},
                                         "list": [1, 2, 3], "again": [[1, 2, 3], [1, 2, 3]]}
    wide = "a: &a [" + ", ".join(["1"] * (MAX_ALIAS_VALUES // 4)) + "]\nb: [*a, *a, *a]\n"
    assert len(load_yaml(wide, "f.yaml")["b"]) == 3


@pytest.mark.parametrize("text, needle", [
    ("name: x\nbudget: {usd: 1}\nname: y\n", "line 3: duplicate key 'name' (first given on line 1)"),
    ("a: {k: 1, k: 2}\n", "line 1: duplicate key 'k'"),
    ("a: &x [1, *x]\n", "line 1: a recursive alias"),
    ("a: [1,\n", "line 2: not valid YAML"),
    ("a: b: c\n", "line 1: not valid YAML"),
])
def test_duplicate_keys_recursion_and_syntax_are_one_line(text: str, needle: str) -> None:
    with pytest.raises(UserError) as e:
        load_yaml(text, "f.yaml")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_files_that_are_not_yaml_text(tmp_path: Path) -> None:
    (tmp_path / "bin.yaml").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\xff\xfe")
    (tmp_path / "latin.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (tmp_path / "nul.yaml").write_bytes(b"name: x\x00\n")
    (tmp_path / "big.yaml").write_bytes(b"#" * (5 << 20))
    for name, needle in [("bin.yaml", "not UTF-8"), ("latin.yaml", "not UTF-8"),
                         ("nul.yaml", "binary file"), ("big.yaml", "larger than"),
                         ("missing.yaml", "does not exist"), (".", "is a directory")]:
        with pytest.raises(UserError, match=needle):
            read_yaml_file(tmp_path / name, "pool file")


def test_pool_errors_are_flat_without_nested_prefixes(tmp_path: Path) -> None:
    from orchestra.spec import Pool

    f = tmp_path / "p.yaml"
    f.write_text(POOL_YAML.replace("context_window: 4096", "context_window: -5", 1)
                 .replace("{usd: 1.0}", "{usd: -1}"))
    with pytest.raises(UserError) as e:
        Pool.from_yaml(f)
    msg = str(e.value)
    assert "field 'models.0.context_window': Input should be greater than 0 (got -5)" in msg
    assert "field 'budget': budget usd must be positive" in msg
    for nested in ("invalid ModelSpec", "invalid Pool", "invalid Budget", "Value error",
                   "'(root)'"):
        assert nested not in msg


def test_recipes_use_the_safe_loader(tmp_path: Path) -> None:
    from orchestra.policies.resolve import resolve_policy
    from orchestra.testing import make_pool

    for text, needle in [(BOMB + "policy: cheapest\n", "alias"),
                         ("policy: cheapest\npolicy: ensemble\n", "duplicate key 'policy'")]:
        f = tmp_path / "r.yaml"
        f.write_text(text)
        with pytest.raises(UserError, match=needle):
            resolve_policy(str(f), make_pool())


@pytest.mark.parametrize("params, needle", [
    ({"k": "abc"}, "parameter 'k' expects int or null (got 'abc')"),
    ({"k": 1e9}, "parameter 'k' expects int or null (got 1000000000.0)"),
    ({"k": [1, 2]}, "parameter 'k' expects int or null (got [1, 2])"),
    ({"k": True}, "parameter 'k' expects int"),
    ({"layers": "abc"}, "parameter 'layers' expects int (got 'abc'); e.g. --param layers=2"),
])
def test_policy_parameters_of_the_wrong_type_are_user_errors(params: dict[str, Any],
                                                             needle: str) -> None:
    from orchestra.policies.resolve import resolve_policy
    from orchestra.testing import make_pool

    with pytest.raises(UserError) as e:
        resolve_policy("ensemble", make_pool(), params)
    assert needle in str(e.value)
    assert resolve_policy("ensemble", make_pool(), {"k": 2, "layers": 1}).name.startswith("ensemble")


# ----------------------------------------------------------------------------- display, in-process
def recording() -> Console:
    return Console(file=io.StringIO(), record=True, markup=False, emoji=False, width=300)


def test_live_printer_prints_markup_like_text_as_itself() -> None:
    con = recording()
    on_event = cli_mod._live_printer(con)
    base = {"run_id": "r1", "round": 0}
    on_event(SimpleNamespace(kind="policy_decided", action="route", reason=MARKUP, dropped=[
        {"agent": "[/]", "model": "m", "limit": "usd"}], calls=[{"agent": "[/INST]", "model": "m"}],
        **base))
    on_event(SimpleNamespace(kind="policy_decided", action="think", note=MARKUP, reason="",
                             **base))
    on_event(SimpleNamespace(kind="call_finished", agent="[/code]", model="m", latency_s=0.1,
                             input_tokens=1, output_tokens=2, cost_usd=0.5, error=MARKUP,
                             overrun={"excess_usd": 0.25, "reason": "ignored [/] max_tokens"},
                             usage_note="negative [/] usage", **base))
    on_event(SimpleNamespace(kind="refined", refiner="[/]", conflicts=MARKUP, **base))
    text = con.export_text()
    assert text.count(MARKUP) == 4 and "[/INST]@m" in text and "dropped [/]@m" in text
    assert "overrun +$0.2500: ignored [/] max_tokens" in text
    assert "usage: negative [/] usage" in text
    assert on_event.seen["run_id"] == "r1"  # type: ignore[attr-defined]


def test_summary_line_shows_overruns() -> None:
    r = SimpleNamespace(cost_usd=0.006, input_tokens=1, output_tokens=2, calls=3, rounds=1,
                        duration_s=0.5, stop_reason="budget_overrun", trace_id="t" * 32,
                        overruns=[{"excess_usd": 0.001}, {"excess_usd": 0.0002}])
    line = cli_mod._summary_line(r, 0.0048)
    assert line.plain.endswith(" · OVERRUN: 2 call(s) charged $0.0012 above their reservation "
                               "(the provider ignored max_tokens or over-billed)")
    assert any("bold red" in str(s.style) for s in line.spans)
    r.overruns = []
    assert "OVERRUN" not in cli_mod._summary_line(r, 0.0048).plain


def test_traces_show_rows_escape_stored_text_and_flag_overruns() -> None:
    ev = {"seq": 4, "kind": "call_finished", "round": 0, "agent": "[/]", "model": "[bold]",
          "input_tokens": 1, "output_tokens": 2, "cost_usd": 0.1, "latency_s": 0.2, "error": None,
          "output": MARKUP, "overrun": {"excess_usd": 0.05, "reason": "x"}}
    detail = cli_mod._event_cells(ev)[3]
    con = recording()
    con.print(detail)
    text = con.export_text()
    assert "[/]@[bold]" in text and "[/code]" in text and "OVERRUN +$0.0500" in text
    err = {"seq": 5, "kind": "error", "round": None, "where": "[/]", "error_type": "X",
           "message": "[/INST]"}
    con.print(cli_mod._event_cells(err)[3])
    assert "[/]: X: [/INST]" in con.export_text()


# ----------------------------------------------------------------------------- the CLI, no model
@pytest.fixture()
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def test_alias_bomb_pool_and_pools_list_do_not_hang(tmp_path: Path, home: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "bomb.yaml").write_text(BOMB)
    (agents / "dup.yaml").write_text(POOL_YAML + "policy: cheapest\n")
    start = time.monotonic()
    p = cli("run", "q", "--pool", str(agents / "bomb.yaml"), "--no-trace", home=home, timeout=60)
    line = one_error_line(p)
    assert "bomb.yaml line" in line and "alias" in line and len(line) < 300
    listed = cli("pools", "list", home=home, env={"ORCHESTRA_AGENTS_DIR": str(agents)},
                 timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "bomb" in listed.stdout and "invalid" in listed.stdout and "alias" in listed.stdout
    assert "duplicate key 'policy'" in listed.stdout
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("case, needle", [
    ("dir", "is a directory"),
    ("binary", "not UTF-8 text"),
    ("dup", "duplicate key 'policy'"),
    ("nested", "field 'models.0.context_window'"),
])
def test_bad_pool_files_are_one_line_and_exit_2(tmp_path: Path, home: Path, case: str,
                                                needle: str) -> None:
    target = {"dir": tmp_path, "binary": tmp_path / "bin.yaml", "dup": tmp_path / "dup.yaml",
              "nested": tmp_path / "nested.yaml"}[case]
    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "dup.yaml").write_text(POOL_YAML + "policy: cheapest\n")
    (tmp_path / "nested.yaml").write_text(POOL_YAML.replace("context_window: 4096",
                                                            "context_window: -1", 1))
    line = one_error_line(cli("run", "q", "--pool", str(target), "--no-trace", home=home))
    assert needle in line
    if case == "nested":
        assert "invalid ModelSpec" not in line and "Value error" not in line


@pytest.mark.parametrize("param, needle", [
    ("k=abc", "'k' expects int or null (got 'abc')"),
    ("k=1e9", "'k' expects int or null (got 1000000000.0)"),
    ("k=[1,2]", "'k' expects int or null (got [1, 2])"),
    ("layers=abc", "'layers' expects int (got 'abc')"),
])
def test_bad_params_are_one_line_and_exit_2(tmp_path: Path, home: Path, param: str,
                                            needle: str) -> None:
    pool = tmp_path / "dead.yaml"
    pool.write_text(POOL_YAML)
    line = one_error_line(cli("run", "q", "--pool", str(pool), "--param", param, "--no-trace",
                              home=home))
    assert needle in line and "--param" in line


def test_non_utf8_query_is_one_line_and_exit_2(tmp_path: Path, home: Path) -> None:
    pool = tmp_path / "dead.yaml"
    pool.write_text(POOL_YAML)
    line = one_error_line(cli("run", b"caf\xe9 \xff", "--pool", str(pool), "--no-trace",
                              home=home))
    assert "the query is not valid UTF-8" in line


def test_traces_export_to_a_directory_and_damaged_stores(tmp_path: Path, home: Path) -> None:
    from orchestra.trace.store import SQLiteTraceStore

    db = tmp_path / "t.sqlite"
    SQLiteTraceStore(db).close()
    line = one_error_line(cli("traces", "export", "--out", str(tmp_path), "--db", str(db),
                              home=home))
    assert "is a directory" in line and "runs.jsonl" in line

    # Rows that are not JSON, in the middle of a store: shown as damaged, the others still read.
    con = sqlite3.connect(db)
    con.execute("INSERT INTO runs (run_id, started_at, query, status) VALUES ('r1', 1, 'q', 'ok')")
    con.execute("INSERT INTO runs (run_id, started_at, query, status, budget) "
                "VALUES ('r2', 2, 'q2', 'ok', '{broken')")
    con.execute("INSERT INTO runs (run_id, started_at, query, status) VALUES ('r3', 3, 'q3', 'ok')")
    con.execute("INSERT INTO events (run_id, seq, ts, kind, data) "
                "VALUES ('r1', 0, 1, 'run_started', '{not json')")
    con.execute("INSERT INTO events (run_id, seq, ts, kind, data) "
                "VALUES ('r1', 1, 2, 'refined', '[1, 2]')")
    con.commit()
    con.close()
    p = cli("traces", "list", "--json", "--db", str(db), home=home)
    assert p.returncode == 0, p.stderr
    rows = {r["run_id"]: r for r in json.loads(p.stdout)}
    assert set(rows) == {"r1", "r2", "r3"} and rows["r2"]["damaged"] == ["budget"]
    p = cli("traces", "show", "r1", "--db", str(db), home=home)
    assert p.returncode == 0, p.stderr
    assert "event 0 of run 'r1' is not JSON" in p.stdout
    assert "event 1 of run 'r1' is not an event object" in p.stdout

    (tmp_path / "junk.sqlite").write_bytes(b"this is not sqlite" * 100)
    one_error_line(cli("traces", "list", "--db", str(tmp_path / "junk.sqlite"), home=home))


# ----------------------------------------------------------------------------- the CLI, fake models
def test_markup_in_model_output_prints_as_itself_in_run_and_traces(tmp_path: Path,
                                                                   home: Path) -> None:
    from orchestra.testing_server import FakeOpenAIServer

    db = tmp_path / "t.sqlite"
    with FakeOpenAIServer(reply=lambda r: MARKUP) as server:
        pool = tmp_path / "fake.yaml"
        pool.write_text(server.pool_yaml(["a", "b"]).replace("name: assistant", "name: '[/]'"))
        p = cli("run", "say [/INST]", "--pool", str(pool), "--db", str(db), home=home)
    assert p.returncode == 0, p.stderr[-2000:]
    assert MARKUP in p.stdout and "[/]@a" in p.stderr
    assert "(no answer)" not in p.stdout and "[red]" not in p.stderr.replace(MARKUP, "")
    listed = cli("traces", "list", "--db", str(db), home=home)
    assert listed.returncode == 0, listed.stderr
    assert "say [/INST]" in listed.stdout
    run_id = json.loads(cli("traces", "list", "--json", "--db", str(db), home=home).stdout)[0][
        "run_id"]
    shown = cli("traces", "show", run_id, "--db", str(db), home=home)
    assert shown.returncode == 0, shown.stderr
    assert f"answer: {MARKUP}" in shown.stdout and "[/]@a" in shown.stdout


def test_chat_survives_bad_commands_and_keeps_its_state(tmp_path: Path, home: Path) -> None:
    from orchestra.testing_server import FakeOpenAIServer

    script = (b"hello [/] there\n/policy nope\n/pool " + str(tmp_path).encode() + b"\n/budget inf\n"
              b"/budget abc\ncaf\xe9 \xff\n/policy\n/pool\n/budget\nsay [/INST]\n/quit\n")
    with FakeOpenAIServer(reply=lambda r: MARKUP) as server:
        pool = tmp_path / "fake.yaml"
        pool.write_text(server.pool_yaml(["a", "b"]))
        p = cli("chat", "--pool", str(pool), "--no-trace", stdin=script, home=home)
        assert len(server.requests) == 4  # two turns of two calls; no bad line was sent
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count(f"bot> {MARKUP}") == 2
    assert "you> hello [/] there" in p.stdout
    assert "policy: ensemble" in p.stdout and "pool: fake" in p.stdout  # the old state
    assert "per-turn budget: $1.0000" in p.stdout
    assert "bye · 2 turns" in p.stdout
    errors = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(errors) == 5, p.stderr  # one line per bad command or line
    assert all(ln.startswith("error: ") for ln in errors), p.stderr
    assert "unknown policy 'nope'" in errors[0] and "is a directory" in errors[1]
    assert "finite" in errors[2] and "expects a number" in errors[3]
    assert "not valid UTF-8" in errors[4]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
def test_ctrl_c_names_the_run_and_how_to_resume(tmp_path: Path, home: Path) -> None:
    from orchestra.testing_server import FakeOpenAIServer
    from orchestra.trace.store import SQLiteTraceStore

    db = tmp_path / "t.sqlite"
    env = {**os.environ, "ORCHESTRA_HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    with FakeOpenAIServer(hold=["b"]) as server:
        pool = tmp_path / "fake.yaml"
        pool.write_text(server.pool_yaml(["a", "b"]))
        proc = subprocess.Popen([sys.executable, "-m", "orchestra.cli", "run", "q", "--pool",
                                 str(pool), "--db", str(db)], env=env, text=True, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        end = time.monotonic() + 120
        while not server.requests_to("b") and time.monotonic() < end:
            time.sleep(0.05)
        assert server.requests_to("b"), "the run never called b"
        proc.send_signal(signal.SIGINT)
        _, errs = proc.communicate(timeout=60)
    assert proc.returncode == 130, errs[-2000:]
    run_id = SQLiteTraceStore(db).list_runs()[0]["run_id"]
    assert f"interrupted; resume with `orchestra resume {run_id}`" in errs
    assert "Traceback" not in errs
