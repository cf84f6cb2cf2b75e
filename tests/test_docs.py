"""The README keeps its promises: the two set-up commands first, and the quickstart recipe verbatim."""

from pathlib import Path

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


def test_readme_custom_adapter_example_runs(tmp_path, monkeypatch):
    """The README's custom model and adapter register, cut and train as the README says."""
    import json
    import sys

    from autolr.adapters import _REGISTRY

    import autolr
    from autolr.cli import main

    text = (ROOT / "README.md").read_text()
    code = next(b for b in text.split("```python\n")[1:] if b.startswith("# my_adapters.py")).split("```")[0]
    (tmp_path / "my_adapters.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("autolr.adapters._REGISTRY", list(_REGISTRY))  # the test leaves the registry as it was
    sys.modules.pop("my_adapters", None)
    __import__("my_adapters")
    import io
    from contextlib import redirect_stdout

    with redirect_stdout(io.StringIO()) as out:
        assert main(["adapters", "show", "mynet_tiny", "--prune", "1", "--json"]) == 0
    info = json.loads(out.getvalue())
    assert info["adapter"] == "mynet" and len(info["blocks"]) == 3 and info["num_features"] == 256
    recipe = autolr.load_recipe("quickstart", [
        "model.name=mynet_tiny", "model.drop_top=1", "data.image_size=16", "train.epochs=1", "data.batch_size=64",
        "autolr.max_trials=1", "eval.flip=false",
    ])
    result = autolr.run(recipe, output=tmp_path / "run")
    assert 0 <= result.metrics["recall@1"] <= 1


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
    import shlex

    from autolr.cli import main

    text = (ROOT / "README.md").read_text()
    lines = [line.split("#")[0].strip() for block in text.split("```bash")[1:] for line in block.split("```")[0].splitlines()]
    runs = [shlex.split(line) for line in lines if line.startswith("autolr run ") and "$" not in line]
    assert len(runs) >= 3
    for argv in runs:
        recipe, rest = argv[2], argv[3:]
        sets = [rest[i + 1] for i, a in enumerate(rest) if a in ("--set", "-s")]
        args = [a for s in sets for a in ("--set", s)]
        assert main(["validate", recipe, *args]) == 0, " ".join(argv)
