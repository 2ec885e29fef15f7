"""Portable llama.cpp builds side by side: the shipped one against runtime-dispatched variants.

Run from the repository root::

    .venv/bin/python benchmarks/llama_build.py [--tokens 96] [--repeats 5] [--threads 1]

Two builds of the same llama-cpp-python version, both made by ``scripts/build-llama.sh``
(each is compiled on first use, ~10 minutes on 2 cores, then kept in the wheelhouse):

* **portable** (what ``make setup`` installs): one CPU backend compiled for
  AVX/AVX2/FMA/F16C/BMI2, ``GGML_NATIVE=OFF``; no AVX-512, AVX-VNNI or AMX code at all.
* **all-variants**: ``GGML_BACKEND_DL`` + ``GGML_CPU_ALL_VARIANTS``: one CPU backend per
  micro-architecture (x64 … haswell … zen4 … sapphirerapids), the best one chosen at run time
  by its ``ggml_backend_score()``.

Each wheel is unpacked into its own folder and used by a child Python process (nothing is
installed). The child loads SmolLM2-135M-Instruct, then times prompt evaluation (a fixed
~200-token prompt) and generation (``--tokens`` greedy tokens with the stop token ignored).
The builds alternate child by child (A B A B ...) so that load on this shared machine hits
both alike; medians are reported, with the ratio all-variants / portable. For all-variants the
benchmark also lists every variant's score on this CPU (dlopen + ``ggml_backend_score``) and the
one llama.cpp picked.

Results: ``benchmarks/results/llama_build.json``; a table is printed.
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
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "results" / "llama_build.json"
BUILDS = ("portable", "all-variants")

# Runs in the child: unpacked wheel first on sys.path. With GGML_BACKEND_DL, llama.cpp looks for
# its CPU variants next to the Python executable and in the working directory only, while
# llama-cpp-python's wheel puts them in a top-level bin/ folder (site-packages/bin once
# installed): as pip installs it, no CPU backend is found at all. So the child loads them from
# that folder itself before the first model.
CHILD = r"""
import ctypes, glob, json, os, sys, time
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
site, model_path, n_tokens, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, site)
lib = os.path.join(site, "llama_cpp", "lib")
out = {"variants": {}}
vdir = os.path.join(site, "bin")
variants = sorted(glob.glob(os.path.join(vdir, "libggml-cpu-*.so")))
if variants:
    # The variants link against libggml-base.so.0, which sits in llama_cpp/lib while their
    # rpath ($ORIGIN) is bin/: load it first, globally, or dlopen fails.
    ctypes.CDLL(os.path.join(lib, "libggml-base.so.0"), mode=ctypes.RTLD_GLOBAL)
    for v in variants:
        h = ctypes.CDLL(v)
        h.ggml_backend_score.restype = ctypes.c_int
        out["variants"][os.path.basename(v)[len("libggml-cpu-"):-3]] = h.ggml_backend_score()
    ggml = ctypes.CDLL(os.path.join(lib, "libggml.so"))
    ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_load_all_from_path(vdir.encode())
import llama_cpp
assert llama_cpp.__file__.startswith(site), llama_cpp.__file__
info = llama_cpp.llama_print_system_info()
out["system_info"] = info.decode() if isinstance(info, bytes) else str(info)
t0 = time.perf_counter()
llm = llama_cpp.Llama(model_path=model_path, n_ctx=1024, n_threads=threads, verbose=False)
out["load_s"] = time.perf_counter() - t0
prompt = ("Here is a list of facts about the solar system. " * 20).strip()
toks = llm.tokenize(prompt.encode())
llm.reset()
t0 = time.perf_counter()
llm.eval(toks)
out["prompt_tokens"] = len(toks)
out["prompt_tok_s"] = len(toks) / (time.perf_counter() - t0)
llm.reset()
t0 = time.perf_counter()
r = llm.create_completion("Once upon a time", max_tokens=n_tokens, temperature=0.0,
                          logit_bias={llm.token_eos(): -1e9})
