"""The training loop: whole data set as tensors, batches by slicing a per-epoch permutation.

Across ranks (distributed.py) every rank takes its own stride of the same permutation
(rank r: positions r, r + N, ...; equal shards, the last train_samples mod N samples of an
epoch left out) with the batch size per rank, and DistributedDataParallel averages the
gradients; one rank is exactly the single-process loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .checkpoint import checkpoint_path, load_checkpoint, require_writable, save_checkpoint
from .data import Mnist, load_mnist, normalise
from .distributed import (
    World,
    any_rank,
    from_main,
    gather_to_all,
    join,
    leave,
    sum_over_ranks,
    wait_for_all,
)
from .model import MnistNet
from .precision import Precision, autocast, choose_precision
from .runtime import (
    choose_device,
    configure_threads,
    keep_freed_buffers,
    make_grad_scaler,
)

# Defaults: batch 128 halves the optimiser steps of the reference's 64 at the same accuracy
# (see docs/benchmarks.md); 5 epochs reach >= 99.0 % test accuracy with a margin.
DEFAULT_EPOCHS = 5
DEFAULT_BATCH_SIZE = 128
DEFAULT_LR = 1.0
LR_GAMMA = 0.7


@dataclass(frozen=True)
class TrainConfig:
    data_dir: Path
    checkpoint_dir: Path | None = None
    output_dir: Path | None = None
    download: bool = False
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = DEFAULT_LR
    max_samples: int | None = None
    eval_samples: int | None = None
    device: str = "auto"
    seed: int = 1
    compile: bool = False
    amp: bool | None = None  # None: measure on CPU; True/False: force bf16/fp32
    log_every: int = 100
    threads: int | None = None
    world: World = field(default_factory=World)  # one rank: the single-process trainer


@dataclass
class TrainOutcome:
    status: str  # "completed" | "interrupted"
    accuracy: float | None
    loss: float | None  # test loss (mean NLL) at the last evaluation
    train_loss: float | None  # mean training loss of the last (partial) epoch of this run
    epochs_completed: int
    samples: int  # trained by this process (this rank)
    samples_all_runs: int  # by every rank, including the runs this one resumed from
    train_seconds: float
    device: str
    precision: str
    threads: int
    checkpoint_path: str | None
    resumed: bool
    resumed_from: dict[str, int] | None = None
    notes: list[str] = field(default_factory=list)
    precision_choice: dict[str, object] = field(default_factory=dict)
    rank: int = 0
    world_size: int = 1

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds > 0 else 0.0


def epoch_permutation(seed: int, epoch: int, size: int) -> torch.Tensor:
    """The order of epoch `epoch`: a pure function of (seed, epoch), so a resume can rebuild it."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(size, generator=generator)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    precision: Precision,
    batch_size: int,
    memory_format: torch.memory_format,
    world: World | None = None,
) -> tuple[float, float]:
    """(accuracy, mean NLL loss) on the given uint8 images, in large inference batches.

    With several ranks each passes its share of the test set; the sums are added up.
    """
    model.eval()
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    for start in range(0, len(images), batch_size):
        batch = normalise(images[start : start + batch_size]).contiguous(
            memory_format=memory_format
        )
        target = labels[start : start + batch_size]
        with autocast(images.device.type, precision):
            output = model(batch).float()
        loss_sum += F.nll_loss(output, target, reduction="sum")
        correct += (output.argmax(dim=1) == target).sum()
    totals = torch.stack([correct.double(), loss_sum.double()])
    totals = torch.cat([totals, torch.tensor([len(images)], dtype=torch.double).to(totals)])
    correct_all, loss_all, count_all = sum_over_ranks(world or World(), totals).tolist()
    count = max(1.0, count_all)
    return correct_all / count, loss_all / count


def _subset(data: Mnist, max_samples: int | None, eval_samples: int | None) -> Mnist:
    return Mnist(
        train_images=data.train_images[:max_samples],
        train_labels=data.train_labels[:max_samples],
        test_images=data.test_images[:eval_samples],
        test_labels=data.test_labels[:eval_samples],
    )


