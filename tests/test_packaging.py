"""The package as pip installs it, not the checkout: a wheel built from the tree, installed into a folder of
its own, runs `sare demo` from another working directory (configs ship as package data)."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from setuptools import find_packages

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package_of_the_tree():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {p for p in find_packages(str(REPO), include=["sare_core*", "pipelines*"])}
    assert listed == found | {"sare_configs"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel of this tree (no dependencies) installed into a fresh folder."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(work / "dist"), str(REPO)], check=True, cwd=work)
    (wheel,) = (work / "dist").glob("sare-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sare_configs/demo.yaml" in names and "pipelines/train/worker.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    target = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, cwd=work)
    return target


def _sare(args: list[str], site: Path, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """`sare ARGS` from the installed copy only: it comes first on the path, and the checkout is not on it."""
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(cwd), "OMP_NUM_THREADS": "2"}
    code = "import sys\nfrom pipelines.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_installed_demo_finds_its_shipped_config(installed, tmp_path):
    where = _sare(["-c", "x"], installed, tmp_path)  # argparse error; only the import matters here
    assert where.returncode == 2
    probe = subprocess.run([sys.executable, "-c", "import pipelines, sare_configs; print(pipelines.__file__); "
                            "from pipelines.shipped_configs import shipped_config; print(shipped_config('demo.yaml'))"],
                           cwd=tmp_path, env={"PYTHONPATH": str(installed)}, capture_output=True, text=True, check=True)
    assert all(line.startswith(str(installed)) for line in probe.stdout.split())
    helped = _sare(["demo", "--help"], installed, tmp_path)
    assert helped.returncode == 0 and "shipped demo.yaml" in helped.stdout


@pytest.mark.slow
def test_a_tiny_demo_runs_from_the_installed_package_in_another_folder(installed, tmp_path):
    overrides = ["preset=tiny", "train.epochs=1", "train.chunk_size=16", "train.negative_pool=60",
                 "train.num_negatives=4", "train.batch_size=2", "train.centroid_images=40", "train.num_workers=1",
                 "train.val_ns=[1,5]", "train.select_n=1", "eval_ns=[1,5]",
                 "train.model={backbone: tiny, num_clusters: 8, whitening_dim: null, image_size: [72, 96]}"]
    args = ["demo"] + [token for o in overrides for token in ("--set", o)]
    ran = _sare(args, installed, tmp_path)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-3000:]
    assert (tmp_path / "runs" / "demo" / "demo_summary.json").is_file()
    assert "demo finished" in ran.stdout


def test_make_install_leaves_the_venv_byte_compiled():
    """`make install` ends by byte-compiling the venv: with PYTHONDONTWRITEBYTECODE set (these machines) Python
    never saves bytecode itself, and every Ray worker would compile torch and Ray again (benchmarks/bytecode.py).
    Every top-level module of each package must have bytecode, including those no run imports."""
    if not (Path(sys.prefix) / ".installed").is_file():
        pytest.skip("this interpreter's environment was not made by `make install`")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bytecode import CHECKED_PACKAGES, modules_without_bytecode

    for package in CHECKED_PACKAGES:
        cache, missing = modules_without_bytecode(package)
        assert not missing, f"{package}: no bytecode in {cache} for {missing[:5]} (run make install)"
