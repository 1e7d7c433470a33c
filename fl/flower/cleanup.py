"""Stop what a local Flower session left running (`fl-sim stop-flower FLWR_HOME`).

`flwr run . local` starts a SuperLink that outlives it, and the SuperLink starts
`flower-superexec`, `flwr-serverapp` / `flwr-simulation` and, for the Simulation Engine, Ray's
processes; a Deployment Engine tried by hand adds a SuperLink and SuperNodes started in the
background. Matching one command line (``pkill -f flower-superlink``) misses most of them. What
they all share is the `FLWR_HOME` they were started with: in their command line (the local
SuperLink's database lives there) or in their environment (inherited from the shell that
exported it). This module stops every Flower, Ray or Python process that has it, with all of
their descendants, and never the calling process or its ancestors (the user's shell).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from contextlib import suppress
from pathlib import Path

_FLOWER_LIKE = re.compile(r"flwr|flower|ray|python", re.IGNORECASE)


def stop_processes(match: str, pids: set[int] | None = None) -> int:
    """Terminate (then kill) every process whose command line contains `match` (or whose pid
    is in `pids`), and their descendants; returns how many matched. Uses `ps` (Linux, macOS)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True, text=True)
    table = []
    for line in out.stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
            table.append((int(parts[0]), int(parts[1]), parts[2]))
    roots = {
        pid for pid, _, cmd in table if (match in cmd or pid in (pids or ())) and pid != os.getpid()
    }
    doomed, frontier = set(roots), set(roots)
    while frontier:  # descendants
        frontier = {pid for pid, ppid, _ in table if ppid in frontier and pid not in doomed}
        doomed |= frontier
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = set()
        for pid in doomed:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                alive.add(pid)
        deadline = time.monotonic() + 10
        while alive and time.monotonic() < deadline:
            alive = {pid for pid in alive if _running(pid)}
            time.sleep(0.1)
        doomed = alive
        if not doomed:
            break
    return len(roots)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child (else it stays a zombie)
    return os.path.exists(f"/proc/{pid}") if os.path.isdir("/proc") else True


def stop_processes_tree(pid: int) -> None:
    """Stop `pid` and its descendants (SIGTERM, then SIGKILL after 10 s)."""
    stop_processes(f"\x00pid:{pid}", pids={pid})


def _environ_home(pid: int) -> str | None:
    """The FLWR_HOME in a process's initial environment (Linux /proc; None elsewhere)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for item in raw.split(b"\0"):
        if item.startswith(b"FLWR_HOME="):
            return item[len(b"FLWR_HOME=") :].decode(errors="replace")
    return None


def _ancestors() -> set[int]:
    """This process and its ancestors (from /proc; just this process elsewhere)."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the command name
    return out


def flower_processes(home: str | Path) -> set[int]:
    """Pids of the Flower/Ray/Python processes started with FLWR_HOME = `home`."""
    home = str(Path(home).resolve())
    table = subprocess.run(
        ["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True
    ).stdout.splitlines()
    spared = _ancestors()
    out = set()
    for line in table:
        pid_text, _, cmd = line.strip().partition(" ")
        if not pid_text.isdigit() or int(pid_text) in spared or not _FLOWER_LIKE.search(cmd):
            continue
        pid = int(pid_text)
        env_home = _environ_home(pid)
        if home in cmd or (env_home is not None and str(Path(env_home).resolve()) == home):
            out.add(pid)
    return out


def stop_flower(home: str | Path) -> int:
    """Stop every process `flower_processes(home)` finds, and their descendants (SIGTERM, then
    SIGKILL after 10 s); return how many were found."""
    pids = flower_processes(home)
    if not pids:
        return 0
    return stop_processes("\x00no command line matches this\x00", pids=pids)
