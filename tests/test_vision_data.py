"""Image data read from the layout torchvision's download leaves, and from folders of images."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from dlkit.data.vision import ImageFolderDataModule, TorchvisionDataModule, read_idx
from dlkit.errors import DlkitError, UsageError


def _idx(path, array: np.ndarray, gz: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


def _fake_mnist(root, folder="MNIST", n=60, gz=False):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("t10k", n // 3)):
        labels = np.arange(count) % 10
        images = rng.integers(0, 40, size=(count, 28, 28))
        images[:, labels, :] = 255  # a bright row at the label's index: learnable, and checkable
        _idx(raw / f"{split}-images-idx3-ubyte", images, gz)
        _idx(raw / f"{split}-labels-idx1-ubyte", labels, gz)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_torchvisions_raw_layout(tmp_path, gz):
    _fake_mnist(tmp_path, gz=gz)
    assert read_idx(next((tmp_path / "MNIST" / "raw").glob("train-labels*"))).tolist()[:3] == [0, 1, 2]
    dm = TorchvisionDataModule("mnist", root=str(tmp_path), batch_size=8)
    dm.setup()
    assert dm.spec.input_shape == (1, 28, 28) and dm.spec.num_classes == 10
    assert len(dm.train_set) + len(dm.val_set) == 60 and len(dm.test_set) == 20
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 1, 28, 28) and abs(float(dm.train_set.images.mean())) < 1e-4


def test_fashion_mnist_and_cifar10_layouts(tmp_path):
    _fake_mnist(tmp_path, folder="FashionMNIST")
    fashion = TorchvisionDataModule("fashion_mnist", root=str(tmp_path))
    fashion.setup()
    assert fashion.spec.class_names[0] == "T-shirt/top"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 255, size=(10, 3072), dtype=np.uint8), "labels": list(range(10))}
        with open(folder / name, "wb") as handle:
            pickle.dump(entry, handle)
    cifar = TorchvisionDataModule("cifar10", root=str(tmp_path), hflip=True, crop_padding=4)
    cifar.setup()
    assert cifar.spec.input_shape == (3, 32, 32) and cifar.spec.class_names[3] == "cat"
    assert len(cifar.test_set) == 10 and cifar.train_set[0][0].shape == (3, 32, 32)


def test_missing_dataset_without_torchvision_says_what_to_install(tmp_path):
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - not importable here: the message path is what we test
        dm = TorchvisionDataModule("mnist", root=str(tmp_path))
        with pytest.raises(UsageError, match=r"pip install 'dlkit\[vision\]'"):
            dm.setup()
    no_download = TorchvisionDataModule("mnist", root=str(tmp_path), download=False)
    with pytest.raises(DlkitError, match="data.download=false"):
        no_download.setup()


def test_image_folder_reads_classes_and_predict_inputs(tmp_path):
    from PIL import Image

    for cls, value in (("cat", 30), ("dog", 220)):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((20, 24, 3), value + i, dtype=np.uint8)).save(tmp_path / "train" / cls / f"{i}.png")
    dm = ImageFolderDataModule(root=str(tmp_path / "train"), image_size=(16, 16), channels=3, val_fraction=0.2)
    dm.setup()
    assert dm.spec.class_names == ["cat", "dog"] and dm.spec.input_shape == (3, 16, 16)
    batch = dm.encode_inputs([str(tmp_path / "train" / "dog" / "0.png")])
    assert batch.shape == (1, 3, 16, 16) and float(batch.mean()) > 0  # a bright dog is above the mean
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DlkitError, match="no images"):
        ImageFolderDataModule(root=str(tmp_path / "empty")).setup()
    with pytest.raises(UsageError, match="no such folder"):
        ImageFolderDataModule(root=str(tmp_path / "nowhere")).setup()
    assert torch.is_tensor(batch)
