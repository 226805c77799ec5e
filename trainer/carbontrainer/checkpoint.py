"""Checkpoints: one file per run directory, replaced atomically (write a temp file, then rename).

A checkpoint holds everything needed to continue bit-for-bit: model, optimiser, LR scheduler,
the position (epoch and step within it: the epoch's permutation is a pure function of seed and
epoch, so the same step continues the same order), the RNG states that dropout draws from,
and the settings that give `step` its meaning.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1
# Settings a resumed run must share with the run that wrote the checkpoint (the number of
# ranks included: it gives `step` its meaning), with their values in checkpoints older than
# the setting.
RESUME_KEYS = ("seed", "batch_size", "train_samples", "workers")
_OLDER_DEFAULTS = {"workers": 1}


class CheckpointError(Exception):
    """A checkpoint exists but cannot be used (corrupt, or written with other settings)."""


class FolderError(Exception):
    """A folder the run must write (checkpoints, the final model) cannot be written."""


def require_writable(directory: Path, option: str) -> None:
    """Fail before training, not after an epoch: an unwritable folder is bad input."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise FolderError(
            f"{option} {directory} cannot be written ({reason}, as uid {os.getuid()}): "
            f"point {option} at a writable folder or mount a volume there"
        ) from error


def checkpoint_path(directory: Path) -> Path:
    return directory / CHECKPOINT_NAME


def save_checkpoint(directory: Path, state: dict[str, Any]) -> Path:
    """Write `state` to `<directory>/checkpoint.pt` atomically; returns the path."""
    directory.mkdir(parents=True, exist_ok=True)
    target = checkpoint_path(directory)
    handle, temp_name = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save({"format": FORMAT_VERSION, **state}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target


def _safe_loading_supported() -> bool:
    # torch 1.13 has weights_only, but its unpickler rejects floats (optimiser hyperparameters),
    # so only 2.x loads our checkpoints that way.
    major = int(torch.__version__.split(".")[0])
    return major >= 2 and "weights_only" in inspect.signature(torch.load).parameters


def _load(path: Path) -> dict[str, Any]:
    # weights_only unpickles tensors and plain containers only: a checkpoint from a shared
    # volume cannot run code.
    if _safe_loading_supported():
        return torch.load(path, map_location="cpu", weights_only=True)
    return torch.load(path, map_location="cpu")


def load_checkpoint(directory: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint in `directory`, None if there is none; refuses one with other settings."""
    path = checkpoint_path(directory)
    if not path.is_file():
        return None
    try:
        state = _load(path)
    except Exception as error:  # torch raises many types for a damaged file
        detail = " ".join(str(error).split())[-300:]  # one line, the informative tail
        raise CheckpointError(f"cannot read checkpoint {path}: {detail}") from error
    if state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has an unknown format {state.get('format')!r}")
    saved = {**_OLDER_DEFAULTS, **state.get("settings", {})}
    differing = [key for key in RESUME_KEYS if saved.get(key) != settings.get(key)]
    if differing:
        wanted = ", ".join(f"{key}={saved.get(key)}" for key in differing)
        raise CheckpointError(
            f"checkpoint {path} was written with {wanted}; rerun with the same settings "
            f"or use another --checkpoint-dir"
        )
    return state
