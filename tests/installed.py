"""The wheel of this tree, built offline and installed into a fresh venv (tests/test_wheel.py,
tests/test_plugins.py).

The build needs no network: pip uses the build backend already installed here
(--no-build-isolation). The venv gets the wheel alone; its dependencies come from this
environment's site-packages, added as a plain path (its .pth files, e.g. the checkout's editable
finder, are not processed), so the installed copy of evoforge is the one imported there.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_wheel(out: Path) -> Path:
    src = out / "src"  # a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", "tests", "bench", "docs", "examples"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "--disable-pip-version-check", "-q", "-w", str(out), str(src)],
                   check=True, timeout=300, cwd=out)
    [whl] = out.glob("evoforge-*.whl")
    return whl


@dataclass(frozen=True)
class Venv:
    root: Path
    site: Path             # its purelib
    env: dict[str, str]    # for its commands: no PYTHONPATH, a private EVOFORGE_HOME

    @property
    def python(self) -> str:
        return str(self.root / "bin" / "python")

    def bin(self, name: str) -> str:
        return str(self.root / "bin" / name)

    def pip_install(self, *args: str) -> None:
        """`pip install` into this venv, offline, with this environment's pip."""
        subprocess.run([sys.executable, "-m", "pip", "--python", self.python, "install",
                        "--no-index", "--disable-pip-version-check", "-q", *args],
                       check=True, timeout=300, env=self.env)


def venv_with_wheel(wheel: Path, where: Path) -> Venv:
    root = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    site = Path(subprocess.check_output(
        [str(root / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True).strip())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EVOFORGE_DATABASE_URL")}
    env["EVOFORGE_HOME"] = str(where / "home")
    venv = Venv(root, site, env)
    venv.pip_install("--no-deps", str(wheel))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv
