"""`fl-sim`: run an experiment from a TOML config, and plot or compare results folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fl.schema import ConfigError

cli = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


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
) -> None:
    """Run one experiment and write its results folder."""
    from fl.experiment import run_experiment
    from fl.experiment.config import load_config
    from fl.experiment.results import summary

    if engine not in ("virtual", "flower"):
        typer.echo(f"error: --engine {engine!r} is unknown; use virtual or flower", err=True)
        raise typer.Exit(2)
    try:
        cfg = load_config(config, set_ or [])
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    out_dir = out or Path(cfg.output_dir) / cfg.name
    if engine == "flower":
        from fl.flower.engines import FlowerRunError, run_on_flower

        try:
            run_on_flower(cfg, out_dir, cpus_per_client=cpus_per_client, verbose=not quiet)
        except FlowerRunError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        typer.echo((out_dir / "summary.json").read_text())
    else:
        result = run_experiment(cfg, out_dir, progress=not quiet)
        typer.echo(json.dumps(summary(result), indent=2))
    typer.echo(f"results: {out_dir}")


@cli.command()
def resume(
    results: Annotated[Path, typer.Argument(help="results folder of a run with checkpoints")],
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Continue a run from the last checkpoint in its results folder (`checkpoint_every`)."""
    from fl.experiment import resume_experiment
    from fl.experiment.results import summary

    try:
        result = resume_experiment(results, progress=not quiet)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
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
