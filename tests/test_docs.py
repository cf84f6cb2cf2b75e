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
