"""`fl-sim`: run an experiment from a TOML config, and plot or compare results folders."""
# Errors: a bad config exits 2 and a failed run exits 1, each with one line "error: ..." on
# stderr; `--debug` re-raises instead, to show the traceback.

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fl.schema import ConfigError

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help=__doc__,
    # Rich tracebacks print every frame's local variables: hundreds of lines for one error.
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
)

_DEBUG_HELP = "on an error, show the full traceback instead of one line"


def _one_line(exc: BaseException) -> str:
    """An exception as one line: its first non-empty line (" [...]" if it had more)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    if len(lines) > 1:
        text += " [...]"
    return text


def _fail(exc: BaseException, code: int, debug: bool, what: str = "") -> typer.Exit:
    """Print `error: <what><exc>` to stderr (re-raise with --debug); the Exit to raise."""
    if debug:
        raise exc
    kind = "" if isinstance(exc, ConfigError) else f"{type(exc).__name__}: "
    hint = "" if isinstance(exc, ConfigError) else " (--debug shows the traceback)"
    typer.echo(f"error: {what}{kind}{_one_line(exc)}{hint}", err=True)
    return typer.Exit(code)


@cli.command()
def run(
    config: Annotated[Path, typer.Argument(help="TOML experiment config")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a key: --set strategy.name=fedprox (repeatable)"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="results folder (default: <output_dir>/<name>)")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    engine: Annotated[
        str,
        typer.Option(
            help="virtual: the virtual grid (virtual time); flower: Flower's Simulation Engine "
            "(Ray) through `flwr run`, one SuperNode per node (wall-clock time)"
        ),
    ] = "virtual",
    cpus_per_client: Annotated[
        float, typer.Option(help="--engine flower: CPUs Ray reserves per ClientApp")
    ] = 1.0,
    debug: Annotated[bool, typer.Option(help=_DEBUG_HELP)] = False,
) -> None:
    """Run one experiment and write its results folder.

    Exits 2 for an invalid config (one line naming the key), 1 for a run that failed."""
    from fl.experiment import run_experiment
    from fl.experiment.config import load_config
    from fl.experiment.results import summary

    if engine not in ("virtual", "flower"):
        typer.echo(f"error: --engine {engine!r} is unknown; use virtual or flower", err=True)
        raise typer.Exit(2)
    try:
        cfg = load_config(config, set_ or [])
    except ConfigError as exc:
        raise _fail(exc, 2, debug) from None
    out_dir = out or Path(cfg.output_dir) / cfg.name
    try:
        if engine == "flower":
            from fl.flower.engines import run_on_flower

            run_on_flower(cfg, out_dir, cpus_per_client=cpus_per_client, verbose=not quiet)
            text = (out_dir / "summary.json").read_text()
        else:
            text = json.dumps(summary(run_experiment(cfg, out_dir, progress=not quiet)), indent=2)
    except Exception as exc:  # a failed run: one line, not a traceback
        raise _fail(exc, 1, debug, "the run failed: ") from None
    typer.echo(text)
    typer.echo(f"results: {out_dir}")


@cli.command()
def resume(
    results: Annotated[Path, typer.Argument(help="results folder of a run with checkpoints")],
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    debug: Annotated[bool, typer.Option(help=_DEBUG_HELP)] = False,
) -> None:
    """Continue a run from the last checkpoint in its results folder (`checkpoint_every`)."""
    from fl.experiment import RunFailedError, resume_experiment
    from fl.experiment.results import summary

    try:
        result = resume_experiment(results, progress=not quiet)
    except RunFailedError as exc:
        raise _fail(exc, 1, debug, "the run failed: ") from None
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(exc, 2, debug) from None
    except Exception as exc:
        raise _fail(exc, 1, debug, "the run failed: ") from None
    typer.echo(json.dumps(summary(result), indent=2))
    typer.echo(f"results: {results}")


@cli.command()
def plot(
    results: Annotated[list[Path], typer.Argument(help="results folders to overlay")],
    out: Annotated[Path, typer.Option(help="where to write the PNGs")] = Path("results/plots"),
) -> None:
    """Overlay several runs: accuracy against virtual time and against rounds."""
    from fl.experiment.plots import plot_runs

    for d in results:
        if not (d / "rounds.csv").is_file():
            typer.echo(f"error: {d} is not a results folder (no rounds.csv)", err=True)
            raise typer.Exit(2)
    for path in plot_runs(results, out):
        typer.echo(str(path))


@cli.command()
def compare(
    results: Annotated[list[Path], typer.Argument(help="results folders")],
) -> None:
    """Print a table of the runs' summaries side by side."""
    from rich.console import Console
    from rich.table import Table

    table = Table("run", "strategy", "rounds", "final acc", "virtual time (s)", "wall (s)")
    for d in results:
        path = d / "summary.json"
        if not path.is_file():
            typer.echo(f"error: {d} is not a results folder (no summary.json)", err=True)
            raise typer.Exit(2)
        s = json.loads(path.read_text())
        table.add_row(
            s["name"],
            s["strategy"],
            str(s["rounds_completed"]),
            f"{s['final_accuracy']:.4f}",
            f"{s['virtual_time_s']:.1f}",
            f"{s['wall_time_s']:.1f}",
        )
    Console().print(table)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="fl-sim")


if __name__ == "__main__":  # pragma: no cover
    main()
