"""Hub copies as they really are: only the splits a dataset reads, local hub-layout folders, gated repos,
and the data.root / data.hub_id that a dataset ignores.

The copies are fabricated by `_fake_datasets.make_hub_copy` from the real repositories' dataset cards
(splits, column names, label features; see CARS_CARD, CUB_CARD, CIFAR10_CARD there). Nothing is downloaded.
"""

from __future__ import annotations

import logging

import pytest
from _fake_datasets import CARS_CARD, CIFAR10_CARD, CIFAR100_CARD, CUB_CARD, make_cub, make_hub_copy

from autolr.data import check_source, hub, load_data, protocol
from autolr.data.build import labels_of
from autolr.errors import AutolrError
from autolr.recipe import DataConfig


@pytest.fixture(autouse=True)
def private_caches(tmp_path, monkeypatch):
    """The Hugging Face datasets cache in tmp_path, never the user's."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def _sizes(bundle) -> dict[str, tuple[int, int]]:
    return {s: (len(ds), ds.features["label"].num_classes) for s, ds in bundle.splits().items()}


@pytest.fixture
def cars_copy(tmp_path, monkeypatch):
    """Cars' nine-split copy with 4 classes (2 train, 2 test after the cut), 2 images per class and split."""
    monkeypatch.setitem(hub.NUM_CLASSES, "cars196", 4)
    monkeypatch.setitem(protocol.TRAIN_CLASSES, "cars196", 2)
    # train + test pooled: 4 images per class; the seven corrupted copies would add 14 more per class
    monkeypatch.setitem(protocol.KNOWN_SIZES, "cars196", {"train": (8, 2), "test": (8, 2)})
    return make_hub_copy(tmp_path / "hub", CARS_CARD, classes=4, per_class=2)


def test_cars_copy_reads_train_and_test_only_and_names_the_rest(cars_copy, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="autolr.data"):
        bundle = load_data(DataConfig(name="cars196", hub_id=str(cars_copy), cache_dir=str(tmp_path / "c")))
    assert _sizes(bundle) == {"train": (8, 2), "test": (8, 2)}  # strict_counts: exactly the real images
    assert bundle.source == f"hub:{cars_copy.resolve()}"
    assert bundle.train.features["label"].names == ["001.Class_1", "002.Class_2"]  # class-disjoint
    assert bundle.test.features["label"].names == ["003.Class_3", "004.Class_4"]
    assert sorted(labels_of(bundle.test)) == [0] * 4 + [1] * 4
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(ignored) == 1 and all(s in ignored[0] for s in CARS_CARD.copies_test)


def test_a_partial_download_of_train_and_test_reads(cars_copy, tmp_path):
    """`hf download --include 'data/train-*' 'data/test-*' README.md`: the card still lists nine splits."""
    for split in CARS_CARD.copies_test:
        (cars_copy / "data" / f"{split}-00000-of-00001.parquet").unlink()
    bundle = load_data(DataConfig(name="cars196", hub_id=str(cars_copy), cache_dir=str(tmp_path / "c")))
    assert _sizes(bundle) == {"train": (8, 2), "test": (8, 2)}


def test_data_info_shows_the_class_disjoint_split_of_a_local_copy(cars_copy, tmp_path, capsys):
    import logging

    from autolr.cli import main

    # the "ignored" line is a log record: read it from the logger itself, wherever an earlier test in this
    # process pointed the logger's console handler
    records: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("autolr")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        assert main(["data", "info", "cars196", "--hub-id", str(cars_copy), "--cache-dir", str(tmp_path / "c")]) == 0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    out = capsys.readouterr().out + "\n".join(records)
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 4}
    assert set(rows) >= {"train", "test"} and "contrast" not in rows and "ignored" in out  # named, not shown
    assert [c.strip() for c in rows["test"].split("│")[2:4]] == ["8", "2"]


