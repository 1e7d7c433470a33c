"""Launch an experiment on Flower's own engines with `flwr run` (Simulation Engine on Ray).

`run_on_flower(cfg)` runs the same `ExperimentConfig` that `fl-sim run` runs on the virtual grid,
through `flwr run <repo> local --federation-config "num-supernodes=N ..."`, and returns the
results folder the Flower ServerApp (`fl.flower.app`) wrote. What it takes care of (pitfalls
measured with flwr 1.41 and 1.42):

- a private `FLWR_HOME` (connection config, app installs, the local SuperLink's database), so
  nothing is read from or written to `~/.flwr`;
- free ports for the local SuperLink (`FLWR_LOCAL_SUPERLINK_HTTP_API_PORT`,
  `FLWR_LOCAL_CONTROL_API_PORT`): the defaults are shared by every user of the machine;
- `FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`: otherwise `flwr run` resolves the app's
  dependencies with uv at run time (which pulled a multi-GB CUDA torch);
- `flwr run` leaves the SuperLink it started running, and Ray actors orphaned: everything
  started with the private `FLWR_HOME` is stopped afterwards (`fl.flower.cleanup`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fl.experiment.config import ExperimentConfig
from fl.experiment.run import FAILURE_FILE
from fl.flower.cleanup import stop_flower, stop_processes_tree
from fl.schema import toml_value

APP_DIR = Path(__file__).resolve().parents[2]
"""The Flower App: the repository root (its pyproject.toml has the [tool.flwr.app] sections)."""


class FlowerRunError(RuntimeError):
    """`flwr run` failed; the message carries the end of its output."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flower_env(home: Path, http_port: int, control_port: int) -> dict[str, str]:
    """Environment for `flwr` commands: private home, own ports, no runtime installs, and the
    interpreter's bin directory first on PATH (`flwr run` starts `flower-superlink` by name)."""
    env = dict(os.environ)
    env.update(
        {
            "FLWR_HOME": str(home),
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http_port),
            "FLWR_LOCAL_CONTROL_API_PORT": str(control_port),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        }
    )
    return env


def run_config_toml(run_config: Mapping[str, Any]) -> str:
    """A flat run_config as a TOML file `flwr run --run-config FILE` accepts."""
    return "".join(f"{toml_value(k)} = {toml_value(v)}\n" for k, v in run_config.items())


