"""The ``adastudy`` command line: thin Typer commands that parse, call one function, print.

Every user error is one line ``error: <message>`` on stderr and exit code 2, and every
command has one help style: `adastudy.cli.style` does both for every command. What a
running sweep shows is `adastudy.cli.progress`.
"""

from __future__ import annotations

import json
import math
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape as rich_escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from adastudy import __version__
from adastudy.backends import ENGINES
from adastudy.cli import style
from adastudy.cli.progress import LiveTable, PlainProgress, duration, head_label, sweep_bar
from adastudy.errors import AdastudyError, ParameterError
from adastudy.theory import HEAD_NAMES

__all__ = ["app", "main"]

DEFAULT_SCALES = (8.0, 16.0, 32.0, 64.0)
DEFAULT_MARGINS_RAD = (0.2, 0.35, 0.5)
DEFAULT_MARGIN_SCALE = 64.0
DEFAULT_THEORY_OUT = Path("runs/theory")
DEFAULT_HEAD = "adacos-dynamic"


app = style.App(
    name="adastudy",
    cls=style.Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Hyperparameter studies of cosine-softmax losses (CosFace, ArcFace) against AdaCos.",
)


#: `--backend`'s choices: the registered engines (`adastudy.backends.ENGINES`).
_Backend = Enum("_Backend", {name: name for name in ENGINES}, type=str)


class _Direction(str, Enum):
    maximize = "maximize"
    minimize = "minimize"


class _ExportFormat(str, Enum):
    csv = "csv"
    parquet = "parquet"


def _choice(value: Any) -> Any:
    """The plain value of a choice (typer hands an Enum member; None stays None)."""
    return getattr(value, "value", value)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"adastudy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback of user errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Hyperparameter studies of cosine-softmax losses (CosFace, ArcFace) against AdaCos."""


def parse_float_list(values: list[str] | None, name: str) -> list[float] | None:
    """Floats from repeated and/or comma-separated option values (``--s 16,32 --s 64``).

    Returns None when the option was not given. Raises `ParameterError` naming the
    option on anything that is not a finite number.
    """
    if not values:
        return None
    numbers: list[float] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            try:
                number = float(item)
            except ValueError:
                raise ParameterError(f"{name} takes numbers, got {item!r}") from None
            if not math.isfinite(number):
                raise ParameterError(f"{name} takes finite numbers, got {item!r}")
            numbers.append(number)
    return numbers


def _format_probability(p: float) -> str:
    if p == 1.0:
        return "1"
    if p == 0.0:
        return "0"
    if p < 1e-3:
        return f"{p:.3e}"
    if 1.0 - p < 1e-3:
        return f"1 - {1.0 - p:.3e}"
    return f"{p:.4f}"


@app.command()
def theory(
    classes: Annotated[int, typer.Option("--classes", "-C", help="Number of classes C (> 2).")],
    scales: Annotated[
        list[str] | None,
        typer.Option(
            "--s",
            metavar="S[,S...]",
            help="Scale(s) s for NormFace rows and panel (a); repeat or comma-separate.",
            show_default=", ".join(f"{s:g}" for s in DEFAULT_SCALES),
        ),
    ] = None,
    margins: Annotated[
        list[str] | None,
        typer.Option(
            "--m",
            metavar="M[,M...]",
            help="Margin(s) m in radians for CosFace / ArcFace; repeat or comma-separate.",
            show_default=", ".join(f"{m:g}" for m in DEFAULT_MARGINS_RAD),
        ),
    ] = None,
    margin_scale: Annotated[
        float, typer.Option("--margin-scale", help="Scale s used with the margins.")
    ] = DEFAULT_MARGIN_SCALE,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the figure (PNG and SVG).")
    ] = DEFAULT_THEORY_OUT,
    dim: Annotated[
        int | None,
        typer.Option("--dim", min=1, help="Embedding dimension D: is a random-init head of "
                     "this size inside dynamic AdaCos's stability bound?",
                     show_default=False),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")
    ] = False,
    no_plot: Annotated[bool, typer.Option("--no-plot", help="Do not draw the figure.")] = False,
) -> None:
    """Closed-form P(θ) of each head at θ = 0, π/4, π/2, and the paper's Figure 2.

    With B ≈ C − 1: P(θ) = e^f / (e^f + C − 1), f = s · target_cosine(θ); the fixed
    AdaCos scale is s_f = √2 ln(C − 1).
    """
    from adastudy import theory as closed_form

    scale_values = parse_float_list(scales, "--s") or list(DEFAULT_SCALES)
    margin_values = parse_float_list(margins, "--m") or list(DEFAULT_MARGINS_RAD)

    # Every row validates C, s and m, so nothing is written for a bad parameter.
    s_f = closed_form.fixed_scale(classes)
    rows = closed_form.target_probability_rows(
        classes, scale_values, margin_values, margin_scale=margin_scale
    )
    figures: list[Path] = []
    if not no_plot:
        from adastudy.theory_plot import plot_target_probability

        figures = plot_target_probability(
            classes, scale_values, margin_values, margin_scale=margin_scale, out_dir=out
        )

    d_min = closed_form.min_stable_effective_dim(classes)
    # A random-init head: the cosines of random directions in D dimensions have mean 0
    # and variance 1/D, so d_eff = D.
    s_star = None if dim is None else closed_form.dynamic_scale_fixed_point(classes, 1.0 / dim)
    if as_json:
        payload = {
            "num_classes": classes,
            "fixed_scale": s_f,
            "min_stable_effective_dim": d_min,
            "rows": [row.as_dict() for row in rows],
            "figures": [str(path) for path in figures],
        }
        if dim is not None:
            payload["dim"] = {"embedding_dim": dim, "inside": dim >= d_min,
                              "fixed_point": _json_safe(s_star)}
        typer.echo(json.dumps(payload, indent=2))
        return

    # Plain lines through typer.echo: rich would wrap long paths at the console width.
    typer.echo(f"s_f = {s_f:.2f}")
    typer.echo(f"dynamic AdaCos: its scale has a fixed point while d_eff ≥ 4 ln(C − 1) = "
               f"{d_min:.1f} (d_eff = 1 / variance of the non-target cosines, their mean 0, "
               "θ_med ≥ 45°, in the Gaussian approximation of ln B_avg); below it s runs "
               "away")
    if dim is not None:
        typer.echo(
            f"a random-init head of D = {dim} (d_eff = D): "
            + (f"inside the bound, fixed point s* = {s_star:.2f}" if dim >= d_min else
               "outside the bound: no fixed point, the dynamic scale runs away")
            + " (training lowers d_eff below D, and the bound is approximate: watch "
            "update_slope in your runs, above 1 while s grows it runs away; see "
            "reports/stability)")
    table = Table(title=f"P(θ) with B ≈ C − 1, C = {classes:,}")
    for column in ("head", "s", "m (rad)", "P(θ=0)", "P(θ=π/4)", "P(θ=π/2)"):
        table.add_column(column, justify="left" if column == "head" else "right")
    for row in rows:
        table.add_row(
            row.head,
            f"{row.s:.2f}",
            f"{row.m:g}",
            *(_format_probability(p) for p in (row.p_theta_0, row.p_theta_pi_4, row.p_theta_pi_2)),
        )
    Console().print(table)
    for path in figures:
        typer.echo(f"wrote {path}")


