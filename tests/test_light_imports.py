"""Import weight: the command line starts without torch or Ray, and sare_core never imports Ray.

Each check runs in a fresh interpreter and looks at sys.modules after the work."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def modules_after(code: str, cwd: Path = REPO) -> set[str]:
    """The top-level modules a fresh interpreter holds after running `code`."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_sare_help_imports_neither_torch_nor_ray():
    loaded = modules_after("from pipelines.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass")
    assert not loaded & {"torch", "ray", "torchvision", "timm"}


def test_every_subcommand_help_imports_neither_torch_nor_ray():
    for command in ("data", "extract", "eval", "train", "tune", "demo", "explain", "model"):
        code = f"from pipelines.cli import main\ntry:\n    main(['{command}', '--help'])\nexcept SystemExit:\n    pass"
        assert not modules_after(code) & {"torch", "ray"}, command


def test_data_inspect_imports_neither_torch_nor_ray(shared_data, tmp_path):
    summer = sorted((shared_data / "nordland_dev" / "summer").glob("*.png"))[:6]
    winter = sorted((shared_data / "nordland_dev" / "winter").glob("*.png"))[:3]
    rows = ["path,role,utm_east,utm_north"] + [f"{p},database,{i},0" for i, p in enumerate(summer)]
    rows += [f"{p},query,{i},0" for i, p in enumerate(winter)]
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(rows) + "\n")
    code = (f"from pipelines.cli import main\nassert main(['data', 'inspect', '{manifest}', '--map', "
            f"'{tmp_path / 'map.png'}']) == 0")
    assert not modules_after(code) & {"torch", "ray"}
    assert (tmp_path / "map.png").is_file()


def test_sare_core_never_imports_ray():
    packages = [p.relative_to(REPO).with_suffix("").as_posix().replace("/", ".")
                for p in (REPO / "sare_core").rglob("*.py")]
    modules = [m.removesuffix(".__init__") for m in packages]
    code = "import importlib\n" + "\n".join(f"importlib.import_module('{m}')" for m in sorted(modules))
    loaded = modules_after(code)
    assert "ray" not in loaded and "torch" in loaded  # every module imported, torch ones included
