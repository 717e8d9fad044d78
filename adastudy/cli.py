"""The ``adastudy`` command line: thin Typer commands that parse, call one function, print.

Any `AdastudyError` (a user error) becomes one line ``error: <message>`` on stderr and
exit code 2, with the traceback before it only under ``adastudy --debug ...``. The
handling lives in the app's group (`_Group.invoke`), so every command gets it, under
`main` and under ``typer.testing.CliRunner`` alike.
"""

from __future__ import annotations

import json
import math
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape as rich_escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from adastudy import __version__
from adastudy.errors import AdastudyError, ParameterError

__all__ = ["app", "main"]

DEFAULT_SCALES = (8.0, 16.0, 32.0, 64.0)
DEFAULT_MARGINS_RAD = (0.2, 0.35, 0.5)
DEFAULT_MARGIN_SCALE = 64.0
DEFAULT_THEORY_OUT = Path("runs/theory")


def _fail(exc: AdastudyError, *, debug: bool) -> NoReturn:
    """Print ``error: <message>`` (after the traceback when ``debug``) and exit 2."""
    if debug:
        typer.echo("".join(traceback.format_exception(exc)).rstrip("\n"), err=True)
    message = " ".join(str(exc).split()) or type(exc).__name__
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


class _Group(TyperGroup):
    """The app's group: turns an `AdastudyError` from any command into `_fail`."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AdastudyError as exc:
            _fail(exc, debug=bool(ctx.params.get("debug", False)))


app = typer.Typer(
    name="adastudy",
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help="Hyperparameter studies of cosine-softmax losses (CosFace, ArcFace) against AdaCos.",
)


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
            help="Scale(s) s for NormFace rows and panel (a); repeat or comma-separate. "
            f"Default: {', '.join(f'{s:g}' for s in DEFAULT_SCALES)}.",
            show_default=False,
        ),
    ] = None,
    margins: Annotated[
        list[str] | None,
        typer.Option(
            "--m",
            metavar="M[,M...]",
            help="Margin(s) m in radians for CosFace / ArcFace; repeat or comma-separate. "
            f"Default: {', '.join(f'{m:g}' for m in DEFAULT_MARGINS_RAD)}.",
            show_default=False,
        ),
    ] = None,
    margin_scale: Annotated[
        float, typer.Option("--margin-scale", help="Scale s used with the margins.")
    ] = DEFAULT_MARGIN_SCALE,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the figure (PNG and SVG).")
    ] = DEFAULT_THEORY_OUT,
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

    if as_json:
        payload = {
            "num_classes": classes,
            "fixed_scale": s_f,
            "rows": [row.as_dict() for row in rows],
            "figures": [str(path) for path in figures],
        }
        typer.echo(json.dumps(payload, indent=2))
        return

    # Plain lines through typer.echo: rich would wrap long paths at the console width.
    typer.echo(f"s_f = {s_f:.2f}")
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

    Commands already turn user errors into ``error: ...`` and exit 2 (see `_Group`);
    this also catches one raised outside a command, e.g. while parsing global options.
    """
    try:
        app(prog_name="adastudy")
    except AdastudyError as exc:
        try:
            _fail(exc, debug="--debug" in sys.argv[1:])
        except typer.Exit as done:
            sys.exit(done.exit_code)