@contextmanager
def local_flower_home(home: Path | None = None) -> Iterator[tuple[Path, dict[str, str]]]:
    """A FLWR_HOME whose default connection is a local simulation SuperLink on free ports;
    the SuperLink `flwr run` starts there is stopped on exit."""
    tmp = None
    if home is None:
        tmp = tempfile.mkdtemp(prefix="fl-flwr-home-")
        home = Path(tmp)
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n'
    )
    http_port, control_port = free_port(), free_port()
    try:
        yield home, flower_env(home, http_port, control_port)
    finally:
        # Everything `flwr run` started has this (unique) FLWR_HOME: the SuperLink keeps its
        # database and log here, and its children, Ray's actors included, inherit the variable.
        stop_flower(home)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def local_deployment(
    num_nodes: int, home: Path | None = None, startup_s: float = 3.0
) -> Iterator[tuple[str, dict[str, str]]]:
    """A Deployment Engine on this machine, insecure (for trying it out): one
    `flower-superlink` and `num_nodes` `flower-supernode` processes with partition ids
    0..N-1, on free ports. Yields (connection name, env) for `flwr run . <name>`; every
    process is stopped on exit."""
    tmp = None
    if home is None:
        tmp = tempfile.mkdtemp(prefix="fl-flwr-deploy-")
        home = Path(tmp)
    home.mkdir(parents=True, exist_ok=True)
    # flwr 1.41 serves the SuperLink's Runtime, Control and Fleet HTTP APIs on one port.
    port = free_port()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "deployment"\n\n[superlink.deployment]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    env = flower_env(home, free_port(), free_port())
    bindir = Path(sys.executable).parent
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        link_log = open(home / "superlink.log", "wb")  # noqa: SIM115 (closed below)
        logs.append(link_log)
        procs.append(
            subprocess.Popen(
                [str(bindir / "flower-superlink"), "--insecure",
                 "--host", "127.0.0.1", "--port", str(port),
                 "--database", str(home / "state.db"),
                 "--disable-runtime-dependency-installation"],
                env=env, stdout=link_log, stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        for i in range(num_nodes):
            node_log = open(home / f"supernode-{i}.log", "wb")  # noqa: SIM115
            logs.append(node_log)
            procs.append(
                subprocess.Popen(
                    [str(bindir / "flower-supernode"), "--insecure",
                     "--superlink", f"127.0.0.1:{port}",
                     "--node-config", f"partition-id={i} num-partitions={num_nodes}",
                     "--host", "127.0.0.1", "--port", str(free_port())],
                    env=env, stdout=node_log, stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
        _wait_healthy(port, procs, startup_s, home)
        yield "deployment", env
    finally:
        for p in procs:
            if p.poll() is None:  # a process that already exited may have a reused pid
                stop_processes_tree(p.pid)
        for f in logs:
            f.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _wait_healthy(
    port: int, procs: list[subprocess.Popen[bytes]], timeout_s: float, home: Path
) -> None:
    """Wait until the SuperLink answers on `port` (its /health endpoint) and no process died."""
    import urllib.request

    deadline = time.monotonic() + max(timeout_s, 30.0)
    while True:
        dead = [p.args for p in procs if p.poll() is not None]
        if dead:
            raise FlowerRunError(f"Flower processes exited at start: {dead}; logs in {home}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise FlowerRunError(f"the SuperLink did not answer on port {port}; logs in {home}")
        time.sleep(0.5)


def run_on_flower(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    *,
    cpus_per_client: float = 1.0,
    timeout_s: float = 3600.0,
    verbose: bool = False,
    home: Path | None = None,
) -> Path:
    """Run `cfg` on Flower's Simulation Engine (Ray) with `cfg.num_nodes` SuperNodes; return
    the results folder (`out_dir`, written by the ServerApp). `home`: the FLWR_HOME to use
    (default: a temporary one, removed afterwards)."""
    federation = f"num-supernodes={cfg.num_nodes} client-resources-num-cpus={cpus_per_client:g}"
    with local_flower_home(home) as (_, env):
        return flwr_run(
            cfg, out_dir, "local", env, ["--federation-config", federation], timeout_s, verbose
        )


def flwr_run(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    connection: str,
    env: Mapping[str, str],
    extra: list[str] | None = None,
    timeout_s: float = 3600.0,
    verbose: bool = False,
) -> Path:
    """`flwr run <repo> <connection> --stream --run-config <cfg>`; returns the results folder
    the ServerApp wrote (`out_dir`), or raises FlowerRunError with the end of the output."""
    out_dir = Path(out_dir).resolve()
    run_config = cfg.replace(
        output_dir=str(out_dir.parent), name=out_dir.name
    ).to_flower_run_config()
    # `flwr run --stream` exits 0 even when the ServerApp fails: the summary the ServerApp
    # writes last is the success signal, so an older one must not be mistaken for it.
    (out_dir / "summary.json").unlink(missing_ok=True)
    (out_dir / FAILURE_FILE).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="fl-run-config-") as tmp:
        rc = Path(tmp) / "run_config.toml"
        rc.write_text(run_config_toml(run_config), encoding="utf-8")
        cmd = [str(Path(sys.executable).parent / "flwr"), "run", str(APP_DIR), connection,
               "--stream", *(extra or []), "--run-config", str(rc)]  # fmt: skip
        try:
            proc = subprocess.run(
                cmd, env=dict(env), capture_output=not verbose, text=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired as exc:
            raise FlowerRunError(f"flwr run did not finish within {timeout_s} s") from exc
    output = (proc.stdout or "") + (proc.stderr or "")
    if (out_dir / FAILURE_FILE).is_file():  # the ServerApp ran, and nothing was learnt
        raise FlowerRunError((out_dir / FAILURE_FILE).read_text().strip())
    if proc.returncode != 0 or not (out_dir / "summary.json").is_file():
        tail = "\n".join(output.strip().splitlines()[-30:])
        raise FlowerRunError(
            f"flwr run exited with {proc.returncode} and wrote no results in {out_dir}:\n{tail}"
        )
    return out_dir
