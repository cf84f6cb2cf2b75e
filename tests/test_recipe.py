"""Recipe schema: defaults, overrides, shipped recipes and every error message."""

import pytest

from autolr.errors import AutolrError
from autolr.recipe import Recipe, load_recipe, parse_recipe, shipped_recipes


def write(tmp_path, text, name="r.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_match_the_contract():
    r = Recipe()
    assert (r.model.name, r.model.pretrained, r.model.checkpoint, r.model.drop_top) == ("resnet50", True, "", 0)
    assert r.prune.mode == "fixed"
    assert (r.data.name, r.data.root, r.data.image_size, r.data.batch_size, r.data.workers) == ("digits", "", "auto", 40, 4)
    t = r.train
    assert (t.epochs, t.lr, t.head_lr, t.momentum, t.nesterov, t.weight_decay) == (50, 1e-3, 1e-2, 0.9, True, 5e-4)
    assert (t.schedule, t.milestones, t.gamma, t.seed, t.precision) == ("constant", [40], 0.2, 0, "auto")
    assert (r.eval.recall_at, r.eval.flip, r.eval.every) == ("auto", True, 0)
    assert r.output.dir == "runs"


def test_file_values_and_overrides(tmp_path):
    path = write(tmp_path, '[train]\nepochs = 7\n[data]\nbatch_size = 8\n')
    r = load_recipe(path, ["train.epochs=3", "model.name=resnet18", "eval.recall_at=[1, 5]", "train.lr=0.5"])
    assert r.train.epochs == 3 and r.data.batch_size == 8
    assert r.model.name == "resnet18"  # a bare word is a string
    assert r.eval.recall_at == [1, 5] and r.train.lr == 0.5
    assert r.output.name == "r"  # the run-folder prefix defaults to the file's name


def test_resolved_recipe_round_trips(tmp_path):
    r = load_recipe(write(tmp_path, '[train]\nepochs = 2\nlr = 1e-6\n'), ["data.image_size=48"])
    run = tmp_path / "r-20260101-000000"
    run.mkdir()
    (run / "recipe.toml").write_text(r.to_toml())
    again = load_recipe(run / "recipe.toml")
    assert again == r


@pytest.mark.parametrize(
    "text, message",
    [
        ("[data]\nbatchsize = 3\n", "unknown key data.batchsize; did you mean data.batch_size?"),
        ("[dat]\nroot = 'x'\n", "unknown section [dat]; did you mean [data]?"),
        ("[model]\nlr = 0.1\n", "unknown key model.lr; did you mean train.lr?"),
        ("[train]\nepochs = 'many'\n", "bad value for train.epochs: 'many'"),
        ("[train]\nschedule = 'linear'\n", "bad value for train.schedule: 'linear' (expected"),
        ("[data]\nimage_size = 'big'\n", "bad value for data.image_size: 'big'"),
        ("[model]\ndrop_top = -1\n", "bad value for model.drop_top: -1 (input should be greater than or equal to 0)"),
        ("[eval]\nrecall_at = []\n", "bad value for eval.recall_at: []"),
        ("[train]\nepochs = \n", "not valid TOML"),
        ("train = 3\n", "[train] must be a table"),
    ],
)
def test_errors_name_the_key_and_the_fix(tmp_path, text, message):
    with pytest.raises(AutolrError) as e:
        load_recipe(write(tmp_path, text))
    assert message in str(e.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("epochs=3", "expected section.key=value"),
        ("train.epoch=3", "did you mean train.epochs?"),
        ("train.epochs=-1", "--set: bad value for train.epochs: -1"),  # the file is fine: the --set is named
    ],
)
def test_override_errors(tmp_path, override, message):
    with pytest.raises(AutolrError, match=message.replace("?", r"\?").replace(".", r"\.")):
        load_recipe(write(tmp_path, ""), [override])


def test_unknown_recipe_name_suggests_a_shipped_one():
    with pytest.raises(AutolrError, match="did you mean quickstart"):
        load_recipe("quickstrat")


def test_shipped_recipes_all_validate_and_open_with_their_command():
    shipped = shipped_recipes()
    assert "quickstart" in shipped
    for name, path in shipped.items():
        load_recipe(name)
        first = path.read_text().splitlines()[0]
        assert first.startswith("# autolr run") or first.startswith("# accelerate launch"), name


def test_parse_recipe_accepts_dicts():
    assert parse_recipe({"train": {"epochs": 2}}).train.epochs == 2
