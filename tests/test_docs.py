"""The README keeps its promises: the two set-up commands first, and the quickstart recipe verbatim."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from _install import pip_install

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_demo_and_test():
    text = (ROOT / "README.md").read_text()
    first_block = text.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]


def test_readme_shows_the_quickstart_recipe_in_full():
    recipe = (ROOT / "recipes" / "quickstart.toml").read_text().strip()
    assert recipe in (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def readme_block(section: str, lang: str, first_line: str) -> str:
    """The README code block in `section` of language `lang` that starts with `first_line`."""
    return next(b for b in section.split(f"```{lang}\n")[1:] if b.startswith(first_line)).split("```")[0]


@pytest.mark.slow
def test_readme_custom_backbone_installs_and_runs_as_a_package(tmp_path):
    """The README's two files, as written, are a package that installs (not -e) and whose model every
    `autolr` process knows through the entry point alone: `adapters show` and a run in new processes."""
    section = (ROOT / "README.md").read_text().split("## Custom backbones", 1)[1].split("\n## ", 1)[0]
    package, target = tmp_path / "my-adapters", tmp_path / "site"
    package.mkdir()
    (package / "my_adapters.py").write_text(readme_block(section, "python", "# my_adapters.py"))
    (package / "pyproject.toml").write_text(readme_block(section, "toml", "# pyproject.toml"))
    commands = [shlex.split(line.split("#")[0]) for line in readme_block(section, "bash", "pip install").splitlines()]
    assert commands[0] == ["pip", "install", "."]
    pip_install(package, "--target", str(target))
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    autolr = lambda *args: subprocess.run([sys.executable, "-m", "autolr", *args], cwd=tmp_path, env=env,  # noqa: E731
                                          capture_output=True, text=True, timeout=600)
    show = autolr(*commands[1][1:], "--json")
    assert show.returncode == 0, show.stderr
    info = json.loads(show.stdout)
    assert info["adapter"] == "mynet" and len(info["blocks"]) == 3 and info["num_features"] == 256
    tiny = ["data.image_size=16", "train.epochs=1", "data.batch_size=64", "autolr.max_trials=1", "eval.flip=false"]
    run = autolr(*commands[2][1:], *[a for t in tiny for a in ("--set", t)], "--output", str(tmp_path / "run"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert 0 <= json.loads((tmp_path / "run" / "metrics.json").read_text())["recall@1"] <= 1


def test_readme_has_a_section_per_dataset_with_its_recipe():
    text = (ROOT / "README.md").read_text()
    datasets = text.split("## Datasets", 1)[1].split("\n## ", 1)[0]
    for name, recipe in [("cub200", "resnet50_cub"), ("cars196", "resnet50_cars"), ("sop", "resnet50_sop"),
                         ("inshop", "resnet50_inshop"), ("imagefolder", None)]:
        assert f"(`{name}`)" in datasets, name
        if recipe:
            assert f"autolr run {recipe}" in datasets and (ROOT / "recipes" / f"{recipe}.toml").is_file()
    assert "autolr data prepare" in datasets


def test_readme_run_commands_name_valid_recipes_and_keys():
    """Every `autolr run RECIPE --set ...` line in the README validates: the docs cannot drift from the schema."""
    from autolr.cli import main

    text = (ROOT / "README.md").read_text()
    lines = [line.split("#")[0].strip() for block in text.split("```bash")[1:] for line in block.split("```")[0].splitlines()]
    runs = [shlex.split(line) for line in lines if line.startswith("autolr run ") and "$" not in line and "mynet" not in line]
    assert len(runs) >= 3
    for argv in runs:
        recipe, rest = argv[2], argv[3:]
        sets = [rest[i + 1] for i, a in enumerate(rest) if a in ("--set", "-s")]
        args = [a for s in sets for a in ("--set", s)]
        assert main(["validate", recipe, "--no-data", *args]) == 0, " ".join(argv)  # /data/... is an example
