"""CIFAR-10/100 from fake binary archives (folder or .tar.gz), the hub, and its 10% validation split."""

import numpy as np
import pytest
from _fake_datasets import make_cifar10, make_cifar100, pixels

from autolr.data import load_data, protocol
from autolr.data.build import labels_of
from autolr.errors import AutolrError
from autolr.recipe import DataConfig


def cfg(name, root, **kw):
    return DataConfig(name=name, root=str(root), strict_counts=False, **kw)


@pytest.mark.parametrize("where", ["folder", "parent", "archive", "archive_parent"])
def test_cifar10_reads_the_binary_archive_from_any_of_its_places(tmp_path, where):
    fake = make_cifar10(tmp_path, classes=3, per_class=4, archive=where.startswith("archive"))
    root = fake.folder.parent if where.endswith("parent") else fake.folder
    bundle = load_data(cfg("cifar10", root))
    assert bundle.task == "classification" and bundle.eval_splits().keys() == {"test"}
    assert {s: (len(d), d.features["label"].num_classes) for s, d in bundle.splits().items()} == fake.sizes
    assert bundle.train.features["label"].names == ["class_0", "class_1", "class_2"]
    assert sorted(labels_of(bundle.test)) == [0] * 4 + [1] * 4 + [2] * 4
    first = bundle.test[0]  # test_batch.bin's first record: class 0, image 0 (pixels planes R, G, B)
    assert first["label"] == 0 and np.array_equal(np.asarray(first["image"]), pixels(32, 32, 10_000))


def test_cifar100_takes_the_fine_label(tmp_path):
    fake = make_cifar100(tmp_path, classes=7, per_class=2)  # coarse label = fine // 5: 0 or 1
    bundle = load_data(cfg("cifar100", fake.folder))
    assert sorted(set(labels_of(bundle.train))) == list(range(7)) and bundle.num_classes == 7


def test_the_pickled_python_version_is_refused(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"pickle")
    with pytest.raises(AutolrError, match="python \\(pickled\\) version.*binary version"):
        load_data(cfg("cifar10", tmp_path))


def test_a_file_of_the_wrong_size_is_an_error(tmp_path):
    fake = make_cifar10(tmp_path, classes=2, per_class=2)
    (fake.folder / "test_batch.bin").write_bytes(b"\0" * 100)
    with pytest.raises(AutolrError, match="not made of 3073-byte records"):
        load_data(cfg("cifar10", fake.folder))


def test_known_sizes_catch_a_partial_copy(tmp_path):
    fake = make_cifar10(tmp_path, classes=2, per_class=2)
    with pytest.raises(AutolrError, match="expected 50,000 images in 10 classes, found 4 images in 2 classes"):
        load_data(DataConfig(name="cifar10", root=str(fake.folder)))
    assert protocol.KNOWN_SIZES["cifar100"]["test"] == (10000, 100)


def test_selection_holds_out_10_percent_of_each_class_images_seeded(tmp_path):
    fake = make_cifar10(tmp_path, classes=3, per_class=20)
    full = load_data(cfg("cifar10", fake.folder))
    a = load_data(cfg("cifar10", fake.folder), for_selection=True, seed=0)
    b = load_data(cfg("cifar10", fake.folder), for_selection=True, seed=1)
    assert a.eval_on == "val" and a.num_classes == 3  # the same classes: accuracy on held-out images
    assert sorted(labels_of(a.test)) == [0, 0, 1, 1, 2, 2] and len(a.train) == 54
    assert a.test["image"][0].tobytes() != b.test["image"][0].tobytes()  # another seed, other images
    held = {im.tobytes() for im in a.test["image"]}
    assert not held & {im.tobytes() for im in a.train["image"]} and len(full.train) == 60


def test_hub_copy_uses_its_train_and_test_and_the_fine_label(monkeypatch):
    import datasets

    from autolr.data import hub

    def part(n):
        features = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(num_classes=3),
                                      "coarse_label": datasets.ClassLabel(num_classes=2)})
        images = [pixels(32, 32, i) for i in range(n)]
        return datasets.Dataset.from_dict({"img": images, "fine_label": [i % 3 for i in range(n)],
                                           "coarse_label": [0] * n}, features=features)

    monkeypatch.setattr(hub, "download_splits", lambda name, hub_id, splits: datasets.DatasetDict(train=part(6), test=part(3)))
    bundle = load_data(DataConfig(name="cifar100", strict_counts=False))
    assert bundle.source == "hub:uoft-cs/cifar100" and labels_of(bundle.train) == [0, 1, 2, 0, 1, 2]
    assert bundle.test[0]["image"].mode == "RGB" and bundle.task == "classification"


def test_data_info_cli_shows_cifar(tmp_path, capsys):
    from autolr.cli import main

    fake = make_cifar10(tmp_path, classes=2, per_class=3)
    assert main(["data", "info", "cifar10", "--root", str(fake.folder)]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "test" in out and "32 / 32 / 32" in out


def test_a_prepared_copy_keeps_the_images_and_the_task(tmp_path):
    from autolr.data.prepare import prepare_dataset

    fake = make_cifar10(tmp_path, classes=2, per_class=3)
    config = cfg("cifar10", fake.folder, cache_dir=str(tmp_path / "cache"))
    folder = prepare_dataset(config, size=0, workers=1)  # size 0: the lossless images as they are
    bundle = load_data(config)
    assert bundle.source == str(folder) and bundle.task == "classification"
    assert np.array_equal(np.asarray(bundle.test[0]["image"]), pixels(32, 32, 10_000))