def main() -> None:
    """Console-script entry point (``adastudy``).

    The group turns user errors into ``error: ...`` and exit 2 (see `style.Group.main`),
    including one raised outside a command; this is a last guard for any other way in.
    """
    try:
        app(prog_name="adastudy")
    except AdastudyError as exc:
        try:
            style.fail(exc, debug="--debug" in sys.argv[1:])
        except typer.Exit as done:
            sys.exit(done.exit_code)


@app.command()
def train(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Study spec (TOML).")],
    head_choice: Annotated[
        str | None,  # checked by check_head_params: "unknown head ...; choose one of ..."
        typer.Option("--head", metavar="HEAD", show_default=DEFAULT_HEAD,
                     help=f"The head to train: {', '.join(HEAD_NAMES)}."),
    ] = None,
    s: Annotated[
        float | None,
        typer.Option("--s", help="Scale (normface, cosface, arcface).",
                     show_default="the head's"),
    ] = None,
    m: Annotated[
        float | None,
        typer.Option("--m", help="Margin in radians (cosface, arcface).",
                     show_default="the head's"),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Trial seed: initialisation, order.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE.json", help="Also write the result (the --json "
                     "object) to this file; an existing file is refused.", show_default=False),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")
    ] = False,
    deterministic: Annotated[
        bool, typer.Option("--deterministic", help="Deterministic mode (train.deterministic): "
                           "deterministic torch algorithms, cuDNN without autotuning, "
                           "cuBLAS's fixed workspace, every generator seeded; recorded in "
                           "the manifest.")
    ] = False,
) -> None:
    """Run one trial: train one head with one (s, m, seed) and print its metrics.

    It takes the spec's data, model and train sections. The heads of a study spec are
    for `adastudy sweep`: train asks for --head when the spec has some, and notes that
    it runs that one only."""
    from adastudy import spec as specs
    from adastudy.heads import check_head_params
    from adastudy.train import RecordingReporter, run_trial

    study = _deterministic(specs.load(spec_path), deterministic)
    listed = ", ".join(study.heads)
    if study.heads and head_choice is None:
        raise ParameterError(f"--head: {spec_path} is a study spec ([heads]: {listed}); "
                             "train runs one head: give --head (sweep runs them all)")
    head = head_choice or DEFAULT_HEAD
    params = {k: v for k, v in (("s", s), ("m", m)) if v is not None}
    check_head_params(head, **params)
    trial = study.trial(head, **params, seed=seed)  # with the spec's [eval] sets
    if out is not None:
        _check_new_file(out, "--out")
    if study.heads:  # after every check: an error stays the one line on stderr
        typer.echo(f"note: train runs one head (--head {head}); the spec's [heads] "
                   f"({listed}) are for adastudy sweep", err=True)
    reporter = RecordingReporter()
    if as_json:
        result = run_trial(trial, reporter)
        payload = json.dumps(_json_safe({**result.to_dict(), "series": reporter.rows}))
        if out is not None:
            _write_new_file(out, payload + "\n")
        typer.echo(payload)
        return
    with Progress(
        TextColumn(f"{head} seed {seed}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("steps"), TimeElapsedColumn(), console=Console(stderr=True), transient=True,
        disable=not sys.stderr.isatty(),  # a log file gets no bar (nor its blank line)
    ) as bar:
        task = bar.add_task("train", total=None)
        result = run_trial(
            trial, reporter, progress=lambda step, total: bar.update(task, completed=step,
                                                                     total=total),
        )
    Console().print(_result_table(result, trial.train.log_every))
    if out is not None:
        _write_new_file(out, json.dumps(_json_safe({**result.to_dict(),
                                                    "series": reporter.rows})) + "\n")
        typer.echo(f"wrote {out}")


def _deterministic(study: Any, on: bool) -> Any:
    """`--deterministic`: the spec in deterministic mode, and cuBLAS's workspace fixed
    now, before anything in this process (or a worker it starts) touches CUDA."""
    if not on:
        return study
    from adastudy.train import CUBLAS_WORKSPACE_CONFIG

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    return study.with_determinism(True)


def _check_new_file(path: Path, option: str) -> None:
    """Refuse, before any work, a result file that exists or whose folder cannot take it."""
    import os

    if path.exists() or path.is_symlink():
        raise ParameterError(f"{option}: {path} exists; give a new file (results are not "
                             "overwritten)")
    folder = path.parent
    while not folder.exists():  # the folders to create, up to one that exists
        folder = folder.parent
    if not folder.is_dir():
        raise ParameterError(f"{option}: cannot write {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ParameterError(f"{option}: cannot write {path}: {folder} is not writable")


def _write_new_file(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (its folders made as needed)."""
    from adastudy import store

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        store.atomic_write_text(path, text)
    except OSError as exc:
        raise ParameterError(f"cannot write {path}: {exc.strerror or exc}") from None


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


#: The test pairs' folds (the LFW protocol of `evaluate.verification_accuracy`).
_TEST_FOLDS = 10

#: Labels of the last training window's statistics (`final_<name>` metrics); angles
#: (`*_rad`) print in degrees.
_WINDOW_LABELS = {
    "loss": "training loss",
    "train_accuracy": "training accuracy",
    "s": "scale s",
    "theta_med_rad": "θ_med (median target angle)",
    "theta_mean_rad": "mean target angle",
    "cos_nontarget_mean": "mean cos to other classes",
    "p_target_mean": "mean P(true class)",
    "ln_b_avg": "ln B_avg",
    "ln_b_avg_ratio": "ln B_avg / ln(C − 1)",
    "cos_nontarget_var": "variance of cos to other classes",
    "d_eff": "d_eff (1 / that variance)",
    "stability_margin": "stability margin d_eff / d_eff_min",
}


def _result_table(result: Any, log_every: int | None = None) -> Table:
    """A trial's outcome as a two-column rich table, every row labelled for a reader."""
    table = Table(title=f"trial: {result.head}, seed {result.seed}", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")

    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.4g}"
        return str(value)

    def degrees(value: Any) -> str:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return fmt(value)
        return f"{math.degrees(value):.1f}°"

    metrics = result.metrics
    m = "-" if result.m is None else f"{result.m:.4g} rad ({math.degrees(result.m):.1f}°)"
    rows: list[tuple[str, Any]] = [
        ("state", result.state),
        ("scale s / margin m", f"{fmt(result.s)} / {m}"),
        ("steps (epochs)", f"{result.steps} ({result.epochs:.3g})"),
        ("wall time", f"{result.wall_time_s:.1f} s"),
        ("samples / s", f"{result.samples_per_s:,.0f}"),
    ]
    if result.state == "diverged":
        rows.append(("diverged", f"step {result.diverged_step}: {result.diverged_reason}"))
    if result.scale_clamped_steps:
        rows.append(("scale clamped", f"{result.scale_clamped_steps} steps at "
                                      f"train.adacos_scale_max, from step "
                                      f"{result.scale_clamped_first_step}"))
    from adastudy.spec import SET_METRIC_PREFIX

    sets = [k.removeprefix(SET_METRIC_PREFIX) for k in metrics
            if k.startswith(SET_METRIC_PREFIX) and not k.endswith("_std")]
    for name in sets:  # the [eval.<name>] sets, in the spec's order
        key = f"{SET_METRIC_PREFIX}{name}"
        rows.append((f"{name}: verification accuracy (± std over {_TEST_FOLDS} folds)",
                     f"{metrics[key]:.4f} ± {metrics[key + '_std']:.4f}"))
    if len(sets) > 1:
        rows.append((f"verification accuracy, mean of the {len(sets)} sets",
                     f"{metrics['verification_accuracy']:.4f}"))
    elif "verification_accuracy" in metrics and not sets:
        rows.append((f"verification accuracy (± std over {_TEST_FOLDS} folds)",
                     f"{metrics['verification_accuracy']:.4f} ± "
                     f"{metrics['verification_accuracy_std']:.4f}"))
    if "corrupt_samples" in metrics:
        rows.append(("corrupt samples skipped", int(metrics["corrupt_samples"])))
    rows += [(f"TAR at FAR {k.removeprefix('tar_at_far_')}", metrics[k])
             for k in sorted(metrics) if k.startswith("tar_at_far_")]
    if not sets:  # data on disk has no identification set
        rows.append(("rank-1 identification", metrics.get("rank1")))
    rows.append(("validation accuracy (last)", metrics.get("val_accuracy")))
    for key, value in metrics.items():
        if key.startswith("final_"):
            name = key.removeprefix("final_")
            label = _WINDOW_LABELS.get(name, name.replace("_", " "))
            shown = degrees(value) if name.endswith("_rad") else fmt(value)
            rows.append((f"last window: {label}", shown))
    rows += [(f"first step with θ_med < {level}°", "not reached" if step is None else step)
             for level, step in result.steps_to_theta_med.items()]
    for name, value in rows:
        table.add_row(name, fmt(value))
    window = "log_every" if log_every is None else str(log_every)
    table.caption = (f"last window: means over the last {window} training steps; "
                     "the test pairs are scored once, at the end")
    return table


@app.command()
def sweep(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Study spec (TOML).")],
    backend: Annotated[
        _Backend, typer.Option("--backend", help="Engine: optuna (embedded), ray (one machine "
                               "or a cluster) or serial (every trial in this process).")
    ] = _Backend["optuna"],
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, help="Trials run at once, each in its process "
                     "(optuna backend).", show_default="1"),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option("--address", help="Join the Ray cluster there: auto or HOST:PORT (ray "
                     "backend).", show_default="a local Ray, on loopback, for this sweep"),
    ] = None,
    cpus_per_trial: Annotated[
        float | None,
        typer.Option("--cpus-per-trial", help="CPUs (and torch threads) each trial holds "
                     "(ray backend).", show_default="1"),
    ] = None,
    gpus_per_trial: Annotated[
        float | None,
        typer.Option("--gpus-per-trial", help="GPUs each trial holds (ray backend); a "
                     "fraction such as 0.25 lets trials share a GPU.", show_default="0"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Run folder.", show_default="runs/<study name>"),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary and leaderboard on stdout.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the trials per head and variant and an "
                           "estimate of the wall time (from short pilot trials), run "
                           "nothing, write nothing.")
    ] = False,
    keep_checkpoints: Annotated[
        bool, typer.Option("--keep-checkpoints", help="Keep a finished trial's last "
                           "checkpoint in RUN_DIR/checkpoints/ (train.checkpoint_every); "
                           "by default it is removed once the trial's record is written.")
    ] = False,
    save_models: Annotated[
        bool, typer.Option("--save-models", help="Save each completed trial's final model "
                           "and head in RUN_DIR/models/<trial>.pt.")
    ] = False,
    deterministic: Annotated[
        bool, typer.Option("--deterministic", help="Deterministic mode (train.deterministic): "
                           "deterministic torch algorithms, cuDNN without autotuning, "
                           "cuBLAS's fixed workspace, every generator seeded; recorded in "
                           "the manifest.")
    ] = False,
) -> None:
    """Run (or resume) a study: every grid point × seed, exactly once."""
    from adastudy import spec as specs
    from adastudy.backends import get_engine
    from adastudy.backends.sweep import TrialOptions, check_spec, run_sweep

    study = _deterministic(specs.load(spec_path), deterministic)
    engine = get_engine(_choice(backend), {
        "--workers": workers, "--address": address, "--cpus-per-trial": cpus_per_trial,
        "--gpus-per-trial": gpus_per_trial})
    check_spec(study, spec_path, engine, dry_run=dry_run)
    if dry_run:
        _print_dry_run(study, engine, out, as_json)
        return
    options = TrialOptions(keep_checkpoints=keep_checkpoints, save_models=save_models)
    if as_json:
        summary = run_sweep(study, spec_path, engine, out=out, options=options)
    else:
        summary = viewed_sweep(study, spec_path, engine, out=out, options=options)
    for problem in summary.problems:  # plain lines: rich would wrap long paths
        typer.echo(f"warning: {problem}", err=True)
    resume = f"adastudy sweep {spec_path} --out {summary.run_dir}{engine.resume_args()}"
    if as_json:
        _print_leaderboard(summary.run_dir, as_json=True, extra={
            "run_dir": str(summary.run_dir), "planned": summary.planned,
            "finished": summary.finished, "interrupted": summary.interrupted})
    else:
        _print_leaderboard(summary.run_dir)
        typer.echo(f"{summary.finished}/{summary.planned} trials finished in {summary.run_dir}")
    if summary.interrupted:
        typer.echo(f"interrupted: resume with  {resume}", err=True)
        raise typer.Exit(130)


def viewed_sweep(study: Any, spec_path: Path, engine: Any, **options: Any) -> Any:
    """`run_sweep` with its progress shown on stderr."""
    import contextlib

    from adastudy.backends.sweep import run_sweep

    # A terminal gets the live bar (with an ETA) and table; a log file (a nightly job)
    # gets a plain line now and then (`PlainProgress`), as a Live view shows nothing
    # there until it ends.
    terminal = sys.stderr.isatty()
    plain = None if terminal else PlainProgress(study.study.name)
    bar = sweep_bar(study.study.name)
    table = LiveTable(study.study)
    task = bar.add_task("sweep", total=len(study.trials()))
    started: list[bool] = []
    view = (Live(bar, console=Console(stderr=True), transient=True, refresh_per_second=4)
            if terminal else contextlib.nullcontext())
    with view as live:
        def update(status: Any) -> None:
            if plain is not None:
                plain(status)
                return
            if not started:  # trials done before a resume are no speed of this run
                started.append(True)
                bar.reset(task, completed=status.finished, total=status.planned)
            bar.update(task, completed=status.finished, total=status.planned)
            live.update(Group(bar, table(status)))

        return run_sweep(study, spec_path, engine, progress=update, **options)


@app.command()
def show(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A sweep's run folder.")],
    metric: Annotated[
        str | None,
        typer.Option("--metric", help="Rank by this metric: verification_accuracy, "
                     "val_accuracy, rank1, tar_at_far_1e-02, tar_at_far_1e-03, "
                     "steps_to_theta_med_<level>deg or final_<statistic> (an unknown one "
                     "is refused with the run's list).", show_default="the study's"),
    ] = None,
    direction: Annotated[
        _Direction | None,
        typer.Option("--direction", help="Rank best first for this direction.",
                     show_default="the study's for its metric; for another metric its "
                     "natural one: minimize for step counts, losses and angles, maximize "
                     "for accuracies and TAR"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """The leaderboard of a run: mean ± std and 95 % CI over seeds per configuration."""
    _print_leaderboard(run_dir, metric=metric, direction=_choice(direction), as_json=as_json)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A sweep's run folder.")],
    fmt: Annotated[
        _ExportFormat, typer.Option("--format", help="Table format.")
    ] = _ExportFormat.csv,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder.", show_default="RUN_DIR/export")
    ] = None,
) -> None:
    """Write the run's trials and series tables as CSV or Parquet."""
    from adastudy import store

    for path in store.export(run_dir, _choice(fmt), out):
        typer.echo(f"wrote {path}")


_VERDICT_STYLE = {"supported": "green", "not supported": "red", "inconclusive": "yellow",
                  "not tested": "dim"}


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A sweep's run folder.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder.", show_default="RUN_DIR/report/")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a report of another run in that folder.")
    ] = False,
    fmt: Annotated[
        str, typer.Option("--format", help="html, md, or both: html,md.")
    ] = "html,md",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the verdicts and written files as JSON.")
    ] = False,
) -> None:
    """Render a run's report: a verdict on each claim C1-C10 of the AdaCos paper, with
    leaderboards, heatmaps, convergence curves and the theory panel."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from adastudy import report as reports
    from adastudy.report import content

    formats = reports.parse_formats(fmt)  # a bad --format fails before any work
    if not run_dir.is_dir():
        raise ParameterError(f"{run_dir}: no such folder")
    reports.preflight(run_dir, out, force=force)  # so is a folder of another run's report
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), transient=True,
                  console=Console(stderr=True),
                  disable=as_json or not sys.stderr.isatty()) as progress:
        progress.add_task(f"rendering the report of {run_dir}", total=None)
        built = content.build(run_dir)
        written = reports.write(built, out, formats, force=force)
    if as_json:
        typer.echo(json.dumps(_json_safe({"files": [str(p) for p in written],
                                          **built.data})))
        return
    table = Table(title=f"verdicts on the AdaCos paper's claims ({run_dir})")
    for column in ("claim", "verdict", "why"):
        table.add_column(column, overflow="fold")
    for v in built.verdicts:
        style = _VERDICT_STYLE[v.verdict]
        table.add_row(f"{v.claim_id}: {v.claim}", f"[{style}]{v.verdict}[/{style}]",
                      rich_escape(v.reason))
    console = Console()
    if built.answer is not None:
        console.print(f"[bold]{rich_escape(built.answer.sentence)}[/bold]")
    console.print(table)
    for path in written:
        typer.echo(f"wrote {path}")


@app.command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(
        metavar="RUN_DIR RUN_DIR...",
        help="Two or more run folders; the first is the baseline.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder.", show_default="compare-A-vs-B/ "
                                  "beside the first run folder")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="html, md, or both: html,md.")
    ] = "html,md",
    force: Annotated[
        bool, typer.Option("--force", help="Replace another report in that folder.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the comparison and written files as JSON.")
    ] = False,
) -> None:
    """Compare runs side by side: each run's answer and verdict matrix, the verdicts that
    changed, and each head's best result with its difference from the baseline."""
    from adastudy import report as reports
    from adastudy.report.compare import build_comparison, default_out

    formats = reports.parse_formats(fmt)
    built = build_comparison(run_dirs)
    written = reports.write(built, out or default_out(run_dirs), formats, force=force)
    if as_json:
        typer.echo(json.dumps(_json_safe({"files": [str(p) for p in written], **built.data})))
        return
    console = Console()
    for section in built.sections[:4]:
        for table in section.tables[:1]:
            view = Table(title=section.title)
            for column in table.columns:
                view.add_column(rich_escape(column), overflow="fold")
            for row in table.rows:
                view.add_row(*(rich_escape(cell) for cell in row))
            console.print(view)
        if section.id == "answers":
            for paragraph in section.paragraphs:
                console.print(rich_escape(paragraph))
    for path in written:
        typer.echo(f"wrote {path}")


