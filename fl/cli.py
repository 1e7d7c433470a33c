"""`fl-sim`: run experiments in virtual time, watch, plot and compare them, list what exists."""
# Errors: a bad config exits 2 and a failed run exits 1, each with one line "error: ..." on
# stderr; `--debug` re-raises instead, to show the traceback. Ctrl-C exits 130.

from __future__ import annotations

import json
import re
import shutil
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

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

# What a run writes into its results folder: `--force` removes exactly these, nothing else.
RUN_FILES = (
    "config.toml",
    "rounds.csv",
    "messages.csv",
    "summary.json",
    "model.pt",
    "status.json",
    "checkpoint.pkl",
)
RUN_GLOBS = ("*.png", "timeline*.html", ".checkpoint-*")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    return f"fl {of('fl')} (flwr {of('flwr')}, torch {of('torch')})"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(_version())
        raise typer.Exit()


@cli.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="print the versions of fl, flwr and torch, and exit",
        ),
    ] = False,
) -> None:
    """Run federated-learning experiments in virtual time; plot, compare and inspect them."""


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
    name: Annotated[
        str | None,
        typer.Option(
            help="the run's name, in legends, tables and the default folder (default: the "
            "config's name, plus what --set changed)"
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="overwrite the results of an earlier run in the folder")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    plots: Annotated[
        bool,
        typer.Option(
            help="write accuracy_vs_time.png and accuracy_vs_round.png (--no-plots saves ~1 s; "
            "`fl-sim plot RESULTS --out RESULTS` draws them later)"
        ),
    ] = True,
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

    Exits 2 for an invalid config (one line naming the key), 1 for a run that failed, 130 on
    Ctrl-C. A folder holding an earlier run is never overwritten without --force."""
    import dataclasses

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
    run_name = name if name is not None else default_run_name(cfg.name, set_ or [])
    if not run_name or "/" in run_name or run_name in (".", ".."):
        typer.echo(f"error: --name {run_name!r} is invalid: must be a folder name", err=True)
        raise typer.Exit(2)
    cfg = dataclasses.replace(cfg, name=run_name)
    out_dir = out or Path(cfg.output_dir) / cfg.name
    _claim(out_dir, force)
    try:
        if engine == "flower":
            from fl.flower.engines import run_on_flower

            run_on_flower(cfg, out_dir, cpus_per_client=cpus_per_client, verbose=not quiet)
            text = (out_dir / "summary.json").read_text()
        else:
            result = run_experiment(cfg, out_dir, progress=not quiet, plots=plots)
            text = json.dumps(summary(result), indent=2)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except ConfigError as exc:  # a value only the data could refute (e.g. too many classes)
        raise _fail(exc, 2, debug) from None
    except Exception as exc:  # a failed run: one line, not a traceback
        raise _fail(exc, 1, debug, "the run failed: ") from None
    typer.echo(text)
    typer.echo(f"results: {out_dir}")


@cli.command()
def sweep(
    config: Annotated[Path, typer.Argument(help="TOML experiment config")],
    out: Annotated[
        Path,
        typer.Option(help="the sweep's folder: OUT/<point>/seed<k>/ per run, the tables, plots"),
    ],
    grid: Annotated[
        list[str] | None,
        typer.Option(
            "--grid",
            help="a key and its values: --grid strategy.name=fedavg,bgmd (repeatable: the "
            "product of all)",
        ),
    ] = None,
    seeds: Annotated[str, typer.Option(help="seeds: 0-2 or 0,3,5")] = "0",
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a key in every run (repeatable)"),
    ] = None,
    workers: Annotated[
        int, typer.Option(help="runs at a time (local: processes; --ray: 0 = no limit)")
    ] = 1,
    ray: Annotated[
        bool, typer.Option("--ray", help="run each run as a Ray task ($RAY_ADDRESS or local)")
    ] = False,
    force: Annotated[
        bool, typer.Option(help="start over in a folder that holds another or this sweep")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="no line per finished run on stderr")] = False,
    debug: Annotated[bool, typer.Option(help=_DEBUG_HELP)] = False,
) -> None:
    """Run CONFIG over a grid of overrides × seeds, each run into its own results folder.

    Each run is CONFIG with the --set overrides, the grid point's KEY=VALUEs and seed=K, in
    OUT/<point>/seed<K>/ (<point>: `strategy.name=bgmd+attack.fraction=0.2`; `base` without a
    grid). Writes OUT/sweep.csv (one row per run), OUT/sweep.md (mean ± std over seeds) and
    overlay plots. Every config is checked first: a bad key or value exits 2. Rerun the same
    command after an interruption: finished runs (OUT/sweep_done.jsonl) are skipped."""
    import importlib.util
    import io

    from fl.experiment.sweep import run_jobs
    from fl.experiment.sweep_grid import (
        Sweep,
        check_configs,
        claim,
        parse_grid,
        parse_seeds,
        run_point,
        write_sweep,
    )

    try:
        plan = Sweep(config, parse_grid(grid or []), parse_seeds(seeds), list(set_ or []))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if ray and importlib.util.find_spec("ray") is None:
        typer.echo("error: --ray needs Ray: pip install -e '.[simulation]'", err=True)
        raise typer.Exit(2)
    jobs = plan.jobs(out)
    try:
        check_configs(jobs)
        claim(out, plan, force)
    except ConfigError as exc:
        raise _fail(exc, 2, debug) from None
    if not quiet:
        typer.echo(f"sweep: {len(jobs)} runs ({len(plan.points())} grid points × "
                   f"{len(plan.seeds)} seeds) into {out}", err=True)  # fmt: skip
    try:
        rows = run_jobs(
            run_point,
            jobs,
            workers,
            ray=ray,
            done_dir=out,
            label=lambda j: str(j["name"]),
            stream=io.StringIO() if quiet else None,
        )
        text = write_sweep(out, rows, [k for k, _ in plan.grid])
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:
        raise _fail(exc, 1, debug, "the sweep failed (rerun to resume it): ") from None
    typer.echo(text)
    typer.echo(f"results: {out}")


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
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
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
    """Overlay several runs: accuracy against virtual time and against rounds.

    Entries that are not results folders (e.g. PNGs a glob matched) are skipped with a note."""
    from fl.experiment.plots import plot_runs

    for path in plot_runs(_results_folders(results, "rounds.csv"), out):
        typer.echo(str(path))


@cli.command()
def compare(
    results: Annotated[list[Path], typer.Argument(help="results folders")],
) -> None:
    """Print a table of the runs' summaries side by side.

    Entries that are not results folders of finished runs are skipped with a note."""
    from rich.console import Console
    from rich.table import Table

    table = Table("run", "strategy", "rounds", "final acc", "virtual time (s)", "wall (s)")
    runs = _results_folders(results, "summary.json")
    for d in runs:
        s = json.loads((d / "summary.json").read_text())
        table.add_row(
            s["name"],
            s["strategy"],
            str(s["rounds_completed"]),
            f"{s['final_accuracy']:.4f}",
            f"{s['virtual_time_s']:.1f}",
            f"{s['wall_time_s']:.1f}",
        )
    console = Console()
    if not console.is_terminal:  # a pipe or a file: the table at its natural width, uncut
        console = Console(width=10_000)
    console.print(table)


def default_run_name(config_name: str, overrides: Sequence[str]) -> str:
    """The config's name, plus what `--set` changed: ``fedavg+strategy.name=fedprox``, so runs
    of one config with different overrides neither share a folder nor a legend label. A
    ``name=`` override is the name itself; ``output_dir=`` changes where, not what."""
    parts = []
    for item in overrides:
        key, _, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if key == "name":
            config_name = value.strip("\"'")
        elif key != "output_dir":
            parts.append(f"{key}={value}")
    slug = "+".join([config_name, *parts])
    return re.sub(r"[^\w.=+,-]", "_", slug)


def _is_run_folder(path: Path) -> bool:
    return any((path / f).exists() for f in ("config.toml", "rounds.csv", "summary.json"))


def _claim(out_dir: Path, force: bool) -> None:
    """Refuse a folder that holds an earlier run, unless `force`: then remove that run's files
    (and only those) so nothing of it (a stale checkpoint, old rows) mixes with the new one."""
    if not _is_run_folder(out_dir):
        return
    if not force:
        typer.echo(
            f"error: {out_dir} already holds a run; use --force to overwrite it, --name to "
            f"give this run another name, or `fl-sim resume {out_dir}` to continue it",
            err=True,
        )
        raise typer.Exit(2)
    for name in RUN_FILES:
        (out_dir / name).unlink(missing_ok=True)
    for pattern in RUN_GLOBS:
        for path in out_dir.glob(pattern):
            if path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)


def _results_folders(paths: Sequence[Path], needs: str) -> list[Path]:
    """The entries of `paths` that hold `needs`; a note on stderr for each one skipped, and an
    error (exit 2) when none is left."""
    keep = []
    for path in paths:
        if (path / needs).is_file():
            keep.append(path)
        else:
            typer.echo(f"note: skipping {path} (not a results folder: no {needs})", err=True)
    if not keep:
        typer.echo("error: none of the paths is a results folder", err=True)
        raise typer.Exit(2)
    return keep


def _show(value: Any) -> str:
    import inspect

    if value is inspect.Parameter.empty:
        return "(required)"
    return "None" if value is None else repr(value)


@cli.command()
def strategies(
    name: Annotated[
        str | None, typer.Argument(help="one strategy: show its options in full")
    ] = None,
) -> None:
    """List every strategy a config's `strategy.name` may use, with its options."""
    from fl.experiment.reference import strategy_reference

    infos = strategy_reference()
    if name is not None:
        chosen = [i for i in infos if i.name == name]
        if not chosen:
            names = ", ".join(i.name for i in infos)
            typer.echo(f"error: strategy {name!r} is unknown; known strategies: {names}", err=True)
            raise typer.Exit(2)
        info = chosen[0]
        kind = "asynchronous" if info.async_ else "synchronous"
        typer.echo(f"{info.name}: {info.summary}\n  class {info.cls} ({kind})\n")
        typer.echo("strategy.options:")
        for opt in info.options:
            typer.echo(f"  {opt.name} : {opt.type} = {_show(opt.default)}")
            for line in textwrap.wrap(opt.doc, 92):
                typer.echo(f"      {line}")
        return
    width = max(len(i.name) for i in infos)
    for info in infos:
        kind = "async" if info.async_ else "sync "
        typer.echo(f"{info.name:<{width}}  {kind}  {info.summary}")
        opts = "options: " + ", ".join(o.name for o in info.options)
        for line in textwrap.wrap(opts, 98 - width - 9):
            typer.echo(f"{'':<{width}}         {line}")
    typer.echo("\n`fl-sim strategies NAME` shows one strategy's options with types and meaning.")


@cli.command()
def datasets() -> None:
    """List the datasets that work offline (and the downloading `hf:` loader)."""
    from fl.data.config import DATASET_INFO, PARTITIONS

    width = max(map(len, DATASET_INFO))
    for name, text in DATASET_INFO.items():
        typer.echo(f"{name:<{width}}  {text}")
    typer.echo(f"{'hf:NAME':<{width}}  any Hugging Face dataset (downloads: needs the internet)")
    typer.echo(f"\npartitions (data.partition): {', '.join(PARTITIONS)}")


@cli.command()
def config(
    path: Annotated[
        Path | None, typer.Argument(help="a config to show resolved (every key, its value)")
    ] = None,
    defaults: Annotated[
        bool, typer.Option(help="print every key at its default, with a comment on each")
    ] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override a key (repeatable)")
    ] = None,
    debug: Annotated[bool, typer.Option(help=_DEBUG_HELP)] = False,
) -> None:
    """Print a complete config: the defaults (`--defaults > my.toml` starts a new experiment),
    or a config file resolved with its defaults and `--set` overrides."""
    if defaults == (path is not None):
        typer.echo("error: give either a config file or --defaults", err=True)
        raise typer.Exit(2)
    if defaults:
        from fl.experiment.reference import default_config_toml

        typer.echo(default_config_toml(), nl=False)
        return
    from fl.experiment.config import load_config
    from fl.schema import to_dict, to_toml

    try:
        cfg = load_config(path, set_ or [])  # type: ignore[arg-type]
    except ConfigError as exc:
        raise _fail(exc, 2, debug) from None
    typer.echo(to_toml(to_dict(cfg)), nl=False)


