"""MNIST loading: the real idx files, the other torchvision layouts, and the missing-data error."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch
from carbontrainer.data import MissingDataError, load_mnist, normalise, read_idx


def _write_idx(path: Path, tensor: torch.Tensor, compress: bool = False) -> None:
    header = struct.pack(">HBB", 0, 0x08, tensor.dim()) + struct.pack(
        f">{tensor.dim()}I", *tensor.shape
    )
    raw = header + tensor.to(torch.uint8).contiguous().numpy().tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def test_real_mnist_decodes_to_tensors(mnist_dir: Path) -> None:
    data = load_mnist(mnist_dir)
    assert data.train_images.shape == (60_000, 28, 28)
    assert data.test_images.shape == (10_000, 28, 28)
    assert data.train_images.dtype == torch.uint8
    assert sorted(data.train_labels.unique().tolist()) == list(range(10))
    # The well-known class count of the training set's digit 1.
    assert int((data.train_labels == 1).sum()) == 6742


def test_normalised_pixels_have_the_usual_statistics(mnist_dir: Path) -> None:
    images = normalise(load_mnist(mnist_dir).train_images[:20_000])
    assert images.shape == (20_000, 1, 28, 28)
    assert abs(images.mean().item()) < 0.02
    assert abs(images.std().item() - 1.0) < 0.02


def test_accepts_gzipped_raw_files_and_the_mnist_folder_itself(
    mnist_dir: Path, tmp_path: Path
) -> None:
    real = load_mnist(mnist_dir)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw / "train-images-idx3-ubyte.gz", real.train_images[:50], compress=True)
    _write_idx(raw / "train-labels-idx1-ubyte.gz", real.train_labels[:50], compress=True)
    _write_idx(raw / "t10k-images-idx3-ubyte", real.test_images[:20])
    _write_idx(raw / "t10k-labels-idx1-ubyte", real.test_labels[:20])
    for root in (tmp_path, tmp_path / "MNIST"):
        data = load_mnist(root)
        assert torch.equal(data.train_images, real.train_images[:50])
        assert torch.equal(data.test_labels, real.test_labels[:20])


def test_accepts_torchvisions_processed_layout(mnist_dir: Path, tmp_path: Path) -> None:
    real = load_mnist(mnist_dir)
    processed = tmp_path / "MNIST" / "processed"
    processed.mkdir(parents=True)
    torch.save((real.train_images[:30], real.train_labels[:30]), processed / "training.pt")
    torch.save((real.test_images[:10], real.test_labels[:10]), processed / "test.pt")
    data = load_mnist(tmp_path)
    assert torch.equal(data.train_labels, real.train_labels[:30])
    assert data.test_images.shape == (10, 28, 28)


def test_missing_data_names_the_folder_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError) as error:
        load_mnist(tmp_path / "nowhere")
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "MNIST_DIR" in message and "--download" in message


def test_truncated_file_is_reported(mnist_dir: Path, tmp_path: Path) -> None:
    whole = (mnist_dir / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").read_bytes()
    broken = tmp_path / "t10k-labels-idx1-ubyte"
    broken.write_bytes(whole[:500])
    with pytest.raises(MissingDataError, match="truncated"):
        read_idx(broken)
