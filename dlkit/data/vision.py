"""Image classification datamodules."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dlkit.data.base import Batch, DataModule, split_indices
from dlkit.data.spec import DataSpec
from dlkit.errors import DlkitError, UsageError


class DigitsDataModule(DataModule):
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), standardised with train statistics."""

    kind = "image_classification"

    def __init__(self, batch_size: int = 64, val_fraction: float = 0.1, test_fraction: float = 0.2,
                 split_seed: int = 0, normalize: bool = True, num_workers: int | None = 0,
                 pin_memory: bool | None = None) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        self.fractions = (1.0 - val_fraction - test_fraction, val_fraction, test_fraction)
        self.split_seed = split_seed
        self.normalize = normalize

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.tensor(digits.target, dtype=torch.long)
        parts = split_indices(len(labels), self.fractions, self.split_seed)
        self.mean, self.std = (images[parts[0]].mean(), images[parts[0]].std()) if self.normalize else (0.0, 1.0)
        images = (images - self.mean) / self.std
        self.train_set, self.val_set, self.test_set = (ImageTensors(images[p], labels[p]) for p in parts)
        self._spec = DataSpec(kind=self.kind, num_classes=10, class_names=[str(i) for i in range(10)],
                              input_shape=(1, 8, 8))

    def inference_state(self) -> dict[str, Any] | None:
        """The normalisation (train mean and std)."""
        return {"mean": float(self.mean), "std": float(self.std)} if hasattr(self, "mean") else None

    def restore(self, state: dict[str, Any], spec: DataSpec) -> None:
        self.mean, self.std = float(state["mean"]), float(state["std"])
        self._spec = spec

    def client_preprocessing(self, out_dir: Path) -> dict[str, Any]:
        """Image files as load_image reads them; arrays in the dataset's own 0-16 scale."""
        return image_steps((1, 8, 8), self.mean, self.std,
                           arrays="an 8x8 array of values in the dataset's 0-16 scale: x = array / 16")

    def examples(self, stage: str, indices: list[int]) -> list[np.ndarray]:
        """The split's images as uint8 [H, W, C] pixels (the normalisation undone)."""
        return viewable(self.split_set(stage), indices, self.mean, self.std)

    def encode_inputs(self, raw: list[str | bytes]) -> torch.Tensor:
        """A batch from .npy arrays of 8x8 values in the dataset's 0-16 scale, or images (resized to 8x8): files
        named by path, or their bytes (what `dlkit serve` receives)."""
        images = []
        for item in raw:
            if is_array(item) and (isinstance(item, bytes) or Path(item).is_file()):
                array = np.load(_readable(item))
                images.append(torch.from_numpy(array.astype(np.float32)).reshape(1, 8, 8) / 16.0)
            else:
                images.append(load_image(item, (1, 8, 8)))
        return (torch.stack(images) - self.mean) / self.std