@app.command()
def baseline(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A sweep's run folder.")],
    out: Annotated[Path, typer.Option("--out", metavar="FILE", help="The baseline file to "
                                      "write, e.g. baselines/<study>.json.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing baseline file.")
    ] = False,
) -> None:
    """Record a run as the baseline of its study: per configuration the per-seed values,
    mean and std of every final metric, every claim's verdict, the manifest and the spec
    digest (`adastudy reproduce` compares re-runs with it)."""
    from adastudy.reproduce import make_baseline, write_baseline

    if out.exists() and not force:  # before the claims are judged: the refusal is at once
        raise ParameterError(f"{out}: exists; give another --out, or --force to replace "
                             "the baseline")
    made = make_baseline(run_dir)
    path = write_baseline(made, out, force=force)
    configs = made["configurations"]
    typer.echo(f"wrote {path}: {len(configs)} configurations, "
               f"{sum(len(c['seeds']) for c in configs)} trials, "
               f"{len(made['verdicts'])} verdicts (study {made['study']}, spec "
               f"{str(made['spec_digest'])[:12]})")


class _FailOn(str, Enum):
    both = "both"
    worse = "worse"
    improved = "improved"


@app.command()
def reproduce(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Study spec (TOML).")],
    baseline_path: Annotated[Path, typer.Option("--baseline", metavar="FILE",
                                                help="A baseline of this spec "
                                                "(adastudy baseline).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for the re-run and its report.",
                                  show_default="runs/reproduce-<study>")
    ] = None,
    confirm: Annotated[
        bool, typer.Option("--confirm", help="Re-run the configurations that drifted with "
                           "fresh seeds; a drift stands only if it holds on both.")
    ] = False,
    fail_on: Annotated[
        _FailOn, typer.Option("--fail-on", help="Which drifts exit 1: worse, improved or "
                              "both (a flipped verdict, a configuration on one side only "
                              "and a metric without a direction always do).")
    ] = _FailOn.both,
    backend: Annotated[
        _Backend, typer.Option("--backend", help="Engine, as for sweep.")
    ] = _Backend["optuna"],
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Trials at once (optuna).",
                                 show_default="1")
    ] = None,
    deterministic: Annotated[
        bool | None, typer.Option("--deterministic/--no-deterministic",
                                  help="Deterministic mode for the re-run.",
                                  show_default="as the baseline was made")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the comparison as JSON on stdout.")
    ] = False,
) -> None:
    """Re-run a study (or the part its reproduce section names) and compare it with a
    baseline: metric drift beyond the seeds' noise, seeds that newly fail or diverge,
    flipped verdicts, the environment diff and where a drift comes from. Exit 0:
    reproduced; 1: drift; 2: a usage error or a bad or mismatched baseline."""
    from adastudy import spec as specs
    from adastudy.backends import get_engine
    from adastudy.backends.sweep import check_spec
    from adastudy.reproduce import check_baseline, load_baseline
    from adastudy.reproduce import reproduce as run_check

    study = specs.load(spec_path)
    baseline = load_baseline(baseline_path)
    check_baseline(baseline, study, baseline_path)
    engine = get_engine(_choice(backend), {"--workers": workers})
    if deterministic:
        study = _deterministic(study, True)
    check_spec(study, spec_path, engine)

    def run(spec: Any, path: Path, engine: Any, out: Path) -> Any:
        if as_json:
            from adastudy.backends.sweep import run_sweep

            return run_sweep(spec, path, engine, out=out)
        return viewed_sweep(spec, path, engine, out=out)

    done = run_check(study, spec_path, baseline, engine, baseline_path=baseline_path,
                     out=out, confirm=confirm, fail_on=_choice(fail_on),
                     deterministic=deterministic, run=run)
    for problem in done.problems:
        typer.echo(f"warning: {problem}", err=True)
    if done.interrupted or done.comparison is None:
        typer.echo(f"interrupted: the re-run in {done.run_dir} is incomplete; run the "
                   "command again (a fresh re-run)", err=True)
        raise typer.Exit(130)
    comparison = done.comparison
    if as_json:
        typer.echo(json.dumps(_json_safe({"files": [str(p) for p in done.files],
                                          "run_dir": str(done.run_dir),
                                          **comparison.to_json()})))
    else:
        _print_reproduction(comparison, done.files)
    if comparison.failed:
        raise typer.Exit(1)


