"""How the virtual grid runs a push's ClientApps: one after another (`SequentialExecutor`, the
reference), trained together with torch.func (`BatchedExecutor`), on long-lived worker processes
(`ProcessExecutor`), on Ray actors across a cluster (`RayExecutor`, in `fl.executors.ray`:
imported only when asked for); `make_executor` picks one from a config ("auto": `choose_executor`).

Every executor returns, for each task, the reply the node's ClientApp returns for that message
and context: bit-identical to the sequential one (processes, ray) or to float tolerance (batched).
"""

from fl.executors.base import (
    EXECUTORS,
    ClientTask,
    Executor,
    SequentialExecutor,
    error_reply,
    run_client_app,
)
from fl.executors.batched import BatchedExecutor
from fl.executors.choice import choose_executor, estimated_client_seconds, make_executor
from fl.executors.processes import ProcessExecutor

__all__ = [
    "EXECUTORS",
    "BatchedExecutor",
    "ClientTask",
    "Executor",
    "ProcessExecutor",
    "SequentialExecutor",
    "choose_executor",
    "error_reply",
    "estimated_client_seconds",
    "make_executor",
    "run_client_app",
]