def viewable(images: ImageTensors, indices: list[int], mean: Any, std: Any) -> list[np.ndarray]:
    """Images of a dataset as a person looks at them: the normalisation undone, uint8 [H, W, C] pixels."""
    picked = images.images[torch.as_tensor(indices, dtype=torch.long)] * std + mean
    pixels = (picked.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    return list(pixels.numpy())


class ImageTensors(Dataset):
    """Images [N, C, H, W] and labels, with optional light augmentation (flip, padded random crop) for training."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, hflip: bool = False, crop_padding: int = 0) -> None:
        self.images, self.labels, self.hflip, self.crop_padding = images, labels, hflip, crop_padding

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if self.hflip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        if self.crop_padding:
            p = self.crop_padding
            padded = torch.nn.functional.pad(image, (p, p, p, p))
            top, left = torch.randint(0, 2 * p + 1, (2,)).tolist()
            image = padded[:, top:top + image.shape[1], left:left + image.shape[2]]
        return image, self.labels[index]

    def __getitems__(self, indices: list[int]) -> Batch | list[tuple[torch.Tensor, torch.Tensor]]:
        """A batch by one gather per tensor: the rows default_collate would stack, without a lookup per row.

        With augmentation each row is drawn on its own as before, so the random draws stay the same.
        """
        if self.hflip or self.crop_padding:
            return [self[i] for i in indices]
        index = torch.as_tensor(indices, dtype=torch.long)
        return Batch((self.images[index], self.labels[index]))


class ImageDataModule(DataModule):
    """Subclasses load uint8/float images and integer labels; this class splits, normalises and augments."""

    kind = "image_classification"

    def __init__(self, batch_size: int = 128, val_fraction: float = 0.1, normalize: bool = True, hflip: bool = False,
                 crop_padding: int = 0, split_seed: int = 0, num_workers: int | None = 0,
                 pin_memory: bool | None = None) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        self.val_fraction, self.normalize, self.split_seed = val_fraction, normalize, split_seed
        self.augment = {"hflip": hflip, "crop_padding": crop_padding}
        self.class_names: list[str] = []

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """'train' and optionally 'test': (images [N, C, H, W] float in [0, 1], labels [N] long)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        splits = self.load()
        images, labels = splits["train"]
        if "test" not in splits:  # cut a test split out of train too
            parts = split_indices(len(labels), (0.8, 0.2), self.split_seed + 1)
            splits["test"] = (images[parts[1]], labels[parts[1]])
            images, labels = images[parts[0]], labels[parts[0]]
        train_idx, val_idx = split_indices(len(labels), (1 - self.val_fraction, self.val_fraction), self.split_seed)
        self.mean = images[train_idx].mean(dim=(0, 2, 3), keepdim=True) if self.normalize else 0.0
        self.std = images[train_idx].std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6) if self.normalize else 1.0
        test_images, test_labels = splits["test"]
        self.train_set = ImageTensors(self._norm(images[train_idx]), labels[train_idx], **self.augment)
        self.val_set = ImageTensors(self._norm(images[val_idx]), labels[val_idx])
        self.test_set = ImageTensors(self._norm(test_images), test_labels)
        num_classes = len(self.class_names) or int(labels.max()) + 1
        self._spec = DataSpec(kind=self.kind, num_classes=num_classes,
                              class_names=self.class_names or [str(i) for i in range(num_classes)],
                              input_shape=tuple(images.shape[1:]))

    def _norm(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def inference_state(self) -> dict[str, Any] | None:
        """The normalisation: per-channel train mean and std as nested lists (or the plain 0.0 and 1.0)."""
        if not hasattr(self, "mean"):
            return None
        return {name: value.tolist() if isinstance(value, torch.Tensor) else float(value)
                for name, value in (("mean", self.mean), ("std", self.std))}

    def restore(self, state: dict[str, Any], spec: DataSpec) -> None:
        self.mean, self.std = (torch.tensor(state[name]) if isinstance(state[name], list) else float(state[name])
                               for name in ("mean", "std"))
        self.class_names = list(spec.class_names or [])
        self._spec = spec

    def client_preprocessing(self, out_dir: Path) -> dict[str, Any]:
        """Image files as load_image reads them, normalised per channel."""
        return image_steps(self.spec.input_shape, self.mean, self.std,
                           arrays="a [C, H, W] array: x = array / 255 when its largest value is above 1, else as it is")

    def examples(self, stage: str, indices: list[int]) -> list[np.ndarray]:
        """The split's images as uint8 [H, W, C] pixels (the normalisation undone)."""
        return viewable(self.split_set(stage), indices, self.mean, self.std)

    def encode_inputs(self, raw: list[str | bytes]) -> torch.Tensor:
        """A batch of images (PNG/JPEG, resized to the training size) or .npy arrays: files named by path, or their
        bytes (what `dlkit serve` receives)."""
        shape = self.spec.input_shape
        return self._norm(torch.stack([load_image(item, shape) for item in raw]))


def image_steps(shape: tuple[int, ...], mean: Any, std: Any, arrays: str) -> dict[str, Any]:
    """model.json's preprocessing of images: the steps of load_image and the normalisation, with their numbers."""
    channels = shape[0]

    def per_channel(value: Any) -> list[float]:
        flat = torch.as_tensor(value, dtype=torch.float32).flatten().tolist()
        return flat * channels if len(flat) == 1 else flat

    return {"input": "image", "color_mode": "L" if channels == 1 else "RGB", "height": shape[1], "width": shape[2],
            "resize": "bicubic", "scale": 1 / 255, "mean": per_channel(mean), "std": per_channel(std),
            "layout": "float32 [batch, channels, height, width]",
            "steps": (f"image file: convert to {'L' if channels == 1 else 'RGB'}, resize to width x height (PIL "
                      "bicubic), x = pixels * scale as [channels, height, width]; array (.npy): " + arrays
                      + "; then x = (x - mean[c]) / std[c] for each channel c")}


NPY_MAGIC = b"\x93NUMPY"  # how every .npy file starts


def is_array(item: str | Path | bytes) -> bool:
    """Whether an input is a .npy array: a file named *.npy, or bytes in the .npy format."""
    return item.startswith(NPY_MAGIC) if isinstance(item, bytes) else Path(item).suffix == ".npy"


def _readable(item: str | Path | bytes) -> io.BytesIO | Path:
    """What numpy and PIL open: the file named, or the bytes given."""
    return io.BytesIO(item) if isinstance(item, bytes) else Path(item)


def load_image(item: str | Path | bytes, shape: tuple[int, ...]) -> torch.Tensor:
    """One image (a file's path, or the bytes of an image file or a .npy array) as a float tensor [C, H, W] in
    [0, 1] of the given shape."""
    if not isinstance(item, bytes) and not Path(item).is_file():
        raise DlkitError(f"image file {item} does not exist")
    source = _readable(item)
    if is_array(item):
        array = np.load(source).astype(np.float32)
        array = array / 255.0 if array.max() > 1.0 else array
        return torch.from_numpy(array).reshape(shape)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            image = image.convert("L" if shape[0] == 1 else "RGB").resize((shape[2], shape[1]),
                                                                          Image.Resampling.BICUBIC)
            array = np.asarray(image, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as err:
        if isinstance(item, bytes):  # (PIL's message names the in-memory file object)
            raise DlkitError("these bytes are no image PIL can read (PNG, JPEG) nor a .npy array") from err
        raise DlkitError(f"image file {item} cannot be read as an image ({err})") from err
    return torch.from_numpy(array).reshape(shape[1], shape[2], shape[0]).permute(2, 0, 1).contiguous()


# -- torchvision datasets, read from the layout torchvision's download leaves ------------------------------
MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format), plain or gzipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = struct.unpack(f">{dims}I", data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _existing(path: Path) -> Path | None:
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


class TorchvisionDataModule(ImageDataModule):
    """MNIST, Fashion-MNIST or CIFAR-10 under `root` in torchvision's layout; downloaded there by torchvision
    on first use (`pip install 'dlkit[vision]'`)."""

    def __init__(self, name: str, root: str, download: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if name not in TORCHVISION:
            raise UsageError(f"data.name={name!r}: choose one of {', '.join(TORCHVISION)}")
        self.name, self.root, self.download = name, Path(root).expanduser(), download
        self.class_names = {"cifar10": CIFAR10_CLASSES, "fashion_mnist": FASHION_CLASSES}.get(
            name, [str(i) for i in range(10)])

    def _present(self) -> bool:
        if self.name == "cifar10":
            return (self.root / "cifar-10-batches-py" / "test_batch").is_file()
        raw = self.root / TORCHVISION[self.name] / "raw"
        return all(_existing(raw / f) for files in MNIST_FILES.values() for f in files)

    def prepare_data(self) -> None:
        if self._present():
            return
        if not self.download:
            raise DlkitError(f"{self.name} is not under {self.root} and data.download=false")
        try:
            import torchvision
        except ImportError as err:
            raise UsageError(f"{self.name} is not under {self.root}; to download it, pip install 'dlkit[vision]' "
                             "(torchvision), or copy the files there in torchvision's layout.") from err
        try:
            getattr(torchvision.datasets, TORCHVISION[self.name])(str(self.root), train=True, download=True)
            getattr(torchvision.datasets, TORCHVISION[self.name])(str(self.root), train=False, download=True)
        except Exception as err:  # noqa: BLE001 - a download fails in many ways; say which and what to do
            raise DlkitError(f"could not download {self.name} into {self.root} ({type(err).__name__}: {err}); "
                             "check the network, or copy the files there in torchvision's layout.") from err

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        self.prepare_data()
        return self._cifar() if self.name == "cifar10" else self._mnist()

    def _mnist(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        raw = self.root / TORCHVISION[self.name] / "raw"
        splits = {}
        for split, (images_file, labels_file) in MNIST_FILES.items():
            images = torch.from_numpy(read_idx(_existing(raw / images_file)).copy()).float().div(255).unsqueeze(1)
            labels = torch.from_numpy(read_idx(_existing(raw / labels_file)).astype(np.int64))
            splits[split] = (images, labels)
        return splits

    def _cifar(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        folder = self.root / "cifar-10-batches-py"

        def batch(names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            data, labels = [], []
            for name in names:
                with open(folder / name, "rb") as handle:
                    entry = pickle.load(handle, encoding="latin1")  # noqa: S301 - CIFAR's own format
                data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels += list(entry["labels"])
            return torch.from_numpy(np.concatenate(data)).float().div(255), torch.tensor(labels, dtype=torch.long)

        return {"train": batch([f"data_batch_{i}" for i in range(1, 6)]), "test": batch(["test_batch"])}


class ImageFolderDataModule(ImageDataModule):
    """A folder per class (root/cat/*.png, root/dog/*.jpg ...), resized to image_size; optional test_root."""

    EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".npy")

    def __init__(self, root: str, test_root: str | None = None, image_size: tuple[int, int] = (64, 64),
                 channels: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root, self.test_root = Path(root).expanduser(), Path(test_root).expanduser() if test_root else None
        self.shape = (channels, *image_size)

    def _read(self, root: Path, classes: list[str] | None) -> tuple[torch.Tensor, torch.Tensor]:
        if not root.is_dir():
            raise UsageError(f"data.root={root}: no such folder (expected one sub-folder of images per class).")
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        classes = classes or [p.name for p in folders]
        images, labels = [], []
        for folder in folders:
            if folder.name not in classes:
                raise DlkitError(f"class folder {folder} is not among the training classes {classes}")
            for file in sorted(folder.iterdir()):
                if file.suffix.lower() in self.EXTENSIONS:
                    images.append(load_image(file, self.shape))
                    labels.append(classes.index(folder.name))
        if not images:
            raise DlkitError(f"no images ({', '.join(self.EXTENSIONS)}) in the class folders of {root}")
        self.class_names = classes
        return torch.stack(images), torch.tensor(labels, dtype=torch.long)

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        splits = {"train": self._read(self.root, None)}
        if self.test_root is not None:
            splits["test"] = self._read(self.test_root, self.class_names)
        return splits