def test_a_hub_repository_downloads_only_train_and_test(cars_copy, monkeypatch):
    """The hub's answers are replayed from the local copy: the card's nine splits, each its parquet files."""
    import datasets
    from datasets.data_files import DataFilesDict

    real_load = datasets.load_dataset
    asked = {}
    url = "hf://datasets/tanganke/stanford_cars@9abf6cf/data/{}-00000-of-00001.parquet"
    files = DataFilesDict({s: [url.format(s)] for s in CARS_CARD.splits})
    builder = type("Builder", (), {"config": type("Config", (), {"data_files": files})})

    def load(path, data_files=None):
        asked.update(path=path, data_files=data_files)
        local = {s: [str(cars_copy / "data" / f.rsplit("/", 1)[1]) for f in fs] for s, fs in data_files.items()}
        return real_load(str(cars_copy), data_files=local)

    monkeypatch.setattr(datasets, "load_dataset_builder", lambda path: builder)
    monkeypatch.setattr(datasets, "load_dataset", load)
    bundle = load_data(DataConfig(name="cars196"))
    assert asked == {"path": "tanganke/stanford_cars", "data_files": {s: [url.format(s)] for s in ("train", "test")}}
    assert bundle.source == "hub:tanganke/stanford_cars" and _sizes(bundle) == {"train": (8, 2), "test": (8, 2)}


def test_a_prepared_local_copy_is_found_again_by_any_spelling_of_its_folder(cars_copy, tmp_path, monkeypatch):
    from autolr.data.prepare import prepare_dataset

    cache = str(tmp_path / "c")
    folder = prepare_dataset(DataConfig(name="cars196", hub_id=str(cars_copy), cache_dir=cache), size=8, workers=1)
    monkeypatch.chdir(cars_copy.parent)
    bundle = load_data(DataConfig(name="cars196", hub_id=f"./{cars_copy.name}", cache_dir=cache))
    assert bundle.source == str(folder) and _sizes(bundle) == {"train": (8, 2), "test": (8, 2)}


def test_cub_copy_drops_its_bbox_column(tmp_path, monkeypatch):
    monkeypatch.setitem(hub.NUM_CLASSES, "cub200", 4)
    monkeypatch.setitem(protocol.TRAIN_CLASSES, "cub200", 2)
    monkeypatch.setitem(protocol.KNOWN_SIZES, "cub200", {"train": (12, 2), "test": (12, 2)})
    folder = make_hub_copy(tmp_path / "hub", CUB_CARD, classes=4, per_class=3)
    assert "bbox" in __import__("datasets").load_dataset(str(folder))["train"].column_names
    bundle = load_data(DataConfig(name="cub200", hub_id=str(folder), cache_dir=str(tmp_path / "c")))
    assert bundle.train.column_names == ["image", "label"] and _sizes(bundle)["test"] == (12, 2)


@pytest.mark.parametrize("card", [CIFAR10_CARD, CIFAR100_CARD], ids=["cifar10", "cifar100"])
def test_cifar_copy_in_its_config_folder(card, tmp_path):
    """plain_text/ and cifar100/ hold the files; CIFAR-100's class is fine_label (100), not coarse_label (20)."""
    folder = make_hub_copy(tmp_path / "hub", card, classes=3, per_class=2)
    bundle = load_data(DataConfig(name=card.repo.split("/")[1], hub_id=str(folder), strict_counts=False))
    assert _sizes(bundle) == {"train": (6, 3), "test": (6, 3)} and bundle.task == "classification"
    assert bundle.test[0]["image"].mode == "RGB" and bundle.train.column_names == ["image", "label"]


def test_a_copy_without_the_splits_is_refused(tmp_path):
    folder = make_hub_copy(tmp_path / "hub", CIFAR10_CARD, classes=3, per_class=2)
    (folder / "plain_text" / "test-00000-of-00001.parquet").rename(folder / "plain_text" / "valid-00000.parquet")
    (folder / "README.md").unlink()
    with pytest.raises(AutolrError, match=r"has splits train, validation; cifar10 reads train, test"):
        load_data(DataConfig(name="cifar10", hub_id=str(folder), strict_counts=False))


def test_a_missing_folder_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(AutolrError, match="neither a folder nor a hub id"):
        load_data(DataConfig(name="cars196", hub_id=str(tmp_path / "nowhere")))