@cli.command()
def watch(
    results: Annotated[Path, typer.Argument(help="results folder of a running run")],
    interval: Annotated[float, typer.Option(help="seconds between checks")] = 2.0,
    once: Annotated[bool, typer.Option(help="print the state once and exit")] = False,
) -> None:
    """Follow a run as it goes: a line per new round (virtual time, accuracy, ETA) until it ends.

    Exits 0 when the run finished, 1 if it failed or stopped, 2 if RESULTS is no results folder."""
    from fl.experiment.watch import watch_run

    try:
        code = watch_run(results, interval_s=interval, once=once)
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)


@cli.command()
def timeline(
    results: Annotated[Path, typer.Argument(help="results folder (with messages.csv)")],
    out: Annotated[
        Path | None, typer.Option(help="where to write the figures (default: RESULTS)")
    ] = None,
    html: Annotated[
        bool,
        typer.Option(
            help="also write an interactive HTML page (needs the viz extra: pip install plotly)"
        ),
    ] = False,
    aggregate_above: Annotated[
        int, typer.Option(help="above this many nodes, one row per tier or device group")
    ] = 200,
    debug: Annotated[bool, typer.Option(help=_DEBUG_HELP)] = False,
) -> None:
    """Draw the run in virtual time: each node's download / compute / upload, idle, offline,
    dropped and lost messages, round boundaries; staleness (asynchronous) or tiers (TiFL)."""
    from fl.experiment.timeline import render_timeline

    try:
        paths = render_timeline(results, out, html=html, aggregate_above=aggregate_above)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        raise _fail(exc, 2, debug) from None
    for path in paths:
        typer.echo(str(path))


@cli.command("stop-flower")
def stop_flower_cmd(
    home: Annotated[Path, typer.Argument(help="the FLWR_HOME the Flower session ran with")],
) -> None:
    """Stop everything a local Flower session started with this FLWR_HOME: SuperLink,
    SuperExec, ServerApp/simulation processes, SuperNodes and Ray (never this shell)."""
    from fl.flower.cleanup import stop_flower

    typer.echo(f"stopped {stop_flower(home)} process(es) started with FLWR_HOME={home}")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="fl-sim")


if __name__ == "__main__":  # pragma: no cover
    main()
