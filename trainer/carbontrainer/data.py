"""MNIST, decoded once into uint8 tensors.

Reads torchvision's on-disk layout without torchvision's per-sample PIL path: the idx files in
`<root>/MNIST/raw/` (plain or .gz), or the older `<root>/MNIST/processed/{training,test}.pt`.
Normalisation happens per batch on the training device (see `normalise`).
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
import urllib.request
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
# Where torchvision downloads MNIST from (torchvision.datasets.MNIST.mirrors).
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
DOWNLOAD_TIMEOUT_S = 60


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


def user_data_root() -> Path:
    """Where MNIST is downloaded when the data folder is not writable (a read-only image
    path, a read-only volume): ``$XDG_CACHE_HOME/carbonaware/mnist``, else ~/.cache/..."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "carbonaware" / "mnist"


def mirrors() -> list[str]:
    """Base URLs that serve ``<name>.gz`` for the four MNIST files: ``MNIST_MIRROR``
    (comma-separated, e.g. a mirror inside an air-gapped network), else torchvision's."""
    configured = [m.strip() for m in os.environ.get("MNIST_MIRROR", "").split(",") if m.strip()]
    return [m if m.endswith("/") else m + "/" for m in configured] or list(MIRRORS)


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _fetch(name: str) -> bytes:
    """One raw idx file, decompressed and checked, from the first mirror that has it."""
    errors = []
    for base in mirrors():
        url = f"{base}{name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                raw = gzip.decompress(response.read())
            return raw
        except (OSError, EOFError, ValueError) as error:  # URLError, HTTPError, bad gzip
            errors.append(f"{url}: {getattr(error, 'reason', None) or error}")
    raise MissingDataError("; ".join(errors))


def download(root: Path) -> Path:
    """Download the MNIST files missing under ``root`` (or, when ``root`` is not writable,
    under :func:`user_data_root`); the torchvision root they are in."""
    target = root if _writable(root / "MNIST" / "raw") else user_data_root()
    folder = target / "MNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    for name in _RAW_FILES.values():
        if _find_raw(folder, name) is not None:
            continue
        partial = folder / f".{name}.partial"
        partial.write_bytes(_fetch(name))
        read_idx(partial)  # a truncated or foreign file fails here, before it is kept
        partial.replace(folder / name)
    return target


def load_mnist(root: Path, download_missing: bool = False) -> Mnist:
    """MNIST from ``root`` (torchvision layout); with ``download_missing``, what is missing
    is downloaded (or was, by an earlier run, into :func:`user_data_root`)."""
    folder = mnist_folder(root)
    data = _load_raw(folder) or _load_processed(folder)
    failed = ""
    if data is None and download_missing:
        try:
            data = _load_raw(download(root) / "MNIST")
        except (MissingDataError, OSError) as error:
            failed = f"; downloading it failed: {error}"
    if data is None:
        advice = "" if download_missing else ", or pass --download where the internet is reachable"
        raise MissingDataError(
            f"MNIST not found in {folder}/raw (need {', '.join(_RAW_FILES.values())}, "
            f"optionally .gz); copy the files there or point --data-dir or MNIST_DIR at a "
            f"folder that has them{advice}{failed}"
        )
    return data


def normalise(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B, 28, 28] → normalised [B, 1, 28, 28] on the images' device."""
    return images.unsqueeze(1).to(dtype).div_(255.0).sub_(MEAN).div_(STD)
