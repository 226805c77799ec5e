"""`carbon-trainer`: train the MNIST CNN, checkpoint on SIGTERM, print one final JSON line."""

from __future__ import annotations

import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import click
from carbonaware.cli.numbers import Bounded

from . import __version__
from .checkpoint import CheckpointError, FolderError
from .data import MissingDataError
from .distributed import World, WorldError, world_from
from .energy import DEFAULT_WATTS_PER_CORE, EnergyMonitor
from .report import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    REQUIRED_FIELDS,
    to_json_line,
    write_termination_log,
)
from .runtime import DeviceError
from .train import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_LR, TrainConfig, train

PROG = "carbon-trainer"


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checkpoints at the next batch boundary and exits."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __call__(self) -> bool:
        return self.signal_name is not None

    def handle(self, signum: int, _frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.handle)


def _log(message: str) -> None:
    print(message, flush=True)


def _positive(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value <= 0:
        raise click.BadParameter("must be positive", ctx=ctx, param=param)
    return value


@click.command(
    name=PROG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    envvar="MNIST_DIR",
    default=Path("data"),
    show_default=True,
    help="torchvision MNIST root (holds MNIST/raw); env MNIST_DIR.",
)
@click.option(
    "--download/--no-download",
    default=True,
    envvar="CARBON_TRAINER_DOWNLOAD",
    show_default=True,
    help="Download MNIST when it is missing (from MNIST_MIRROR, else torchvision's mirrors; "
    "into --data-dir, or ~/.cache/carbonaware/mnist when that is read-only).",
)
@click.option("--epochs", type=int, default=DEFAULT_EPOCHS, show_default=True, callback=_positive)
@click.option(
    "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, show_default=True, callback=_positive
)
@click.option(
    "--lr",
    type=Bounded(0, 10, low_open=True),
    default=DEFAULT_LR,
    show_default=True,
    help="Adadelta learning rate (decays ×0.7 per epoch).",
)
@click.option(
    "--max-samples",
    type=int,
    default=None,
    callback=_positive,
    help="Train on the first N training images only (quick runs).",
)
@click.option(
    "--eval-samples",
    type=int,
    default=None,
    callback=_positive,
    help="Evaluate on the first N test images only (default: all 10 000).",
)
@click.option(
    "--output-dir",
    type=click.Path(path_type=Path),
    default=Path("out"),
    envvar="CARBON_TRAINER_OUTPUT_DIR",
    show_default=True,
    help="Where the final model.pt and result.json go.",
)
@click.option(
    "--checkpoint-dir",
    type=click.Path(path_type=Path),
    default=Path("checkpoints"),
    envvar="CARBON_TRAINER_CHECKPOINT_DIR",
    show_default=True,
    help="Checkpoint here; resume from here when a checkpoint exists.",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--compile",
    "use_compile",
    is_flag=True,
    help="torch.compile the model (torch 2.x; ignored with a note on 1.x).",
)
@click.option(
    "--amp/--no-amp",
    default=None,
    help="Force bf16 autocast (fp16 with a grad scaler on GPUs without bf16) / force fp32. "
    "Default: on CPU, time a few training steps in each and keep the faster; on CUDA, "
    "mixed precision.",
)
@click.option(
    "--log-every",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Progress line every N batches (0: per epoch only).",
)
@click.option(
    "--threads",
    type=int,
    default=None,
    callback=_positive,
    help="CPU threads (default: CPUs usable by this process, cgroup quota included).",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    callback=_positive,
    help="Data-parallel ranks in all (env WORLD_SIZE; default 1). Each rank is one process "
    "or pod; rendezvous at MASTER_ADDR:MASTER_PORT (default 127.0.0.1:29500).",
)
@click.option(
    "--rank",
    type=int,
    default=None,
    help="This process's rank, 0..workers-1 (env RANK, else JOB_COMPLETION_INDEX: the pod's "
    "index in an Indexed Job).",
)
@click.option(
    "--watts-per-core",
    type=Bounded(0, 10_000, low_open=True),
    default=DEFAULT_WATTS_PER_CORE,
    envvar="CARBON_TRAINER_WATTS_PER_CORE",
    show_default=True,
    help="Power of one busy core for the estimate used where RAPL is unreadable.",
)
@click.version_option(__version__, prog_name=PROG)
def command(**options: Any) -> int:
    """Train the MNIST CNN; the last stdout line is a JSON summary (also /dev/termination-log)."""
    return run(**options)


def run(
    *,
    data_dir: Path,
    download: bool,
    epochs: int,
    batch_size: int,
    lr: float,
    max_samples: int | None,
    eval_samples: int | None,
    output_dir: Path,
    checkpoint_dir: Path,
    device: str,
    seed: int,
    use_compile: bool,
    amp: bool | None,
    log_every: int,
    threads: int | None,
    watts_per_core: float,
    workers: int | None = None,
    rank: int | None = None,
) -> int:
    started = time.perf_counter()
    stop = StopFlag()
    stop.install()
    # A world that cannot work is reported like other bad input, in the final line too.
    world_error: WorldError | None = None
    try:
        world = world_from(workers, rank)
    except WorldError as error:
        world, world_error = World(), error
    config = TrainConfig(
        data_dir=data_dir,
        checkpoint_dir=checkpoint_dir,
        output_dir=output_dir,
        download=download,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_samples=max_samples,
        eval_samples=eval_samples,
        device=device,
        seed=seed,
        compile=use_compile,
        amp=amp,
        log_every=log_every,
        threads=threads,
        world=world,
    )
    import torch

    monitor = EnergyMonitor(
        cuda_index=0 if device != "cpu" and torch.cuda.is_available() else None,
        watts_per_core=watts_per_core,
    ).start()
    result: dict[str, Any] = {
        "status": "error",
        "exit_code": EXIT_ERROR,
        "accuracy": None,
        "loss": None,
        "epochs": 0,
        "samples": 0,
        "device": device,
        "checkpoint_path": None,
        "resumed": False,
    }
    try:
        if world_error is not None:
            raise world_error
        outcome = train(config, log=_log, should_stop=stop)
    except (MissingDataError, CheckpointError, FolderError, DeviceError, WorldError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr, flush=True)
        result.update(exit_code=EXIT_USAGE, error=str(error))
    except Exception as error:
        traceback.print_exc()
        result.update(error=f"{type(error).__name__}: {error}")
    else:
        interrupted = outcome.status == "interrupted"
        result.update(
            status=outcome.status,
            exit_code=EXIT_INTERRUPTED if interrupted else EXIT_OK,
            exit_reason=stop.signal_name if interrupted else "completed",
            accuracy=outcome.accuracy,
            loss=outcome.loss,
            train_loss=outcome.train_loss,
            epochs=outcome.epochs_completed,
            epochs_target=epochs,
            samples=outcome.samples,
            samples_all_runs=outcome.samples_all_runs,
            samples_per_second=round(outcome.samples_per_second, 1),
            device=outcome.device,
            precision=outcome.precision,
            precision_choice=outcome.precision_choice,
            threads=outcome.threads,
            checkpoint_path=outcome.checkpoint_path,
            resumed=outcome.resumed,
            resumed_from=outcome.resumed_from,
            notes=outcome.notes or None,
        )
    energy = monitor.stop()
    result.update(
        wall_seconds=round(time.perf_counter() - started, 3),
        energy_kwh=energy.kwh,
        energy_method=energy.method,
        energy_measured=energy.measured,
        energy_notes=list(energy.notes) or None,
        torch_version=torch.__version__,
        seed=seed,
        batch_size=batch_size,
        rank=world.rank,
        world_size=world.size,
    )
    always = set(REQUIRED_FIELDS)
    line = to_json_line(
        {key: value for key, value in result.items() if value is not None or key in always}
    )
    if result["status"] == "completed" and world.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "result.json").write_text(line + "\n")
    write_termination_log(line)
    print(line, flush=True)
    return result["exit_code"]


def main(argv: list[str] | None = None) -> None:
    try:
        code = command.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.exceptions.Abort:
        code = EXIT_INTERRUPTED
    except click.ClickException as error:  # bad flags: one line, exit 2
        print(f"{PROG}: error: {error.format_message()}", file=sys.stderr)
        code = EXIT_USAGE
    # --help and --version return None.
    sys.exit(code if isinstance(code, int) else EXIT_OK)