@app.command()
def train(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Study spec (TOML).")],
    head: Annotated[
        str,
        typer.Option(
            "--head",
            help="softmax, normface, cosface, arcface, adacos-fixed or adacos-dynamic.",
        ),
    ] = "adacos-dynamic",
    s: Annotated[
        float | None,
        typer.Option("--s", help="Scale (normface, cosface, arcface); default: the head's."),
    ] = None,
    m: Annotated[
        float | None,
        typer.Option("--m", help="Margin in radians (cosface, arcface); default: the head's."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Trial seed: initialisation, order.")] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")
    ] = False,
) -> None:
    """Run one trial: train one head with one (s, m, seed) and print its metrics."""
    from adastudy import spec as specs
    from adastudy.heads import check_head_params
    from adastudy.train import RecordingReporter, run_trial

    study = specs.load(spec_path)
    params = {k: v for k, v in (("s", s), ("m", m)) if v is not None}
    check_head_params(head, **params)
    trial = specs.parse(
        {**study.model_dump(include={"data", "model", "train"}), "head": head, **params,
         "seed": seed},
        str(spec_path), specs.TrialSpec,
    )
    reporter = RecordingReporter()
    if as_json:
        result = run_trial(trial, reporter)
        typer.echo(json.dumps(_json_safe({**result.to_dict(), "series": reporter.rows})))
        return
    with Progress(
        TextColumn(f"{head} seed {seed}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("steps"), TimeElapsedColumn(), console=Console(stderr=True), transient=True,
    ) as bar:
        task = bar.add_task("train", total=None)
        result = run_trial(
            trial, reporter, progress=lambda step, total: bar.update(task, completed=step,
                                                                     total=total),
        )
    Console().print(_result_table(result))


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _result_table(result: Any) -> Table:
    """A trial's outcome as a two-column rich table."""
    table = Table(title=f"trial: {result.head}, seed {result.seed}", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")

    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.4g}"
        return str(value)

    metrics = result.metrics
    rows: list[tuple[str, Any]] = [
        ("state", result.state),
        ("s / m (rad)", f"{fmt(result.s)} / {fmt(result.m)}"),
        ("steps (epochs)", f"{result.steps} ({result.epochs:.3g})"),
        ("wall time (s)", f"{result.wall_time_s:.1f}"),
        ("samples / s", f"{result.samples_per_s:,.0f}"),
    ]
    if result.state == "diverged":
        rows.append(("diverged", f"step {result.diverged_step}: {result.diverged_reason}"))
    if "verification_accuracy" in metrics:
        rows.append(("verification accuracy", f"{metrics['verification_accuracy']:.4f} ± "
                                               f"{metrics['verification_accuracy_std']:.4f}"))
    rows += [(f"TAR @ FAR {k.removeprefix('tar_at_far_')}", metrics[k])
             for k in sorted(metrics) if k.startswith("tar_at_far_")]
    rows += [("rank-1 identification", metrics.get("rank1")),
             ("validation accuracy", metrics.get("val_accuracy"))]
    rows += [(k.removeprefix("final_"), v) for k, v in metrics.items() if k.startswith("final_")]
    rows += [(f"steps to θ_med < {level}°", step)
             for level, step in result.steps_to_theta_med.items()]
    for name, value in rows:
        table.add_row(name, fmt(value))
    return table


@app.command()
def sweep(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Study spec (TOML).")],
    backend: Annotated[
        str, typer.Option("--backend", help="Engine: optuna (embedded, default) or ray.")
    ] = "optuna",
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Trials run at once, each in its process.")
    ] = 1,
    address: Annotated[
        str | None,
        typer.Option("--address", help="Join the Ray cluster there: auto or HOST:PORT (ray "
                     "backend; default: a local Ray, on loopback, for this sweep)."),
    ] = None,
    cpus_per_trial: Annotated[
        float | None,
        typer.Option("--cpus-per-trial", help="CPUs (and torch threads) each trial holds "
                     "(ray backend; default 1).", show_default=False),
    ] = None,
    gpus_per_trial: Annotated[
        float | None,
        typer.Option("--gpus-per-trial", help="GPUs each trial holds (ray backend; default "
                     "0); a fraction such as 0.25 lets trials share a GPU.", show_default=False),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default runs/<study name>).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary and leaderboard on stdout.")
    ] = False,
) -> None:
    """Run (or resume) a study: every grid point × seed, exactly once."""
    import functools

    from adastudy import spec as specs

    study = specs.load(spec_path)
    if backend not in ("optuna", "ray"):
        raise ParameterError(f"--backend: must be optuna or ray, got {backend!r}")
    ray_options = {"--address": address, "--cpus-per-trial": cpus_per_trial,
                   "--gpus-per-trial": gpus_per_trial}
    if backend == "optuna":
        for name, value in ray_options.items():
            if value is not None:
                raise ParameterError(f"{name}: only the ray backend takes it (--backend ray)")
    elif workers != 1:
        raise ParameterError("--workers: the ray backend runs as many trials at once as the "
                             "cluster holds; set --cpus-per-trial / --gpus-per-trial instead")
    if not study.heads:
        raise ParameterError(f"{spec_path}: heads: the spec names no head to sweep")
    if backend == "ray":
        from adastudy.backends.ray import run_sweep as run_on_ray

        run_sweep = functools.partial(
            run_on_ray, address=address,
            cpus_per_trial=1.0 if cpus_per_trial is None else cpus_per_trial,
            gpus_per_trial=0.0 if gpus_per_trial is None else gpus_per_trial,
        )
    else:
        from adastudy.backends.optuna import run_sweep as run_on_optuna

        run_sweep = functools.partial(run_on_optuna, workers=workers)

    if as_json:
        summary = run_sweep(study, spec_path, out=out)
    else:
        bar = Progress(
            TextColumn(f"sweep {study.study.name}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("trials"), TimeElapsedColumn(),
        )
        task = bar.add_task("sweep", total=len(study.trials()))
        with Live(bar, console=Console(stderr=True), transient=True,
                  refresh_per_second=4) as live:
            def update(status: Any) -> None:
                bar.update(task, completed=status.finished, total=status.planned)
                live.update(Group(bar, _live_table(status, study.study)))

            summary = run_sweep(study, spec_path, out=out, progress=update)
    for problem in summary.problems:  # plain lines: rich would wrap long paths
        typer.echo(f"warning: {problem}", err=True)
    resume = f"adastudy sweep {spec_path} --out {summary.run_dir}" + (
        f" --workers {workers}" if workers > 1 else "")
    if backend == "ray":
        resume += " --backend ray" + "".join(
            f" {name} {value:g}" if isinstance(value, float) else f" {name} {value}"
            for name, value in ray_options.items() if value is not None)
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


@app.command()
def show(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A sweep's run folder.")],
    metric: Annotated[
        str | None, typer.Option("--metric", help="Rank by this metric (default: the study's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """The leaderboard of a run: mean ± std and 95 % CI over seeds per configuration."""
    _print_leaderboard(run_dir, metric=metric, as_json=as_json)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A sweep's run folder.")],
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder (default RUN_DIR/export).")
    ] = None,
) -> None:
    """Write the run's trials and series tables as CSV or Parquet."""
    from adastudy import store

    for path in store.export(run_dir, fmt, out):
        typer.echo(f"wrote {path}")


_VERDICT_STYLE = {"supported": "green", "not supported": "red", "inconclusive": "yellow",
                  "not tested": "dim"}


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A sweep's run folder.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder (default reports/<study>/).")
    ] = None,
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
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), transient=True,
                  console=Console(stderr=True),
                  disable=as_json or not sys.stderr.isatty()) as progress:
        progress.add_task(f"rendering the report of {run_dir}", total=None)
        built = content.build(run_dir)
        written = reports.write(built, out, formats)
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


def _head_label(row: dict[str, Any]) -> str:
    """A head's name, with its study variant unless it is the main one."""
    variant = row.get("variant") or "main"
    return str(row["head"]) if variant == "main" else f"{row['head']} @{variant}"


def _live_table(status: Any, study: Any) -> Table:
    """Running trials and the best configuration so far of each head (mean over its
    finished seeds), for the live view of a sweep."""
    runs: dict[tuple[str, Any, Any], list[float]] = {}
    for record in status.records:
        value = (record.get("metrics") or {}).get(study.metric)
        if record.get("state") == "complete" and value is not None:
            runs.setdefault((_head_label(record), record["s"], record["m"]), []).append(value)
    best: dict[str, tuple[float, Any, Any, int]] = {}
    sign = 1.0 if study.direction == "maximize" else -1.0
    for (head, s, m), values in runs.items():
        mean = sum(values) / len(values)
        if head not in best or sign * mean > sign * best[head][0]:
            best[head] = (mean, s, m, len(values))
    table = Table(title=f"best so far per head: mean {study.metric} over finished seeds")
    for column in ("head", "s", "m", "seeds", "mean"):
        table.add_column(column, justify="left" if column == "head" else "right")
    for head, (mean, s, m, n) in sorted(best.items(), key=lambda kv: -sign * kv[1][0]):
        table.add_row(head, "-" if s is None else f"{s:g}", "-" if m is None else f"{m:g}",
                      str(n), f"{mean:.4f}")
    table.caption = "running: " + (", ".join(status.running) or "-")
    return table


def _print_leaderboard(
    run_dir: Path, metric: str | None = None, as_json: bool = False,
    extra: dict[str, Any] | None = None,
) -> None:
    from adastudy import store
    from adastudy.spec import STUDY_METRICS

    trials, _ = store.load_tables(run_dir)
    manifest = store.read_manifest(run_dir) or {}
    study = manifest.get("spec", {}).get("study", {})
    metric = metric or study.get("metric", "verification_accuracy")
    direction = study.get("direction", "maximize")
    if metric in STUDY_METRICS and metric not in trials:
        trials[metric] = math.nan  # no trial finished with it (all failed, say)
    board = store.leaderboard(trials, metric, direction)
    if as_json:
        payload = {**(extra or {}), "metric": metric, "direction": direction,
                   "leaderboard": board.to_dict(orient="records"),
                   "states": trials["state"].value_counts().to_dict() if len(trials) else {}}
        typer.echo(json.dumps(_json_safe(payload)))
        return
    table = Table(title=f"{study.get('name', run_dir)}: {metric} ({direction}), over seeds")
    for column in ("head", "s", "m", "n", "mean", "std", "95 % CI", "other"):
        table.add_column(column, justify="left" if column in ("head", "other") else "right")

    def num(value: Any, fmt: str = ".4f") -> str:
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return "-" if missing else format(value, fmt)

    for row in board.to_dict(orient="records"):
        others = ", ".join(f"{row[k]} {k.removeprefix('n_')}"
                           for k in ("n_pruned", "n_failed", "n_diverged") if row.get(k))
        table.add_row(
            _head_label(row), num(row["s"], "g"), num(row["m"], "g"), str(row["n"]),
            num(row["mean"]), num(row["std"]),
            f"{num(row['ci95_low'], '.3f')}-{num(row['ci95_high'], '.3f')}", others,
        )
    Console().print(table)
