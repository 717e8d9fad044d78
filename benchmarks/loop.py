"""Training throughput of `run_trial` (all statistics on) against a bare PyTorch loop.

    python benchmarks/loop.py                    # synthetic features, MLP, C = 1,000
    python benchmarks/loop.py --form images      # synthetic images, small CNN
    python benchmarks/loop.py --device cuda --model iresnet50 --image-size 112 \
        --steps 200 --amp bf16                   # the GPU path (benchmarks/gpu_check.sh)
    python benchmarks/loop.py --head all         # every head, a ratio each
    python benchmarks/loop.py --head all --identities 10000 --images-per-identity 4
    python benchmarks/loop.py --tiny             # smoke run (the test suite uses it)

The bare loop has the same data, backbone, head, batch size, optimiser, schedule and
shuffling, and nothing else: no statistics (`track_statistics = False`), no accuracy,
no reporting, no validation. On CUDA both take the same precision (autocast to
`--amp`, the head in float32), channels-last convolutions and cuDNN autotuning, and the
training set lives on the GPU for both. Both train for the same number of steps;
`run_trial`'s throughput is its own training-time figure (validation and test scoring
excluded). They alternate (bare, trial, bare, trial, …) and each takes its best run, in
one process. Target: trial / bare >= 0.95. On CUDA, the peak GPU memory of each.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_name  # noqa: E402  (benchmarks/machine.py)

from adastudy.data import build_data  # noqa: E402
from adastudy.heads import HEAD_NAMES, build_head  # noqa: E402
from adastudy.models import build_backbone  # noqa: E402
from adastudy.spec import (  # noqa: E402
    FACE_BACKBONES,
    DataSpec,
    ModelSpec,
    TrainSpec,
    TrialSpec,
)
from adastudy.train import (  # noqa: E402
    amp_dtype,
    choose_device,
    lr_factor,
    make_optimizer,
    run_trial,
)

TARGET = 0.95


def bare_loop(spec: TrialSpec, data) -> float:
    """Samples per second of the plainest loop that trains the same thing."""
    train = spec.train
    device = choose_device(train.device)
    torch.manual_seed(spec.seed)
    model = build_backbone(spec.model, data.input_shape).to(device)
    channels_last = device.type == "cuda" and len(data.input_shape) == 3
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    head = build_head(spec.head, data.num_classes, spec.model.embedding_dim,
                      **spec.head_params()).to(device)
    head.track_statistics = False
    optimizer = make_optimizer([*model.parameters(), *head.parameters()], train)
    precision = amp_dtype(train, device)
    autocast = (functools.partial(torch.autocast, device.type, dtype=precision)
                if precision is not None else contextlib.nullcontext)
    inputs, labels = data.train_inputs.to(device), data.train_labels.to(device)
    n = len(labels)
    batch = min(train.batch_size, n)
    steps_per_epoch = n // batch
    total = train.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, steps_per_epoch, train)
    )
    shuffle = torch.Generator().manual_seed(spec.seed)
    model.train()
    head.train()
    _sync(device)
    start = time.perf_counter()
    for _ in range(train.epochs):
        order = torch.randperm(n, generator=shuffle).to(device)
        for b in range(steps_per_epoch):
            index = order[b * batch : (b + 1) * batch]
            x, y = inputs[index], labels[index]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast():
                embeddings = model(x)
            loss = F.cross_entropy(head(embeddings, y), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    _sync(device)
    return total * batch / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device: torch.device, run: Callable[[], float]) -> tuple[float, float]:
    """`run()`'s value and the peak GPU memory it allocated, GiB (NaN on the CPU)."""
    if device.type != "cuda":
        return run(), math.nan
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    value = run()
    return value, torch.cuda.max_memory_allocated(device) / 2**30


