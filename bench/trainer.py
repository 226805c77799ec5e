"""Benchmark: carbon-trainer's loop vs the textbook DataLoader loop, same model, same samples.

Each side runs in its own child process (so peak RSS is its own), alternating over the
repeats (so a noisy neighbour hurts both alike); the table shows the median of each.

    .venv/bin/python bench/trainer.py                       # one epoch each, CPU
    .venv/bin/python bench/trainer.py --samples 20000 --repeats 3
    .venv/bin/python bench/trainer.py --device cuda         # also prints the full-epoch time
    .venv/bin/python bench/trainer.py --image carbonaware/trainer:dev   # + the trainer's image
    .venv/bin/python bench/trainer.py --workers 1,2         # + data-parallel ranks on loopback

Textbook side: torchvision.datasets.MNIST + ToTensor + Normalize((0.1307,), (0.3081,)),
DataLoader(batch_size=64, shuffle=True), Adadelta(lr=1.0), the loop of PyTorch's MNIST example.
Trainer side: carbontrainer.train.train() with its defaults (one epoch over the same samples):
on CPU it times a few steps in fp32 and in bf16 autocast at start and keeps the faster (the
`chose` column shows the measured step times); on CUDA bf16 where supported. trainer-fp32 and
trainer-bf16 are the same loop forced with --no-amp / --amp, to show what each precision gives
here and whether the measurement picked the faster.
container (with --image): the trainer in its image, `docker run` on the same machine with
the same flags, its own torch (no CPU limit; the data mounted read-only).
--workers 1,2: `carbon-trainer` as N real processes joined by gloo on 127.0.0.1 (each with
CPUs/N threads), one epoch over the same samples split between them; samples/s is the sum
over the ranks, as a larger machine or N pods would give.
Throughput counts training only (not the one-off dataset load, not the test pass).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("MNIST_DIR", REPO_ROOT.parent / "shared" / "data" / "mnist"))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_textbook(data_dir: Path, samples: int, device_name: str, seed: int) -> dict:
    import torch
    import torch.nn.functional as F
    from carbontrainer.model import MnistNet
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    torch.manual_seed(seed)
    device = torch.device(device_name)
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    )
    train_set = datasets.MNIST(str(data_dir), train=True, download=False, transform=transform)
    test_set = datasets.MNIST(str(data_dir), train=False, download=False, transform=transform)
    loader_options = {"batch_size": 64, "shuffle": True}
    if device.type == "cuda":
        loader_options.update(num_workers=1, pin_memory=True)
    train_loader = DataLoader(Subset(train_set, range(samples)), **loader_options)
    test_loader = DataLoader(test_set, batch_size=1000)
    model = MnistNet().to(device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)

    start = time.perf_counter()
    model.train()
    for data, target in train_loader:
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start

    model.eval()
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            output = model(data.to(device))
            correct += output.argmax(dim=1).eq(target.to(device)).sum().item()
    return {
        "samples": samples,
        "seconds": seconds,
        "samples_per_second": samples / seconds,
        "accuracy": correct / len(test_set),
        "threads": torch.get_num_threads(),
        "precision": "fp32",
    }


def run_trainer(
    data_dir: Path, samples: int, device_name: str, seed: int, amp: bool | None = None
) -> dict:
    from carbontrainer.train import TrainConfig, train

    outcome = train(
        TrainConfig(
            data_dir=data_dir,
            epochs=1,
            max_samples=samples,
            device=device_name,
            seed=seed,
            amp=amp,
            log_every=0,
        ),
        log=lambda _line: None,
    )
    return {
        "samples": outcome.samples,
        "seconds": outcome.train_seconds,
        "samples_per_second": outcome.samples_per_second,
        "accuracy": outcome.accuracy,
        "threads": outcome.threads,
        "precision": outcome.precision,
        "precision_choice": outcome.precision_choice,
    }


def run_trainer_fp32(data_dir: Path, samples: int, device_name: str, seed: int) -> dict:
    """The trainer with --no-amp: what its loop gains without mixed precision."""
    return run_trainer(data_dir, samples, device_name, seed, amp=False)


def run_trainer_bf16(data_dir: Path, samples: int, device_name: str, seed: int) -> dict:
    """The trainer with --amp: bf16 autocast whatever the measurement would say."""
    return run_trainer(data_dir, samples, device_name, seed, amp=True)


RUNNERS = {
    "textbook": run_textbook,
    "trainer": run_trainer,
    "trainer-fp32": run_trainer_fp32,
    "trainer-bf16": run_trainer_bf16,
}


def child(args: argparse.Namespace) -> None:
    result = RUNNERS[args.child](args.data_dir, args.samples, args.device, args.seed)
    result["peak_rss_mb"] = _peak_rss_mb()
    if args.device == "cuda":
        import torch

        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result), flush=True)


def _trainer_flags(args: argparse.Namespace) -> list[str]:
    return [
        "--epochs", "1", "--max-samples", str(args.samples), "--seed", str(args.seed),
        "--device", args.device, "--log-every", "0",
        "--checkpoint-dir", "/tmp/bench-checkpoints", "--output-dir", "/tmp/bench-out",
    ]  # fmt: skip


def _final_line(side: str, output: subprocess.CompletedProcess) -> dict:
    if output.returncode != 0:
        sys.exit(f"{side} run failed:\n{(output.stdout + output.stderr)[-3000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def _run_container(args: argparse.Namespace) -> dict:
    """The trainer in its image; its final JSON line gives the same figures."""
    command = ["docker", "run", "--rm", "-v", f"{args.data_dir.resolve()}:/data/mnist:ro"]
    if args.device == "cuda":
        command += ["--gpus", "all"]
    flags = [flag.replace("/tmp/bench-", "/tmp/") for flag in _trainer_flags(args)]
    final = _final_line(
        "container", subprocess.run([*command, args.image, *flags], capture_output=True, text=True)
    )
    return {
        "samples": final["samples"],
        "seconds": final["samples"] / final["samples_per_second"],
        "samples_per_second": final["samples_per_second"],
        "accuracy": final["accuracy"],
        "threads": final["threads"],
        "precision": final["precision"],
        "precision_choice": final.get("precision_choice"),
        "torch_version": final["torch_version"],
        "peak_rss_mb": float("nan"),  # not seen from outside the container
    }


def _run_workers(args: argparse.Namespace, workers: int) -> dict:
    """`workers` real carbon-trainer ranks on loopback; samples/s summed over the ranks."""
    import socket
    import tempfile

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    threads = max(1, (os.cpu_count() or 1) // workers)
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as folder:
        flags = [
            *(flag.replace("/tmp/bench-", f"{folder}/") for flag in _trainer_flags(args)),
            "--data-dir", str(args.data_dir), "--threads", str(threads),
        ]  # fmt: skip
        ranks = [
            subprocess.Popen(
                [sys.executable, "-m", "carbontrainer", *flags],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={
                    **os.environ,
                    "PYTHONPATH": os.pathsep.join(
                        [str(REPO_ROOT / "trainer"), os.environ.get("PYTHONPATH", "")]
                    ),
                    "WORLD_SIZE": str(workers),
                    "RANK": str(rank),
                    "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": port,
                },
            )
            for rank in range(workers)
        ]
        finals = []
        for rank, process in enumerate(ranks):
            stdout, stderr = process.communicate()
            done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
            finals.append(_final_line(f"rank {rank} of {workers}", done))
    return {
        "workers": workers,
        "threads_per_rank": threads,
        "samples": sum(final["samples"] for final in finals),
        "samples_per_second": sum(final["samples_per_second"] for final in finals),
        "accuracy": finals[0]["accuracy"],
        "precision": finals[0]["precision"],
        "energy_kwh": sum(final["energy_kwh"] for final in finals),
    }


def _spawn(side: str, args: argparse.Namespace) -> dict:
    if side == "container":
        return _run_container(args)
    command = [
        sys.executable,
        __file__,
        "--child",
        side,
        "--data-dir",
        str(args.data_dir),
        "--samples",
        str(args.samples),
        "--device",
        args.device,
        "--seed",
        str(args.seed),
    ]
    return _final_line(side, subprocess.run(command, capture_output=True, text=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--samples", type=int, default=60_000, help="default: one full epoch")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--image", help="also run the trainer in this image, e.g. carbonaware/trainer:test"
    )
    parser.add_argument(
        "--workers",
        type=lambda text: [int(part) for part in text.split(",")],
        help="also train with these numbers of data-parallel ranks, e.g. 1,2",
    )
    parser.add_argument("--child", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if not (args.data_dir / "MNIST" / "raw").is_dir():
        sys.exit(f"MNIST not found in {args.data_dir} (set --data-dir or MNIST_DIR)")

    sides = [*RUNNERS, *(["container"] if args.image else [])]
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    worker_runs: dict[int, list[dict]] = {workers: [] for workers in args.workers or []}
    for repeat in range(args.repeats):
        # Alternate who goes first, so drifting machine load does not favour one side.
        order = sides if repeat % 2 == 0 else list(reversed(sides))
        for side in order:
            runs[side].append(_spawn(side, args))
            print(f"repeat {repeat + 1} {side}: {json.dumps(runs[side][-1])}", flush=True)
        for workers in worker_runs:
            worker_runs[workers].append(_run_workers(args, workers))
            print(f"repeat {repeat + 1} workers={workers}: {json.dumps(worker_runs[workers][-1])}")

    def median(side: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[side])

    print(
        f"\n{args.samples} samples, device {args.device}, {args.repeats} repeat(s), "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    header = (
        f"{'':12} {'precision':>9} {'samples/s':>10} {'seconds':>9} {'accuracy':>9} "
        f"{'peak RSS MB':>12}"
    )
    if args.device == "cuda":
        header += f" {'peak GPU MB':>12}"
    print(header)
    for side in sides:
        row = (
            f"{side:12} {runs[side][0]['precision']:>9} "
            f"{median(side, 'samples_per_second'):10.0f} {median(side, 'seconds'):9.1f} "
            f"{median(side, 'accuracy'):9.4f} {median(side, 'peak_rss_mb'):12.0f}"
        )
        if args.device == "cuda":
            row += f" {median(side, 'peak_gpu_mb'):12.0f}"
        print(row)
    for side in ("trainer", "container"):
        for run in runs.get(side, []):
            print(f"{side}'s precision choice: {json.dumps(run['precision_choice'])}")
    if args.image:
        print(f"container: {args.image}, torch {runs['container'][0]['torch_version']}")
    textbook = median("textbook", "samples_per_second")
    for side in sides[1:]:
        ratio = median(side, "samples_per_second") / textbook
        print(f"throughput ratio {side}/textbook: {ratio:.2f}x")
    if args.image:
        ratio = median("container", "samples_per_second") / median("trainer", "samples_per_second")
        print(f"throughput ratio container/trainer: {ratio:.2f}x (goal >= 0.8x)")
    if worker_runs:
        print(f"\n{'workers':>7} {'threads/rank':>12} {'samples/s':>10} {'accuracy':>9} ratio")
        speeds = {
            workers: statistics.median(run["samples_per_second"] for run in wruns)
            for workers, wruns in worker_runs.items()
        }
        base = next(iter(speeds.values()))
        for workers, wruns in worker_runs.items():
            speed = speeds[workers]
            accuracy = statistics.median(run["accuracy"] for run in wruns)
            print(
                f"{workers:7} {wruns[0]['threads_per_rank']:12} {speed:10.0f} {accuracy:9.4f} "
                f"{speed / base:.2f}x"
            )
    if args.samples >= 60_000:
        for side in sides:
            print(f"one full epoch, {side}: {median(side, 'seconds'):.1f} s")


if __name__ == "__main__":
    main()
