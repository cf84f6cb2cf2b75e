"""Datasets: the official archive layouts, the class-disjoint protocol, counts, validation carve-out,
broken images, prepared copies, hub copies (mocked), and the `autolr data` commands.

Every dataset here is a tiny fake written by `_fake_datasets` in a temporary folder; nothing is
downloaded. Known split sizes are monkeypatched to the fakes' sizes where a test needs them to match.
"""

from __future__ import annotations

import logging
import time

import pytest
from _fake_datasets import (
    make_cars,
    make_cub,
    make_imagefolder,
    make_inshop,
    make_sop,
    truncate,
    write_cmyk,
    write_gray,
    write_palette,
)

from autolr.data import STANDARD_KS, load_data, protocol
from autolr.data.build import labels_of
from autolr.errors import AutolrError
from autolr.recipe import DataConfig

BUILDERS = {"cub200": make_cub, "cars196": make_cars, "sop": make_sop, "inshop": make_inshop}


@pytest.fixture
def cfg(tmp_path):
    """DataConfig with a private cache folder (never the user's ~/.cache)."""

    def make(name: str, root, **values) -> DataConfig:
        return DataConfig(name=name, root=str(root), cache_dir=str(tmp_path / "cache"), **values)

    return make


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Build a fake archive of `name` under tmp_path/data and make its sizes the known ones."""

    def make(name: str, **kwargs):
        built = BUILDERS[name](tmp_path / "data", **kwargs)
        monkeypatch.setitem(protocol.KNOWN_SIZES, name, built.sizes)
        return built

    return make


def sizes(bundle) -> dict[str, tuple[int, int]]:
    return {s: (len(ds), ds.features["label"].num_classes) for s, ds in bundle.splits().items()}


def names(split) -> list[str]:
    """The class name of every row."""
    feature = split.features["label"]
    return [feature.int2str(label) for label in labels_of(split)]


# --- the official layouts -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BUILDERS))
def test_archive_layouts_load_with_the_known_sizes(name, fake, cfg):
    built = fake(name)
    for root in (built.folder, built.folder.parent):  # the folder itself or the one it was extracted into
        bundle = load_data(cfg(name, root))
        assert sizes(bundle) == built.sizes
        assert bundle.recall_at == STANDARD_KS[name]
        for split in bundle.splits().values():
            labels = labels_of(split)
            assert sorted(set(labels)) == list(range(split.features["label"].num_classes)) or name == "inshop"


@pytest.mark.parametrize("name", list(BUILDERS))
def test_train_and_test_classes_are_disjoint(name, fake, cfg):
    bundle = load_data(cfg(name, fake(name).folder))
    evaluated = {n for s in bundle.eval_splits().values() for n in names(s)}
    assert set(names(bundle.train)).isdisjoint(evaluated)


def test_cub_splits_by_class_id(fake, cfg):
    bundle = load_data(cfg("cub200", fake("cub200", classes=3).folder))
    assert bundle.train.features["label"].names == ["001.Bird_1", "002.Bird_2", "003.Bird_3"]
    assert bundle.test.features["label"].names == ["101.Bird_101", "102.Bird_102", "103.Bird_103"]
    first = bundle.train.with_format("arrow")[0]["image"][0]["path"].as_py()
    assert first.endswith("images/001.Bird_1/Bird_1_0000_100.jpg")  # a path, decoded only on access


def test_cars_reads_the_mat_file(fake, cfg):
    bundle = load_data(cfg("cars196", fake("cars196").folder))
    assert bundle.train.features["label"].names[0] == "Car Make 1 Sedan 2012"
    assert bundle.test.features["label"].names[0] == "Car Make 99 Sedan 2012"


def test_inshop_query_and_gallery_share_items(fake, cfg):
    bundle = load_data(cfg("inshop", fake("inshop", items=3, per_item=3).folder))
    assert bundle.test is None and set(bundle.eval_splits()) == {"query", "gallery"}
    assert bundle.query.features["label"] == bundle.gallery.features["label"]
    assert names(bundle.query) == ["id_00000004", "id_00000005", "id_00000006"]
    assert set(names(bundle.gallery)) == set(names(bundle.query))


def test_inshop_drive_layout(tmp_path, monkeypatch, cfg):
    """The Google Drive layout: Eval/list_eval_partition.txt and Img/img/."""
    built = make_inshop(tmp_path / "data")
    (built.folder / "Eval").mkdir()
    (built.folder / "list_eval_partition.txt").rename(built.folder / "Eval" / "list_eval_partition.txt")
    (built.folder / "Img").mkdir()
    (built.folder / "img").rename(built.folder / "Img" / "img")
    monkeypatch.setitem(protocol.KNOWN_SIZES, "inshop", built.sizes)
    assert sizes(load_data(cfg("inshop", built.folder))) == built.sizes


def test_imagefolder_has_one_class_list(tmp_path, cfg, caplog):
    built = make_imagefolder(tmp_path, train=("a", "b", "c"), test=("b", "x"))
    bundle = load_data(cfg("imagefolder", built.folder))
    assert bundle.train.features["label"].names == ["a", "b", "c"]
    assert bundle.test.features["label"].names == ["b", "x"]
    assert labels_of(bundle.test) == [0, 0, 0, 1, 1, 1]
    assert bundle.num_classes == 3  # the head: one output per training class, none for "x"
    assert "not class-disjoint" in caplog.text


def test_wrong_root_names_the_expected_layout(tmp_path, cfg):
    with pytest.raises(AutolrError, match="images.txt.*CUB_200_2011/"):
        load_data(cfg("cub200", tmp_path))
    with pytest.raises(AutolrError, match="is not a folder"):
        load_data(cfg("sop", tmp_path / "nowhere"))


# --- counts ---------------------------------------------------------------------------------------


def test_count_mismatch_names_expected_and_found(tmp_path, cfg):
    built = make_cub(tmp_path)  # the real KNOWN_SIZES: a tiny copy looks like a partial download
    with pytest.raises(AutolrError) as e:
        load_data(cfg("cub200", built.folder))
    assert "expected 5,864 images in 100 classes, found 12 images in 4 classes" in str(e.value)
    assert "data.strict_counts = false" in str(e.value)


def test_strict_counts_off_accepts_and_warns(tmp_path, cfg, caplog):
    built = make_sop(tmp_path)
    bundle = load_data(cfg("sop", built.folder, strict_counts=False))
    assert sizes(bundle) == built.sizes
    assert "expected 59,551 images" in caplog.text


# --- broken and unusual images --------------------------------------------------------------------


def test_missing_and_truncated_files_are_listed(fake, cfg):
    built = fake("cub200")
    truncate(built.files[0])
    built.files[5].unlink()
    with pytest.raises(AutolrError) as e:
        load_data(cfg("cub200", built.folder))
    message = str(e.value)
    assert "2 of 24 images" in message and "data.skip_corrupt = true" in message
    assert f"{built.files[0]} (cannot decode" in message and f"{built.files[5]} (missing)" in message


def test_skip_corrupt_drops_and_counts(fake, cfg, caplog, monkeypatch):
    built = fake("cub200")
    truncate(built.files[0])
    built.files[5].unlink()
    monkeypatch.setitem(protocol.KNOWN_SIZES, "cub200", {"train": (10, 4), "test": (12, 4)})
    bundle = load_data(cfg("cub200", built.folder, skip_corrupt=True))
    assert len(bundle.train) == 10
    assert "2 of 24 images are missing or unreadable" in caplog.text


def test_skipped_files_break_strict_counts(fake, cfg):
    built = fake("cub200")
    built.files[0].unlink()
    with pytest.raises(AutolrError, match="1 unreadable images were skipped"):
        load_data(cfg("cub200", built.folder, skip_corrupt=True))


def test_cmyk_palette_and_grey_images_decode_to_rgb(fake, cfg):
    built = fake("cub200")
    write_cmyk(built.files[0])
    write_palette(built.files[1])  # a PNG under a .jpg name
    write_gray(built.files[2])
    train = load_data(cfg("cub200", built.folder)).train
    assert [train[i]["image"].mode for i in range(3)] == ["RGB", "RGB", "RGB"]


def _first_batch(split, workers: int):
    from autolr.data.loader import make_loader

    return next(iter(make_loader(split, _blank, batch_size=len(split), workers=workers, seed=0, train=False)))


def _blank(image):
    import torch

    return torch.zeros(1)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_file_broken_inside_fails_in_training_naming_it_and_the_fix(fake, cfg, workers):
    built = fake("cub200")
    built.files[0].write_bytes(b"not an image" + b"\xff\xd9")  # passes the cheap end-marker check
    train = load_data(cfg("cub200", built.folder, skip_corrupt=True)).train
    with pytest.raises(AutolrError) as e:
        _first_batch(train, workers)
    message = str(e.value)  # one line, also from a worker process (torch wraps it in a traceback)
    assert message.startswith(f"cannot read {built.files[0]} (UnidentifiedImageError") and "\n" not in message
    assert "--skip-corrupt" in message and "data.skip_corrupt = true alone" in message


def test_a_damaged_stored_image_names_its_row_and_the_fix():
    from autolr.data.build import make_split

    split = make_split([{"bytes": b"junk", "path": "a/1.jpg"}], [0], ["a"])
    with pytest.raises(AutolrError, match=r"image 0 of the split \(stored in the dataset, from a/1.jpg.*autolr data prepare"):
        _first_batch(split, workers=0)


# --- validation carve-out -------------------------------------------------------------------------


def test_validation_classes_size_and_seed():
    from autolr.data.split import validation_classes

    assert len(validation_classes(100, 0.2, seed=0)) == 20
    assert len(validation_classes(5, 0.2, seed=0)) == 2  # at least 2
    assert len(validation_classes(4, 0.9, seed=0)) == 2  # at least 2 left to train on
    assert validation_classes(3, 0.2, seed=0) == [] and validation_classes(50, 0.0, seed=0) == []
    assert validation_classes(100, 0.2, seed=1) == validation_classes(100, 0.2, seed=1)
    assert validation_classes(100, 0.2, seed=1) != validation_classes(100, 0.2, seed=2)


def test_selection_trains_and_scores_on_training_classes_only(fake, cfg):
    built = fake("cub200", classes=10, per_class=2)
    full = load_data(cfg("cub200", built.folder))
    sel = load_data(cfg("cub200", built.folder), seed=3, for_selection=True)
    assert sel.eval_on == "val" and sizes(sel) == {"train": (16, 8), "test": (4, 2)}
    assert set(names(sel.train)) | set(names(sel.test)) == set(names(full.train))
    assert set(names(sel.train)).isdisjoint(names(sel.test))
    assert sorted(set(labels_of(sel.train))) == list(range(8))


def test_selection_on_inshop_scores_validation_items_all_vs_all(fake, cfg):
    sel = load_data(cfg("inshop", fake("inshop", items=5).folder), for_selection=True)
    assert set(sel.eval_splits()) == {"test"} and sel.test.features["label"].num_classes == 2


def test_selection_needs_four_training_classes(tmp_path, cfg):
    built = make_imagefolder(tmp_path, train=("a", "b", "c"))
    assert len(load_data(cfg("imagefolder", built.folder)).train) == 9  # a plain run is fine
    with pytest.raises(AutolrError, match="3 training classes; a validation split needs at least 4"):
        load_data(cfg("imagefolder", built.folder), for_selection=True)
    with pytest.raises(AutolrError, match="val_fraction = 0.0"):
        load_data(cfg("imagefolder", make_imagefolder(tmp_path / "b").folder, val_fraction=0), for_selection=True)


def test_selection_on_the_test_split_warns(fake, cfg, caplog):
    built = fake("cub200")
    sel = load_data(cfg("cub200", built.folder, selection_split="test"), for_selection=True)
    assert sizes(sel) == built.sizes and "TEST split" in caplog.text


# --- prepared copies ------------------------------------------------------------------------------


def test_prepare_round_trip(fake, cfg, caplog):
    from autolr.data.prepare import prepare_dataset, read_meta

    built = fake("cub200", size=(40, 30))
    raw = load_data(cfg("cub200", built.folder))
    folder = prepare_dataset(cfg("cub200", built.folder), size=16, workers=1)
    assert folder.name == "cub200-16" and read_meta(folder)["splits"]["train"] == [12, 4]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="autolr"):
        again = load_data(cfg("cub200", built.folder.parent))  # the same source, given as the parent
    assert "loading the prepared copy" in caplog.text
    assert sizes(again) == sizes(raw) and names(again.test) == names(raw.test)
    image = again.train[0]["image"]
    assert image.mode == "RGB" and min(image.size) == 16 and image.size == (21, 16)


def test_prepared_copy_of_another_source_is_not_used(fake, cfg, tmp_path, caplog):
    from autolr.data.prepare import prepare_dataset

    built = fake("sop")
    prepare_dataset(cfg("sop", built.folder), size=0, workers=1)
    other = make_sop(tmp_path / "other")
    with caplog.at_level(logging.INFO, logger="autolr"):
        bundle = load_data(cfg("sop", other.folder))
    assert bundle.source == str(other.folder.resolve()) and "not using it" in caplog.text


def test_the_smallest_prepared_copy_that_is_big_enough_is_read(fake, cfg):
    from autolr.data.prepare import prepare_dataset

    built = fake("sop")
    for size in (0, 8, 12):
        prepare_dataset(cfg("sop", built.folder), size=size, workers=1)
    read = {m: load_data(cfg("sop", built.folder), min_side=m).source.rsplit("-", 1)[1] for m in (0, 6, 10, 14)}
    assert read == {0: "full", 6: "8", 10: "12", 14: "full"}


def test_prepare_decodes_every_image(fake, cfg):
    from autolr.data.prepare import prepare_dataset

    built = fake("inshop")
    built.files[3].write_bytes(b"not an image" + b"\xff\xd9")  # passes the cheap end-marker check
    with pytest.raises(AutolrError, match="1 images cannot be decoded.*--skip-corrupt"):
        prepare_dataset(cfg("inshop", built.folder), size=16, workers=1)
    with pytest.raises(AutolrError, match="1 unreadable images were skipped"):
        prepare_dataset(cfg("inshop", built.folder, skip_corrupt=True), size=16, workers=1)
    folder = prepare_dataset(cfg("inshop", built.folder, skip_corrupt=True, strict_counts=False), size=16, workers=1)
    assert len(load_data(cfg("inshop", built.folder)).train) == 15 and folder.name == "inshop-16"


def test_dataset_info(fake, cfg):
    from autolr.data.prepare import dataset_info

    built = fake("cars196", per_class=2)
    source, rows = dataset_info(cfg("cars196", built.folder), sample=5)
    assert source == str(built.folder.resolve())
    assert rows[0] == {"split": "train", "images": 8, "classes": 4, "per_class": (2, 2, 2),
                       "width": (24, 24, 24), "height": (16, 16, 16), "sampled": 5}


# --- hub copies (mocked: tests never touch the network) --------------------------------------------


def _hub_copy(classes: int, per_class: int):
    """A classification-split copy: every class in both train and test, like the hub's CUB and Cars."""
    import datasets

    from autolr.data.build import make_split

    def part(offset: int):
        rows = [(c, j) for c in range(classes) for j in range(per_class)]
        split = make_split([_png(c, j + offset) for c, j in rows], [c for c, _ in rows], [f"c{i}" for i in range(classes)])
        return split.add_column("bbox", [[0, 0, 1, 1]] * len(rows))

    return datasets.DatasetDict({"train": part(0), "test": part(per_class)})