def _measure(spec: TrialSpec, data, device: torch.device, repeats: int
             ) -> tuple[float, float, float, float]:
    """The best samples/s of the bare loop and of `run_trial`, alternating, and the peak
    GPU memory of each (NaN on the CPU)."""
    bare, trial, bare_gib, trial_gib = [], [], [], []
    for _ in range(repeats):
        value, peak = _peak_gib(device, lambda: bare_loop(spec, data))
        bare.append(value)
        bare_gib.append(peak)
        value, peak = _peak_gib(device, lambda: run_trial(spec, data=data).samples_per_s)
        trial.append(value)
        trial_gib.append(peak)
    return max(bare), max(trial), max(bare_gib), max(trial_gib)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--form", choices=("features", "images"), default="features")
    parser.add_argument("--head", default="adacos-dynamic",
                        help="a head, several (comma-separated) or all")
    parser.add_argument("--identities", type=int, default=1000)
    parser.add_argument("--images-per-identity", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None,
                        help="train this many steps (sets the epochs and the images)")
    parser.add_argument("--model", default="auto", help="model.name (e.g. iresnet50)")
    parser.add_argument("--image-size", type=int, default=32, help="images' side, px")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--amp", default="bf16", choices=("bf16", "fp16", "none"),
                        help="mixed precision on CUDA")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    args = parser.parse_args(argv)
    if args.tiny:
        args.identities, args.images_per_identity, args.batch = 20, 8, 32
        args.epochs, args.repeats = 1, 1
    if args.model in FACE_BACKBONES:
        args.form = "images"
    if args.steps is not None:  # two epochs of steps / 2 batches each
        args.epochs = 2
        per_epoch = max(1, args.steps // args.epochs)
        args.images_per_identity = max(2, -(-per_epoch * args.batch // args.identities))

    small_eval = {"eval_identities": 20, "eval_images_per_identity": 4, "val_pairs": 100,
                  "test_pairs": 200, "distractors": 20}
    heads = list(HEAD_NAMES) if args.head == "all" else args.head.split(",")
    data_spec = DataSpec(form=args.form, identities=args.identities,
                         images_per_identity=args.images_per_identity,
                         image_size=args.image_size, **small_eval)
    device = choose_device(args.device)
    data = build_data(data_spec)
    steps = args.epochs * (len(data.train_labels) // min(args.batch, len(data.train_labels)))
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{cpu_name()}, {torch.get_num_threads()} threads")
    print(f"# loop benchmark: torch {torch.__version__}, {where}; "
          f"{args.form} {tuple(data.input_shape)}, model {args.model}, "
          f"C = {data.num_classes:,}, N = {len(data.train_labels):,}, batch {args.batch}, "
          f"{steps} steps, head {args.head}"
          + (f", amp {args.amp}" if device.type == "cuda" else "")
          + f", best of {args.repeats}")
    rows = []
    for head in heads:
        spec = TrialSpec(
            data=data_spec, model=ModelSpec(name=args.model),
            train=TrainSpec(epochs=args.epochs, batch_size=args.batch, eval_every=0,
                            device=args.device, amp=args.amp, log_every=20),
            head=head,
        )
        rows.append((head, *_measure(spec, data, device, args.repeats)))
    for head, bare, trial, bare_gib, trial_gib in rows:
        ratio = trial / bare
        if len(rows) > 1:
            print(f"## {head}")
        print(f"bare loop      {bare:12,.0f} samples/s")
        print(f"run_trial      {trial:12,.0f} samples/s")
        print(f"ratio trial / bare = {ratio:.3f} (target >= {TARGET:.2f}): "
              f"{'met' if ratio >= TARGET else 'MISSED'}")
        if device.type == "cuda":
            print(f"peak GPU memory: bare {bare_gib:.2f} GiB, "
                  f"run_trial {trial_gib:.2f} GiB (training and its evaluation)")
    if len(rows) > 1:
        print("| head | bare samples/s | run_trial samples/s | trial / bare |")
        print("|---|---:|---:|---:|")
        for head, bare, trial, _, _ in rows:
            print(f"| {head} | {bare:,.0f} | {trial:,.0f} | {trial / bare:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