def train(
    config: TrainConfig,
    log: Callable[[str], None] = print,
    should_stop: Callable[[], bool] = lambda: False,
) -> TrainOutcome:
    """Train (resuming from `config.checkpoint_dir` when it holds a checkpoint).

    `should_stop` is polled at every batch boundary: when it turns true (on any rank) the loop
    writes a checkpoint and returns with status "interrupted".
    """
    # Bad input fails here, before the rendezvous, not as the other ranks' timeout.
    device = choose_device(config.device)
    if config.checkpoint_dir is not None:
        require_writable(config.checkpoint_dir, "--checkpoint-dir")
    if config.output_dir is not None:
        require_writable(config.output_dir, "--output-dir")
    data = load_mnist(config.data_dir, config.download)
    join(config.world, device)
    try:
        return _train(config, device, data, log, should_stop)
    finally:
        leave(config.world)


def _train(
    config: TrainConfig,
    device: torch.device,
    data: Mnist,
    log: Callable[[str], None],
    should_stop: Callable[[], bool],
) -> TrainOutcome:
    world = config.world
    threads = configure_threads(config.threads)
    if device.type == "cpu":
        keep_freed_buffers()
    notes: list[str] = []
    torch.manual_seed(config.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True

    data = _subset(data, config.max_samples, config.eval_samples)
    # Decoded once; kept as uint8 on the device (4× smaller than floats), normalised per batch.
    train_images = data.train_images.to(device)
    train_labels = data.train_labels.to(device)
    # Each rank evaluates its stride of the test set; evaluate() adds the sums up.
    test_images = data.test_images[world.rank :: world.size].to(device)
    test_labels = data.test_labels[world.rank :: world.size].to(device)
    train_size = len(train_images)
    shard_size = train_size // world.size
    steps_per_epoch = math.ceil(shard_size / config.batch_size)
    eval_batch_size = 10_000 if device.type == "cuda" else 1_000
    memory_format = torch.channels_last

    model = MnistNet().to(device).to(memory_format=memory_format)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=LR_GAMMA)
    if world.is_distributed:
        # Same initial weights everywhere (DDP also broadcasts rank 0's), own dropout draws.
        torch.manual_seed(config.seed + 1_000_003 * world.rank)

    settings = {
        "seed": config.seed,
        "batch_size": config.batch_size,
        "train_samples": train_size,
        "workers": world.size,
    }
    start_epoch, start_step, samples_before = 0, 0, 0
    accuracy: float | None = None
    test_loss: float | None = None
    resumed_from = None
    state = load_checkpoint(config.checkpoint_dir, settings) if config.checkpoint_dir else None
    # A resumed run keeps the precision its checkpoint was trained in. The measurement runs on
    # a model of its own and leaves the global RNG as it found it.
    # Rank 0 chooses (measuring, where it does) and every rank trains in its choice.
    kept = state.get("precision") if state is not None else None
    choice = from_main(
        world,
        choose_precision(device, config.amp, config.batch_size, kept=kept)
        if world.is_main
        else None,
    )
    precision = choice.precision
    scaler = make_grad_scaler(precision.needs_grad_scaler)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        rng_ranks = state.get("rng_ranks") or [state["rng"]]
        _set_rng_state(rng_ranks[world.rank] if len(rng_ranks) == world.size else state["rng"])
        start_epoch, start_step = state["epoch"], state["step"]
        samples_before = state["samples_all_runs"]
        accuracy, test_loss = state.get("accuracy"), state.get("test_loss")
        resumed_from = {"epoch": start_epoch, "step": start_step}
        log(
            f"resuming from {config.checkpoint_dir}: epoch {start_epoch + 1} "
            f"step {start_step}/{steps_per_epoch}"
        )

    checkpoint_file: str | None = None
    samples_done = 0
    train_seconds = 0.0
    train_loss: float | None = None

    step_model: torch.nn.Module = model
    if world.is_distributed:
        # After the checkpoint is loaded: the wrapper broadcasts rank 0's weights.
        step_model = torch.nn.parallel.DistributedDataParallel(model)
    if config.compile:
        if hasattr(torch, "compile"):
            step_model = torch.compile(step_model)
        else:
            notes.append(f"--compile ignored: torch {torch.__version__} has no torch.compile")
            log(notes[-1])

    def checkpoint(epoch: int, step: int) -> None:
        """Every rank calls this (a collective); rank 0 writes, the others wait for it."""
        nonlocal checkpoint_file
        if config.checkpoint_dir is None:
            return
        rng_ranks = gather_to_all(world, _rng_state())
        if not world.is_main:
            wait_for_all(world)
            checkpoint_file = str(checkpoint_path(config.checkpoint_dir))
            return
        path = save_checkpoint(
            config.checkpoint_dir,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "precision": precision.label,
                "rng": rng_ranks[0],
                **({"rng_ranks": rng_ranks} if world.is_distributed else {}),
                "epoch": epoch,
                "step": step,
                "samples_all_runs": samples_before + samples_done * world.size,
                "accuracy": accuracy,
                "test_loss": test_loss,
                "settings": settings,
                "torch_version": str(torch.__version__),
            },
        )
        checkpoint_file = str(path)
        wait_for_all(world)

    def outcome(status: str, epochs_completed: int) -> TrainOutcome:
        return TrainOutcome(
            status=status,
            accuracy=accuracy,
            loss=test_loss,
            train_loss=train_loss,
            epochs_completed=epochs_completed,
            samples=samples_done,
            samples_all_runs=samples_before + samples_done * world.size,
            train_seconds=train_seconds,
            device=str(device),
            precision=precision.label,
            threads=threads,
            checkpoint_path=checkpoint_file,
            resumed=state is not None,
            resumed_from=resumed_from,
            notes=notes,
            precision_choice=choice.report(),
            rank=world.rank,
            world_size=world.size,
        )

    log(f"precision: {choice.describe()}")
    if world.is_distributed:
        log(
            f"rank {world.rank} of {world.size} (rendezvous {world.master_addr}:"
            f"{world.master_port}): {shard_size} samples per epoch on this rank"
        )
    log(
        f"training on {device} ({precision.label}, {threads} threads): {train_size} samples, "
        f"batch {config.batch_size}, epochs {config.epochs}, torch {torch.__version__}"
    )
    run_start = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        permutation = epoch_permutation(config.seed, epoch, train_size)
        permutation = permutation[world.rank :: world.size][:shard_size].to(device)
        model.train()
        loss_sum = torch.zeros((), device=device)
        epoch_samples = 0
        epoch_start = time.perf_counter()
        first_step = start_step if epoch == start_epoch else 0
        for step in range(first_step, steps_per_epoch):
            if any_rank(world, should_stop(), device):
                train_seconds += time.perf_counter() - epoch_start
                train_loss = loss_sum.item() / epoch_samples if epoch_samples else train_loss
                checkpoint(epoch, step)
                log(f"stopping: checkpoint at epoch {epoch + 1} step {step}: {checkpoint_file}")
                return outcome("interrupted", epoch)
            index = permutation[step * config.batch_size : (step + 1) * config.batch_size]
            images = normalise(train_images.index_select(0, index)).contiguous(
                memory_format=memory_format
            )
            labels = train_labels.index_select(0, index)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device.type, precision):
                output = step_model(images)
            loss = F.nll_loss(output.float(), labels)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            # Accumulate on the device: .item() every step would stall a GPU.
            loss_sum += loss.detach() * len(labels)
            epoch_samples += len(labels)
            samples_done += len(labels)
            if config.log_every and (step + 1) % config.log_every == 0:
                elapsed = time.perf_counter() - epoch_start
                log(
                    f"epoch {epoch + 1} step {step + 1}/{steps_per_epoch} "
                    f"loss {loss_sum.item() / epoch_samples:.4f} "
                    f"samples/s {epoch_samples / elapsed:.0f} "
                    f"elapsed {time.perf_counter() - run_start:.1f}s"
                )
        epoch_seconds = time.perf_counter() - epoch_start
        train_seconds += epoch_seconds
        train_loss = loss_sum.item() / epoch_samples if epoch_samples else train_loss
        scheduler.step()
        accuracy, test_loss = evaluate(
            model, test_images, test_labels, precision, eval_batch_size, memory_format, world
        )
        checkpoint(epoch + 1, 0)
        log(
            f"epoch {epoch + 1}/{config.epochs} done: train loss {train_loss:.4f} "
            f"test loss {test_loss:.4f} accuracy {accuracy:.4f} "
            f"samples/s {epoch_samples / epoch_seconds:.0f} "
            f"elapsed {time.perf_counter() - run_start:.1f}s"
        )
    if accuracy is None:  # nothing left to train (resumed a finished run) and no stored result
        accuracy, test_loss = evaluate(
            model, test_images, test_labels, precision, eval_batch_size, memory_format, world
        )
    if config.output_dir is not None and world.is_main:
        config.output_dir.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), config.output_dir / "model.pt")
    return outcome("completed", config.epochs)
