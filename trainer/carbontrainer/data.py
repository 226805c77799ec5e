"""MNIST, decoded once into uint8 tensors.

Reads torchvision's on-disk layout without torchvision's per-sample PIL path: the idx files in
`<root>/MNIST/raw/` (plain or .gz), or the older `<root>/MNIST/processed/{training,test}.pt`.
Normalisation happens per batch on the training device (see `normalise`).
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

# The usual MNIST normalisation constants (mean and standard deviation of the training pixels).
MEAN = 0.1307
STD = 0.3081

_RAW_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_UBYTE = 0x08


class MissingDataError(Exception):
    """MNIST is not where we looked, and could not (or may not) be downloaded."""


@dataclass(frozen=True)
class Mnist:
    train_images: torch.Tensor  # uint8 [N, 28, 28]
    train_labels: torch.Tensor  # int64 [N]
    test_images: torch.Tensor
    test_labels: torch.Tensor


def read_idx(path: Path) -> torch.Tensor:
    """Decode one idx file (optionally gzip-compressed) into a uint8 tensor of its shape."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    zero, dtype_code, ndim = struct.unpack_from(">HBB", raw, 0)
    if zero != 0 or dtype_code != _IDX_UBYTE:
        raise MissingDataError(f"{path} is not an unsigned-byte idx file")
    shape = struct.unpack_from(f">{ndim}I", raw, 4)
    offset = 4 + 4 * ndim
    count = 1
    for size in shape:
        count *= size
    if len(raw) - offset != count:
        raise MissingDataError(f"{path} is truncated: expected {count} bytes of data")
    # bytearray: torch.frombuffer wants a writable buffer.
    flat = torch.frombuffer(bytearray(raw[offset:]), dtype=torch.uint8)
    return flat.reshape(shape)


def mnist_folder(root: Path) -> Path:
    """The `MNIST` folder for a torchvision root; also accepts that folder or its `raw/` itself."""
    for candidate in (root / "MNIST", root, root.parent):
        if (candidate / "raw").is_dir() or (candidate / "processed").is_dir():
            return candidate
    return root / "MNIST"


def _find_raw(folder: Path, name: str) -> Path | None:
    for path in (folder / "raw" / name, folder / "raw" / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _load_raw(folder: Path) -> Mnist | None:
    paths = {key: _find_raw(folder, name) for key, name in _RAW_FILES.items()}
    if any(path is None for path in paths.values()):
        return None
    tensors = {key: read_idx(path) for key, path in paths.items() if path is not None}
    return Mnist(
        train_images=tensors["train_images"],
        train_labels=tensors["train_labels"].long(),
        test_images=tensors["test_images"],
        test_labels=tensors["test_labels"].long(),
    )


def _load_processed(folder: Path) -> Mnist | None:
    train, test = folder / "processed" / "training.pt", folder / "processed" / "test.pt"
    if not (train.is_file() and test.is_file()):
        return None
    (train_images, train_labels), (test_images, test_labels) = torch.load(train), torch.load(test)
    return Mnist(train_images, train_labels.long(), test_images, test_labels.long())


def _download(root: Path) -> None:
    try:
        from torchvision.datasets import MNIST
    except ImportError as error:
        raise MissingDataError(f"--download needs torchvision ({error})") from error
    try:
        for train in (True, False):
            MNIST(root=str(root), train=train, download=True)
    except Exception as error:  # network errors come in many types
        raise MissingDataError(
            f"could not download MNIST into {root}: {type(error).__name__}: {error}"
        ) from error


def load_mnist(root: Path, download: bool = False) -> Mnist:
    """MNIST from `root` (torchvision layout); downloads only when `download` is true."""
    folder = mnist_folder(root)
    data = _load_raw(folder) or _load_processed(folder)
    if data is None and download:
        _download(root)
        data = _load_raw(mnist_folder(root))
    if data is None:
        raise MissingDataError(
            f"MNIST not found in {folder}/raw (need {', '.join(_RAW_FILES.values())}, "
            f"optionally .gz); copy the files there, point --data-dir or MNIST_DIR at a folder "
            f"that has them, or pass --download where the internet is reachable"
        )
    return data


def normalise(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B, 28, 28] → normalised [B, 1, 28, 28] on the images' device."""
    return images.unsqueeze(1).to(dtype).div_(255.0).sub_(MEAN).div_(STD)
