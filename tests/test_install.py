"""A non-editable install ships conf/ inside the package: `ganctl train --cfg job` works anywhere."""
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


@pytest.mark.processes
def test_wheel_install_into_a_fresh_venv_finds_its_config(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", "outputs", "data", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    # Build the wheel offline with this interpreter's setuptools, then install only the wheel
    # into a fresh venv whose system site-packages supply torch & co.
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    shutil.rmtree(source)  # nothing may be read from the source tree any more
    # The new venv sees this interpreter's packages (torch & co.) through a .pth file: what
    # --system-site-packages gives only where this interpreter is not itself in a venv (from
    # inside one it would give the base interpreter's packages, without hydra).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "host-packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    (wheel,) = wheels.glob("ganctl-*.whl")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=300)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import ganctl; print(ganctl.__file__)"],
                           cwd=elsewhere, capture_output=True, text=True, check=True).stdout
    assert str(venv) in where
    result = subprocess.run([str(venv / "bin" / "ganctl"), "train", "--cfg", "job", "model=cgan"],
                            cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "name: cgan" in result.stdout and "_target_: ganctl.training.losses.BCE" in result.stdout