def test_a_gated_repository_says_how_to_get_access(monkeypatch):
    """Only the hub calls are mocked: the repository's metadata is public, its files answer 401."""
    from types import SimpleNamespace

    import datasets
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError

    def gated(*args, **kwargs):  # the response: what the error and datasets read of it
        raise GatedRepoError("401 Client Error: access to this gated repo is restricted",
                             response=SimpleNamespace(status_code=401, headers={}, request=None))

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "dataset_info", lambda self, repo_id, **kw: object())
    monkeypatch.setattr(HfApi, "hf_hub_download", gated)
    with pytest.raises(AutolrError, match=r"'someone/gated-cars' is a gated dataset: log in with `hf auth login`"
                                          r" and accept its terms on https://huggingface.co/datasets/someone/gated-cars"):
        load_data(DataConfig(name="cars196", hub_id="someone/gated-cars"))
    monkeypatch.setattr(HfApi, "dataset_info", gated)  # the probe itself may be refused: the same message
    with pytest.raises(AutolrError, match="is a gated dataset"):
        load_data(DataConfig(name="cars196", hub_id="someone/gated-cars"))


# --- a data.root or data.hub_id that the dataset does not read -----------------------------------


def test_digits_warns_that_data_root_and_hub_id_are_ignored(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="autolr.data"):
        load_data(DataConfig(name="digits", root=str(tmp_path), hub_id="someone/digits"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"data.root = {str(tmp_path)!r} is ignored: the digits are built in" in w for w in warnings)
    assert any("data.hub_id = 'someone/digits' is ignored" in w for w in warnings)


def test_hub_id_beside_data_root_is_a_warning(tmp_path, monkeypatch, caplog):
    fake = make_cub(tmp_path / "data", classes=2, per_class=2)
    monkeypatch.setitem(protocol.KNOWN_SIZES, "cub200", fake.sizes)
    with caplog.at_level(logging.WARNING, logger="autolr.data"):
        load_data(DataConfig(name="cub200", root=str(fake.folder), hub_id="someone/cub", cache_dir=str(tmp_path / "c")))
    assert any("data.hub_id = 'someone/cub' is ignored: data.root is set" in r.getMessage() for r in caplog.records)


# --- check_source: what `autolr validate` asks, without reading an image -------------------------


def test_check_source_passes_what_a_run_reads(tmp_path, cars_copy):
    fake = make_cub(tmp_path / "data", classes=2, per_class=1)
    check_source(DataConfig(name="cub200", root=str(fake.folder.parent)))
    check_source(DataConfig(name="cars196", hub_id=str(cars_copy)))
    check_source(DataConfig(name="cars196"))  # the default hub id: looked up by the run, not here
    check_source(DataConfig(name="digits"))


@pytest.mark.parametrize(("values", "message"), [
    ({"name": "cub200", "root": "/no/such/folder"}, "is not a folder"),
    ({"name": "imagefolder"}, "needs data.root"),
    ({"name": "sop"}, "no usable hub copy.*set data.root"),
    ({"name": "cifar10", "root": "."}, "no cifar-10-binary.tar.gz"),
    ({"name": "cars196", "hub_id": "./not-here"}, "neither a folder nor a hub id"),
])
def test_check_source_refuses_what_a_run_would(values, message, tmp_path):
    with pytest.raises(AutolrError, match=message):
        check_source(DataConfig(cache_dir=str(tmp_path / "c"), **values))


def test_check_source_needs_the_index_files_not_the_images(tmp_path):
    fake = make_cub(tmp_path / "data", classes=2, per_class=1)
    for image in fake.files:
        image.unlink()  # images are the run's business (it stats and names every missing one)
    check_source(DataConfig(name="cub200", root=str(fake.folder)))
    (fake.folder / "image_class_labels.txt").unlink()
    with pytest.raises(AutolrError, match="image_class_labels.txt"):
        check_source(DataConfig(name="cub200", root=str(fake.folder)))


def test_a_run_trains_on_a_local_cars_copy(cars_copy, tmp_path):
    """`autolr run ... --set data.hub_id=DIR`: the run reads the copy's real train + test images only."""
    import json

    from autolr.cli import main

    out = tmp_path / "run"
    overrides = ["data.name=cars196", f"data.hub_id={json.dumps(str(cars_copy))}", "model.name=test_resnet",
                 "data.image_size=16", "data.batch_size=4", "train.epochs=1", "train.schedule=constant",
                 f"data.cache_dir={json.dumps(str(tmp_path / 'c'))}"]
    assert main(["run", "quickstart", "--output", str(out), *[a for o in overrides for a in ("--set", o)]]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    log = (out / "run.log").read_text()
    assert "reading only train and test" in log and "spatter" in log
    assert metrics["dataset"] == "cars196" and metrics["split"] == "test" and "recall@1" in metrics
