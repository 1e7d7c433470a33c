"""The project ClientApp's planned work: what a training task will report, before it runs.

`planned_work` answers for a `train` message the virtual grid may defer (see
`fl.protocol.planned`): the examples the task will process (a closed form of the batch schedule
of `fl.client.training`), times the model's training FLOPs per example, and the bytes of the
model it will send back. It answers None — run the task now — whenever the task could end
differently from that plan: a message the workspace refuses (wrong partition, a model that does
not match), a request it cannot parse, or a data attack (poisoned data may change the sample
count). The grid checks every deferred reply against its plan and stops the run on a difference.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord, Context, Message

from fl.client.poisoning import data_attack_from_config
from fl.client.training import LocalTraining
from fl.client.workspace import (
    Workspace,
    _partition,
    _request_config,
    local_training,
    workspace,
)
from fl.protocol import keys
from fl.protocol.planned import PlannedWork

# id(workspace) → (the workspace, {name: (dtype, shape)} of its model, bytes of its model)
_LAYOUTS: dict[int, tuple[Workspace, dict[str, tuple[str, tuple[int, ...]]], int]] = {}


def planned_examples(n: int, hp: LocalTraining) -> int:
    """Examples a task processes on `n` samples: what `batch_schedule` yields, summed."""
    if n <= 0:
        return 0
    bs = min(hp.batch_size, n)
    if hp.steps > 0:
        per_pass = -(-n // bs)  # batches per permutation; the last one may be short
        full, rest = divmod(hp.steps, per_pass)
        return full * n + min(rest * bs, n)
    return max(hp.epochs, 0) * n


def _layout(ws: Workspace) -> tuple[dict[str, tuple[str, tuple[int, ...]]], int]:
    """The model's arrays as a reply carries them (dtype, shape), and their bytes."""
    hit = _LAYOUTS.get(id(ws))
    if hit is None or hit[0] is not ws:
        record = ArrayRecord(ws.model.state_dict())
        layout = {k: (a.dtype, tuple(a.shape)) for k, a in record.items()}
        if len(_LAYOUTS) >= 8:
            _LAYOUTS.clear()
        hit = _LAYOUTS[id(ws)] = (ws, layout, int(record.count_bytes()))
    return hit[1], hit[2]


def planned_work(msg: Message, context: Context) -> PlannedWork | None:
    """What the project's ClientApp will report for `msg`, or None to run it at once."""
    if msg.metadata.message_type != keys.TRAIN or msg.has_error():
        return None
    try:
        ws = workspace(context.run_config)
        pid = _partition(context, ws)
        request = _request_config(msg)
        hp = local_training(ws.config, request)
    except Exception:  # the task will reply with this error: let it run now
        return None
    if data_attack_from_config(request or {}) is not None:
        return None
    record = next((r for r in msg.content.values() if isinstance(r, ArrayRecord)), None)
    layout, up_bytes = _layout(ws)
    if record is None or not _matches(record, layout):
        return None
    examples = planned_examples(len(ws.data.node_train[pid]), hp)
    return PlannedWork(work_flops=examples * ws.train_flops, up_bytes=up_bytes)


def _matches(record: Any, layout: dict[str, tuple[str, tuple[int, ...]]]) -> bool:
    """Whether the sent model has exactly the workspace model's arrays."""
    if not isinstance(record, ArrayRecord) or len(record) != len(layout):
        return False
    for name, array in record.items():
        want = layout.get(name)
        if want is None or (array.dtype, tuple(array.shape)) != want:
            return False
    return True
