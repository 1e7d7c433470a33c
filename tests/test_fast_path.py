"""The message fast path equals Flower's own path, byte for byte and bit for bit.

The fast path (`fl.protocol.records`: replies built from cached .npy headers without Flower's
per-item validation; `fl.protocol.stack`: a round's reply models decoded once into one stack
that the reply checks and the robust strategies read) must change nothing a run computes.
`records.plain_flower()` switches it off, so each check here compares the two in one process.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fl.protocol import keys, records, stack
from fl.protocol.replies import split_replies
from fl.sim.messages import copy_recorddict, payload_bytes, reported_work, shared_copy
from fl.strategies.aggregation import reply_matrix
from fl.strategies.flatten import flatten, layout_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def task_identity() -> None:
    """Flower needs a task identity to build instruction messages outside a grid."""
    from fl.protocol.flower_internals import set_task_identity

    set_task_identity(1)


SHAPES = [(), (0,), (1,), (5,), (64, 10), (3, 0, 2), (2, 3, 4), (1, 1, 1, 1, 1, 7)]
DTYPES = ["float32", "float64", "float16", "int64", "int32", "uint8", "bool", ">f4", "complex64"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_arrays_are_byte_identical_to_flowers(dtype: str) -> None:
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        a = np.asarray(rng.standard_normal(shape) * 3).astype(dtype)
        views = [a, a.T, a[::2] if a.ndim else a, np.asfortranarray(a)]
        for v in views:
            ours, flowers = records.array_from_numpy(v), Array.from_numpy_ndarray(v)
            assert ours.__dict__ == flowers.__dict__, (shape, dtype)
            assert type(ours.data) is bytes
            assert ours.object_id == flowers.object_id
            np.testing.assert_array_equal(ours.numpy(), v)


def test_records_equal_flowers() -> None:
    state = {"w": torch.randn(4, 3), "b": torch.randn(3), "n": torch.tensor(7)}
    fast, plain = records.state_record(state), ArrayRecord(state)
    assert fast.object_id == plain.object_id and list(fast) == list(plain)
    values: dict[str, Any] = {"loss": 0.5, "n": 3, "counts": [1, 2, 0]}
    assert records.metric_record(values).object_id == MetricRecord(values).object_id
    rd = records.record_dict({"arrays": fast, "metrics": records.metric_record(values)})
    ref = RecordDict({"arrays": plain, "metrics": MetricRecord(values)})
    assert rd.object_id == ref.object_id and list(rd) == list(ref)
    assert rd.array_records["arrays"] is fast  # Flower's views work on it
    assert records.state_bytes(state) == plain.count_bytes()
    copied = records.array_copy(fast["w"])
    assert copied.__dict__ == Array(dtype="float32", shape=(4, 3), stype=fast["w"].stype,
                                    data=fast["w"].data).__dict__  # fmt: skip
    assert copied.data is fast["w"].data


def _content() -> RecordDict:
    return RecordDict(
        {
            "arrays": ArrayRecord({"w": torch.randn(3, 2), "b": torch.zeros(2)}),
            "config": ConfigRecord({"lr": 0.1, "server-round": 2, "tags": [1, 2], "s": "x"}),
            "metrics": MetricRecord({"x": [1.0, 2.0], keys.NUM_EXAMPLES: 4}),
        }
    )


def test_copy_recorddict_equals_flowers_copy() -> None:
    content = _content()
    fast = copy_recorddict(content)
    with records.plain_flower():
        plain = copy_recorddict(content)
    assert fast.object_id == plain.object_id == content.object_id
    for key in content:
        assert type(fast[key]) is type(content[key]) and fast[key] is not content[key]
    assert fast["config"]["tags"] is not content["config"]["tags"]
    fast["config"]["lr"] = 9.0  # a node's change does not reach the original
    assert content["config"]["lr"] == 0.1
    assert payload_bytes(content) == sum(r.count_bytes() for r in content.array_records.values())
    memo: dict[int, tuple[RecordDict, RecordDict]] = {}
    one = shared_copy(content, memo)
    assert shared_copy(content, memo) is one and one is not content
    assert shared_copy(_content(), memo) is not one


def _reply(node: int, arrays: dict[str, Any] | None, n: Any = 10, **metrics: Any) -> Message:
    content = RecordDict({"metrics": MetricRecord({keys.NUM_EXAMPLES: n, **metrics})})
    if arrays is not None:
        content["arrays"] = ArrayRecord(
            {k: v if isinstance(v, Array) else Array(np.asarray(v)) for k, v in arrays.items()}
        )
    msg = Message(content, dst_node_id=node, message_type="train")
    reply = Message(content, reply_to=msg)
    reply.metadata.__dict__["_src_node_id"] = node
    return reply


def _replies(reference: ArrayRecord) -> list[Message]:
    rng = np.random.default_rng(1)
    ref = {k: a.numpy() for k, a in reference.items()}

    def model(**change: Any) -> dict[str, Any]:
        out: dict[str, Any] = {k: v + rng.standard_normal(v.shape).astype(v.dtype)
                               for k, v in ref.items()}  # fmt: skip
        out.update(change)
        return {k: v for k, v in out.items() if v is not None}

    nan_b = ref["b"].copy()
    nan_b[1] = np.nan
    inf_w = ref["w"].copy()
    inf_w[0, 0] = -np.inf
    bad_header = Array(dtype="float32", shape=(2,), stype="numpy.ndarray",
                       data=Array(np.zeros(2, np.float32)).data[:-3] + b"abc")  # fmt: skip
    fortran = Array(np.asfortranarray(rng.standard_normal((3, 2)).astype(np.float32)))
    return [
        _reply(1, model()),
        _reply(2, model(b=nan_b)),  # NaN in the second array
        _reply(3, model(w=inf_w, b=np.zeros(3, np.float32))),  # Inf, then a wrong shape
        _reply(4, model(b=None)),  # a missing array
        _reply(5, model(w=ref["w"].astype(np.float64))),  # wrong dtype
        _reply(6, model(), n=-1),
        _reply(7, model(), n=math.nan),
        _reply(8, model(b=bad_header)),  # a corrupted payload
        _reply(9, model(w=fortran)),  # a valid payload np.save writes in Fortran order
        _reply(10, model(), n=3),
        _reply(11, None),  # no model at all
        _reply(12, model(), n=5, **{keys.WORK_FLOPS: -2.0}),
        _reply(13, model(), n=7, extra=1.0),  # a different metric layout
        _reply(14, model(), n=2),
    ]


def test_split_replies_and_matrix_equal_the_plain_path() -> None:
    reference = ArrayRecord({"w": torch.randn(3, 2), "b": torch.randn(2)})
    replies = _replies(reference)
    with records.plain_flower():
        keep_ref, rejected_ref = split_replies(replies, reference)
    stack.clear()
    keep, rejected = split_replies(replies, reference)
    assert [r.metadata.src_node_id for r in keep] == [r.metadata.src_node_id for r in keep_ref]
    assert rejected == rejected_ref and list(rejected) == list(rejected_ref)
    assert rejected[2] == "array 'b' has NaN or Inf values"
    assert rejected[3] == "array 'w' has NaN or Inf values"
    assert stack.latest() is not None
    again, rejected_again = split_replies(keep, reference)  # a strategy's own check: cached
    assert again == keep and not rejected_again
    layout = layout_of(reference)
    for dtype in (torch.float32, torch.float64):
        plain = torch.stack([flatten(r.content["arrays"], layout, dtype) for r in keep])
        for subset in (keep, keep[::-1], keep[1:]):
            got = reply_matrix(subset, reference, layout, dtype)
            want = (
                plain
                if subset is keep
                else torch.stack([flatten(r.content["arrays"], layout, dtype) for r in subset])
            )
            assert got.dtype == dtype and torch.equal(got, want)
    # A record changed after it was stacked is read again, not from the stack.
    keep[0].content["arrays"]["b"] = Array(np.full(2, np.inf, np.float32))
    _, rejected = split_replies(keep, reference)
    assert rejected == {int(keep[0].metadata.src_node_id): "array 'b' has NaN or Inf values"}
    got = reply_matrix(keep, reference, layout)
    assert torch.equal(got, torch.stack([flatten(r.content["arrays"], layout) for r in keep]))


def test_reported_work_reads_metrics() -> None:
    reply = _reply(1, None, n=4, **{keys.WORK_FLOPS: 12.0})
    assert reported_work(reply, 100.0) == 12.0
    assert reported_work(_reply(1, None, n=4), 100.0) == 400.0


# ------------------------------------------------------------------- end to end, slow
def _run(config: str, overrides: list[str]) -> tuple[str, list[dict[str, Any]]]:
    from fl.client.workspace import clear_workspaces
    from fl.experiment import run_experiment
    from fl.experiment.config import load_config

    clear_workspaces()
    stack.clear()
    result = run_experiment(load_config(ROOT / config, overrides))
    h = hashlib.sha256()
    for name, arr in result.arrays.items():
        h.update(name.encode() + arr.data)
    rows = [{k: v for k, v in r.items() if "wall" not in k} for r in result.rows]
    return h.hexdigest(), rows


CONFIGS = {
    "quickstart": ("simulations/quickstart/fedavg.toml", ["rounds=3"]),
    "tifl": (
        "simulations/tifl/tifl.toml",
        ["rounds=6", "data.max_samples=15000", "evaluation.every=2"],
    ),
    "bgmd": (
        "simulations/bgmd/bgmd.toml",
        [
            "data.name=digits",
            "num_nodes=16",
            "strategy.clients_per_round=16",
            "data.max_samples=none",
            "rounds=3",
            "train.steps=8",
            "train.batch_size=16",
            "train.lr=0.1",
            "attack.kind=sign_flip",
            "attack.scale=5.0",
            "attack.fraction=0.2",
        ],
    ),
    "robust-batched": (
        "simulations/bgmd/bgmd.toml",
        [
            "data.name=digits",
            "model.name=mlp",
            "num_nodes=40",
            "strategy.clients_per_round=40",
            "strategy.name=robust",
            "strategy.options={aggregator = 'mean', weighted = true, weight_clip = inf}",
            "executor=batched",
            "data.max_samples=none",
            "rounds=3",
        ],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_fast_path_gives_the_plain_flower_results(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, overrides = CONFIGS[name]
    from_stack: list[bool] = []
    model_matrix = stack.model_matrix

    def counted(*args: Any, **kwargs: Any) -> Any:
        out = model_matrix(*args, **kwargs)
        from_stack.append(out is not None)
        return out

    monkeypatch.setattr(stack, "model_matrix", counted)
    fast = _run(config, overrides)
    if name in ("bgmd", "robust-batched"):  # the robust strategies read the round's stack
        assert from_stack and all(from_stack)
    with records.plain_flower():
        plain = _run(config, overrides)
    assert fast[0] == plain[0]  # the final model, byte for byte
    assert fast[1] == plain[1]  # every round's row (wall-clock columns aside)
