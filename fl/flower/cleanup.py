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
from pathlib import Path

from fl.flower.engines import stop_processes

_FLOWER_LIKE = re.compile(r"flwr|flower|ray|python", re.IGNORECASE)


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
    import subprocess

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