def _print_reproduction(comparison: Any, files: list[Path]) -> None:
    from adastudy.reproduce.render import drift_row, headline, number

    console = Console()
    drifted = [d for d in comparison.drifts if d.drifted]
    if drifted:  # the report's cells, fewer columns: a log is 80 characters wide
        table = Table(title=f"drift against the baseline ({comparison.study})")
        for column in ("configuration · metric", "baseline → re-run (n)",
                       "difference [95 %]", "tolerance", "result"):
            table.add_column(column, overflow="fold")
        for d in drifted:
            cells = drift_row(d, comparison)
            result = cells[6] + (f"; confirmed: {cells[7]}" if cells[7] else "")
            table.add_row(*(rich_escape(cell) for cell in (
                f"{d.key} · {d.metric}",
                f"{number(d.base_mean)} → {number(d.new_mean)} ({d.n_base}, {d.n_new})",
                cells[4], number(d.threshold), result)))
        console.print(table)
    for change in comparison.states:
        console.print(rich_escape(f"{change.key} seed {change.seed}: {change.base} -> "
                                  f"{change.new} ({change.direction})"))
    for key, side in comparison.missing:
        console.print(rich_escape(f"{key}: missing from the {side}"))
    for flip in comparison.flips:
        console.print(rich_escape(f"{flip.claim} {flip.part or ''}: verdict {flip.base} -> "
                                  f"{flip.new}"))
    differs = [(k, a, b) for k, a, b, used in comparison.environment if used and a != b]
    if differs:
        env = Table(title="environment: what differs")
        for column in ("", "baseline", "re-run"):
            env.add_column(column, overflow="fold")
        for k, a, b in differs:
            env.add_row(rich_escape(k), rich_escape(str(a)), rich_escape(str(b)))
        console.print(env)
    style = "red" if comparison.failed else "green"
    console.print(f"[{style}]{rich_escape(headline(comparison))}[/{style}]")
    for path in files:
        typer.echo(f"wrote {path}")