def _png(c: int, j: int) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (c * 20, j * 20, 0)).save(out, format="PNG")
    return out.getvalue()


def test_hub_copy_is_rebuilt_class_disjoint(monkeypatch, cfg):
    from autolr.data import hub

    monkeypatch.setattr(hub, "download_splits", lambda name, hub_id, splits: _hub_copy(classes=6, per_class=2))
    monkeypatch.setitem(hub.NUM_CLASSES, "cub200", 6)
    monkeypatch.setitem(protocol.TRAIN_CLASSES, "cub200", 3)
    monkeypatch.setitem(protocol.KNOWN_SIZES, "cub200", {"train": (12, 3), "test": (12, 3)})
    bundle = load_data(cfg("cub200", "", hub_id="someone/cub"))
    assert bundle.source == "hub:someone/cub" and bundle.train.column_names == ["image", "label"]
    assert sorted(names(bundle.train)) == ["c0"] * 4 + ["c1"] * 4 + ["c2"] * 4  # both hub splits pooled
    assert bundle.test.features["label"].names == ["c3", "c4", "c5"]
    assert bundle.test[0]["image"].mode == "RGB"


def test_hub_copy_with_the_wrong_classes_is_refused(monkeypatch, cfg):
    from autolr.data import hub

    monkeypatch.setattr(hub, "download_splits", lambda name, hub_id, splits: _hub_copy(classes=6, per_class=2))
    with pytest.raises(AutolrError, match="has 6 classes, cars196 has 196"):
        load_data(cfg("cars196", ""))


