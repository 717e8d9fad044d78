"""Training throughput of `run_trial` (all statistics on) against a bare PyTorch loop.

    python benchmarks/loop.py                    # synthetic features, MLP, C = 1,000
    python benchmarks/loop.py --form images      # synthetic images, small CNN
    python benchmarks/loop.py --tiny             # smoke run (the test suite uses it)

The bare loop has the same data, backbone, head, batch size, optimiser, schedule and
shuffling, and nothing else: no statistics (`track_statistics = False`), no accuracy,
no reporting, no validation. Both train for the same number of steps; `run_trial`'s
throughput is its own training-time figure (validation and test scoring excluded).
They alternate (bare, trial, bare, trial, …) and each takes its best run, in one
process. Target: trial / bare >= 0.95.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_name  # noqa: E402  (benchmarks/machine.py)

from adastudy.data import build_data  # noqa: E402
from adastudy.heads import build_head  # noqa: E402
from adastudy.models import build_backbone  # noqa: E402
from adastudy.spec import DataSpec, ModelSpec, TrainSpec, TrialSpec  # noqa: E402
from adastudy.train import lr_factor, make_optimizer, run_trial  # noqa: E402

TARGET = 0.95


def bare_loop(spec: TrialSpec, data) -> float:
    """Samples per second of the plainest loop that trains the same thing."""
    train = spec.train
    torch.manual_seed(spec.seed)
    model = build_backbone(spec.model, data.input_shape)
    head = build_head(spec.head, data.num_classes, spec.model.embedding_dim,
                      **spec.head_params())
    head.track_statistics = False
    optimizer = make_optimizer([*model.parameters(), *head.parameters()], train)
    n = len(data.train_labels)
    batch = min(train.batch_size, n)
    steps_per_epoch = n // batch
    total = train.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, steps_per_epoch, train)
    )
    shuffle = torch.Generator().manual_seed(spec.seed)
    model.train()
    head.train()
    start = time.perf_counter()
    for _ in range(train.epochs):
        order = torch.randperm(n, generator=shuffle)
        for b in range(steps_per_epoch):
            index = order[b * batch : (b + 1) * batch]
            x, y = data.train_inputs[index], data.train_labels[index]
            loss = F.cross_entropy(head(model(x), y), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return total * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--form", choices=("features", "images"), default="features")
    parser.add_argument("--head", default="adacos-dynamic")
    parser.add_argument("--identities", type=int, default=1000)
    parser.add_argument("--images-per-identity", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    args = parser.parse_args(argv)
    if args.tiny:
        args.identities, args.images_per_identity, args.batch = 20, 8, 32
        args.epochs, args.repeats = 1, 1

    small_eval = {"eval_identities": 20, "eval_images_per_identity": 4, "val_pairs": 100,
                  "test_pairs": 200, "distractors": 20}
    spec = TrialSpec(
        data=DataSpec(form=args.form, identities=args.identities,
                      images_per_identity=args.images_per_identity, **small_eval),
        model=ModelSpec(),
        train=TrainSpec(epochs=args.epochs, batch_size=args.batch, eval_every=0,
                        device="cpu", log_every=20),
        head=args.head,
    )
    data = build_data(spec.data)
    steps = args.epochs * (len(data.train_labels) // min(args.batch, len(data.train_labels)))
    print(f"# loop benchmark: torch {torch.__version__}, {cpu_name()}, "
          f"{torch.get_num_threads()} threads; "
          f"{args.form}, C = {data.num_classes:,}, N = {len(data.train_labels):,}, "
          f"batch {args.batch}, {steps} steps, head {args.head}, best of {args.repeats}")
    bare, trial = [], []
    for _ in range(args.repeats):
        bare.append(bare_loop(spec, data))
        trial.append(run_trial(spec, data=data).samples_per_s)
    ratio = max(trial) / max(bare)
    print(f"bare loop      {max(bare):12,.0f} samples/s")
    print(f"run_trial      {max(trial):12,.0f} samples/s")
    print(f"ratio trial / bare = {ratio:.3f} (target >= {TARGET:.2f}): "
          f"{'met' if ratio >= TARGET else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