# `adastudy data ...` (adastudy.cli.data imports only typer and rich; its readers load
# in the command). Imported here, after `style` and the commands above: it uses `style`.
from adastudy.cli.data import data_app  # noqa: E402

app.add_typer(data_app, name="data")


def _print_dry_run(study: Any, engine: Any, out: Path | None, as_json: bool) -> None:
    """`sweep --dry-run`: the plan and the pilot-based estimate (`backends.dryrun`)."""
    from adastudy.backends import dryrun

    run_dir = out if out is not None else Path("runs") / study.study.name
    with Progress(TextColumn("{task.description}"), console=Console(stderr=True),
                  transient=True, disable=as_json or not sys.stderr.isatty()) as bar:
        bar.add_task("timing a pilot trial per variant ...", total=None)
        found = dryrun.estimate(study, workers=engine.slots, run_dir=run_dir)
    if as_json:
        typer.echo(json.dumps(_json_safe({"run_dir": str(run_dir), **found.to_json()})))
        return
    table = Table(title=f"sweep {study.study.name}: the plan (nothing run, nothing written)")
    for column in ("variant", "head", "trials", "finished already", "est. per trial"):
        table.add_column(column, justify="left" if column in ("variant", "head") else "right")
    for row in found.rows:
        pilot = found.pilots.get(row.variant)
        table.add_row(row.variant, row.head + (" (tpe)" if row.searched else ""),
                      str(row.trials), str(row.finished),
                      _per_trial(pilot) if pilot and row.trials else "-")
    Console().print(table)
    for pilot in found.pilots.values():
        if pilot.basis == "reference":
            typer.echo(_reference_line(study, pilot))
    if found.gpu_hours is not None:
        typer.echo(f"{found.trials} trials to run in {run_dir}: about "
                   + (f"{found.gpu_hours:,.0f} GPU-hours" if math.isfinite(found.gpu_hours)
                      else "? GPU-hours (set data.expected_images)")
                   + " at insightface's published throughput (a reference figure, not "
                   "measured here)")
        return
    typer.echo(f"{found.trials} trials to run in {run_dir}"
               + (f" ({found.finished} finished already)" if found.finished else "")
               + f": about {duration(found.wall_s)} with {found.workers} "
               + ("worker" if found.workers == 1 else "workers")
               + " (an estimate from one pilot trial per variant, on this machine; "
               "pruning ends trials sooner)")