def test_hub_offline_fails_fast_with_the_fix(cfg):
    start = time.monotonic()
    with pytest.raises(AutolrError, match="cannot be loaded.*set data.root"):
        load_data(cfg("cub200", "", hub_id="nobody/no-such-dataset"))
    assert time.monotonic() - start < 15


@pytest.mark.parametrize("name", ["sop", "inshop"])
def test_sop_and_inshop_have_no_hub_copy(name, cfg):
    with pytest.raises(AutolrError, match="no usable hub copy.*set data.root"):
        load_data(cfg(name, ""))


# --- the command line -----------------------------------------------------------------------------


def test_cli_prepare_and_info(fake, tmp_path):
    from typer.testing import CliRunner

    from autolr.cli.data import app

    built = fake("sop")
    cache = str(tmp_path / "cache")
    runner = CliRunner()
    done = runner.invoke(app, ["prepare", "sop", "--root", str(built.folder), "--size", "16", "--cache-dir", cache, "--workers", "1"])
    assert done.exit_code == 0, done.output
    assert done.output.strip().endswith("sop-16")
    shown = runner.invoke(app, ["info", "sop", "--root", str(built.folder), "--cache-dir", cache])
    assert shown.exit_code == 0, shown.output
    assert "sop-16" in shown.output and "images/class" in shown.output
    wrong = runner.invoke(app, ["info", "sopp"])
    assert isinstance(wrong.exception, AutolrError) and "choose one of" in str(wrong.exception)


def test_digits_needs_no_download_and_has_a_validation_split():
    bundle = load_data(DataConfig(name="digits"))
    assert sizes(bundle) == {"train": (901, 5), "test": (896, 5)} and bundle.train[0]["image"].mode == "RGB"
    sel = load_data(DataConfig(name="digits"), for_selection=True)
    assert sel.num_classes == 3 and sel.test.features["label"].num_classes == 2


def test_a_malformed_list_file_names_the_line(fake, cfg):
    built = fake("cub200")
    labels = built.folder / "image_class_labels.txt"
    labels.write_text(labels.read_text().replace("2 1\n", "2 one\n", 1))
    with pytest.raises(AutolrError, match=r"image_class_labels.txt:2: unexpected line '2 one'"):
        load_data(cfg("cub200", built.folder))