dt = time.perf_counter() - t0
out["gen_tokens"] = r["usage"]["completion_tokens"]
out["gen_tok_s"] = out["gen_tokens"] / dt
out["text_head"] = r["choices"][0]["text"][:60]
print("RESULT " + json.dumps(out), flush=True)
"""


def _wheel(variant: str) -> tuple[Path, dict[str, Any]]:
    """Build (or find) the variant's wheel with the project's own script."""
    proc = subprocess.run(["bash", str(REPO / "scripts" / "build-llama.sh"), variant,
                           sys.executable], check=True, stdout=subprocess.PIPE, text=True)
    wheel = Path(proc.stdout.strip().splitlines()[-1])
    meta = json.loads((wheel.parent / "build.json").read_text())
    return wheel, meta


def _smollm2() -> str:
    sys.path.insert(0, str(REPO))
    from orchestra.backends.local import LOCAL_MODELS

    return str(LOCAL_MODELS["smollm2-135m-instruct"].path())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console()
    model = _smollm2()
    tmp = Path(tempfile.mkdtemp(prefix="llama-build-bench-"))
    sites: dict[str, Path] = {}
    metas: dict[str, dict[str, Any]] = {}
    for b in BUILDS:
        console.print(f"wheel for [bold]{b}[/] (compiled on first use, ~10 min)…")
        wheel, metas[b] = _wheel(b)
        sites[b] = tmp / b
        with zipfile.ZipFile(wheel) as z:
            z.extractall(sites[b])
        for so in sites[b].glob("*/*.so*"):
            so.chmod(0o755)
        for so in sites[b].glob("llama_cpp/lib/*.so*"):
            so.chmod(0o755)

    runs: dict[str, list[dict[str, Any]]] = {b: [] for b in BUILDS}
    failures: dict[str, list[str]] = {b: [] for b in BUILDS}
    with Progress(console=console) as prog:
        task = prog.add_task("alternating runs", total=args.repeats * len(BUILDS))
        for _ in range(args.repeats):
            for b in BUILDS:
                p = subprocess.run([sys.executable, "-c", CHILD, str(sites[b]), model,
                                    str(args.tokens), str(args.threads)],
                                   capture_output=True, text=True, cwd=tmp, check=False)
                line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), "")
                if p.returncode != 0 or not line:
                    why = (f"signal {-p.returncode}" if p.returncode < 0
                           else (p.stderr.strip().splitlines() or ["?"])[-1])
                    failures[b].append(why)
                else:
                    runs[b].append(json.loads(line[len("RESULT "):]))
                prog.advance(task)

    def med(b: str, key: str) -> float | None:
        vals = [r[key] for r in runs[b]]
        return statistics.median(vals) if vals else None

    results: dict[str, Any] = {}
    for b in BUILDS:
        variants = runs[b][0]["variants"] if runs[b] else {}
        chosen = max(variants, key=lambda v: variants[v]) if variants else None
        results[b] = {
            "cmake_args": metas[b]["cmake_args"], "build_seconds": metas[b]["build_seconds"],
            "wheel": metas[b]["wheel"], "runs": len(runs[b]), "failures": failures[b],
            "gen_tok_s_median": med(b, "gen_tok_s"), "prompt_tok_s_median": med(b, "prompt_tok_s"),
            "load_s_median": med(b, "load_s"),
            "gen_tok_s_all": [round(r["gen_tok_s"], 2) for r in runs[b]],
            "variant_scores": variants, "variant_chosen": chosen,
            "system_info": runs[b][0]["system_info"] if runs[b] else None,
        }

    def ratio(key: str) -> float | None:
        a, p = results["all-variants"][key], results["portable"][key]
        return round(a / p, 3) if a and p else None

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    doc = {
        "benchmark": "llama_build", "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "loadavg": load, "python": platform.python_version()},
        "model": "SmolLM2-135M-Instruct Q4_1", "threads": args.threads,
        "gen_tokens": args.tokens, "repeats": args.repeats, "builds": results,
        "ratio_all_variants_over_portable": {"gen_tok_s": ratio("gen_tok_s_median"),
                                             "prompt_tok_s": ratio("prompt_tok_s_median")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")

    t = Table(title=f"llama.cpp builds, SmolLM2-135M, {args.threads} thread(s), "
                    f"median of {args.repeats}")
    for col in ("build", "variant used", "generate tok/s", "prompt tok/s", "load s", "build s",
                "failures"):
        t.add_column(col)
    for b in BUILDS:
        r = results[b]
        t.add_row(b, r["variant_chosen"] or "(single backend)",
                  f"{r['gen_tok_s_median']:.1f}" if r["gen_tok_s_median"] else "-",
                  f"{r['prompt_tok_s_median']:.0f}" if r["prompt_tok_s_median"] else "-",
                  f"{r['load_s_median']:.2f}" if r["load_s_median"] else "-",
                  str(r["build_seconds"]), str(len(r["failures"])))
    console.print(t)
    console.print(f"ratio all-variants / portable: {doc['ratio_all_variants_over_portable']}")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