def _per_trial(pilot: Any) -> str:
    """A pilot's time per trial: measured here, or GPU-hours from the reference."""
    if pilot.basis != "reference":
        return duration(pilot.trial_s)
    return f"{pilot.trial_s / 3600:.1f} GPU-h" if math.isfinite(pilot.trial_s) else "?"


def _reference_line(study: Any, pilot: Any) -> str:
    """One variant on data on disk: what its per-trial GPU-hours come from."""
    data, model, train = study.variant_sections(pilot.variant)
    from adastudy.spec import MAIN_VARIANT

    where = "" if pilot.variant == MAIN_VARIANT else f"variant {pilot.variant}: "
    if pilot.images is None:
        return (f"{where}{data.path}: not on this machine and no data.expected_images: "
                "the GPU-hours need the image count")
    source = "on disk" if pilot.images_from == "disk" else "data.expected_images"
    return (f"{where}{model.name}, {pilot.gmacs:.2f} G multiply-adds per image, "
            f"{train.epochs} epochs x {pilot.images:,} images ({source}): "
            f"{pilot.trial_s / 3600:.1f} GPU-hours per trial")


_NOT_METRICS = ("number", "num_classes", "embedding_dim", "s", "m", "seed")

#: What a missing value prints as in a table: a head without s or m, a std or an
#: interval of fewer than two seeds, a configuration without a value.
_MISSING = "-"


def natural_direction(metric: str) -> str | None:
    """`adastudy.spec.natural_direction` (kept here: scripts import it from the CLI)."""
    from adastudy.spec import natural_direction as direction

    return direction(metric)


def _rank_metrics(trials: Any) -> list[str]:
    """The metrics a run can be ranked by: the study metrics, and every numeric column
    of its trials table that is not a fixed column (metrics, ``steps_to_theta_med_*``)."""
    from pandas.api.types import is_numeric_dtype

    from adastudy.spec import STUDY_METRICS
    from adastudy.store import TRIALS_FIXED_COLUMNS

    fixed = set(TRIALS_FIXED_COLUMNS)
    found = [c for c in trials.columns if c not in fixed and is_numeric_dtype(trials[c])]
    return [*STUDY_METRICS, *(c for c in found if c not in STUDY_METRICS)]


def _print_leaderboard(
    run_dir: Path, metric: str | None = None, as_json: bool = False,
    extra: dict[str, Any] | None = None, direction: str | None = None,
) -> None:
    """The leaderboard of `run_dir` by `metric` (default: the study's), best first for
    `direction` (default: the study's for its metric, else `natural_direction`)."""
    from adastudy import store
    from adastudy.spec import STUDY_METRICS, metric_bounds

    trials, _ = store.load_tables(run_dir)
    manifest = store.read_manifest(run_dir) or {}
    study = manifest.get("spec", {}).get("study", {})
    study_metric = study.get("metric", "verification_accuracy")
    if not len(trials) and not as_json:
        again = f"adastudy sweep {manifest['spec_path']} --out {run_dir}" if manifest.get(
            "spec_path") else "adastudy sweep SPEC --out " + str(run_dir)
        typer.echo(f"no finished trial in {run_dir} yet: nothing to rank; run (or resume) "
                   f"the sweep:  {again}")
        return
    if metric is not None and metric not in _rank_metrics(trials):
        raise ParameterError(f"--metric: {run_dir} has no metric {metric!r}; choose one of "
                             + ", ".join(_rank_metrics(trials)))
    metric = metric or study_metric
    if direction is None:
        direction = (study.get("direction", "maximize") if metric == study_metric
                     else natural_direction(metric))
    if direction is None:
        raise ParameterError(f"--direction: {metric} has no natural direction; give "
                             "--direction maximize or --direction minimize")
    if (metric in STUDY_METRICS or metric == study_metric) and metric not in trials:
        trials[metric] = math.nan  # no trial finished with it (all failed, say)
    board = store.leaderboard(trials, metric, direction)
    # The verification sets ([eval.<name>]): a column each, after the mean.
    sets = store.eval_set_names(trials, manifest)
    if sets:
        board = store.set_means(board, trials, sets)
    rows = board.to_dict(orient="records")
    for row in rows if sets else ():
        row["sets"] = {name: row.pop(store.set_column(name)) for name in sets}
    if as_json:
        payload = {**(extra or {}), "metric": metric, "direction": direction,
                   "leaderboard": rows,
                   "states": trials["state"].value_counts().to_dict() if len(trials) else {}}
        typer.echo(json.dumps(_json_safe(payload)))
        return
    average = bool(sets) and metric == "verification_accuracy"
    order = "highest first (maximize)" if direction == "maximize" else "lowest first (minimize)"
    table = Table(title=f"{study.get('name', run_dir)}: mean {metric}"
                  + (f" (the average over the {len(sets)} sets)" if average else "")
                  + f" over seeds, {order}")
    for column in ("head", "s", "m", "n", "mean"):
        # In a narrow terminal only the last column wraps: a head and a number stay
        # whole (the head's variant, "@c30", is part of it).
        table.add_column(column, justify="left" if column == "head" else "right",
                         no_wrap=True)
    for name in sets:
        table.add_column(rich_escape(name), justify="right", no_wrap=True)
    for column in ("std", "95 % CI", "not counted"):
        table.add_column(column, justify="right" if column == "std" else "left",
                         no_wrap=column != "not counted")

    def num(value: Any, fmt: str = ".4f") -> str:
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return _MISSING if missing else format(value, fmt)

    # A share (accuracy, TAR) with fixed decimals; a step count, a scale, ... as is.
    share = metric_bounds(metric) is not None
    mean_fmt, std_fmt, ci_fmt = (".4f", ".4f", ".3f") if share else (".4g", ".3g", ".4g")
    for row in rows:
        others = ", ".join(f"{row[k]} {k.removeprefix('n_')}"
                           for k in ("n_pruned", "n_failed", "n_diverged") if row.get(k))
        low, high = num(row["ci95_low"], ci_fmt), num(row["ci95_high"], ci_fmt)
        interval = _MISSING if _MISSING in (low, high) else f"[{low}, {high}]"
        table.add_row(
            head_label(row), num(row["s"], "g"), num(row["m"], "g"), str(row["n"]),
            num(row["mean"], mean_fmt), *(num(row["sets"][name]) for name in sets),
            num(row["std"], std_fmt), interval, others or _MISSING,
        )
    caption = [
        "n: seeds that count (complete, with a value); not counted: the configuration's "
        "pruned, failed and diverged trials, left out of mean, std and CI",
        f"{_MISSING}: none (a head without s or m; std and CI need two seeds)",
    ]
    if sets:
        listed = rich_escape(", ".join(sets))
        caption.append(
            (f"mean: a seed's verification_accuracy is its average over the sets {listed} "
             "(the AVG column of face papers); " if average else "")
            + f"{listed}: each set's mean {store.set_column('<set>')} over the counted "
            "seeds")
    if metric.startswith("steps_to_"):
        caption.append("a seed whose θ_med never fell below the level has no value "
                       "(it is not in n)")
    table.caption = "\n".join(caption)
    Console().print(table)
