"""The Flower ClientApp every simulated (or real) node runs: local training and evaluation.

The node finds its data from `context.node_config["partition-id"]` and the experiment from
`context.run_config` (the flat form of `ExperimentConfig`), exactly as a ClientApp on Flower's
own engines does. Per-request hyper-parameters in the message's config (`lr`,
`local-epochs`, `local-steps`, `batch-size`, `proximal-mu`, ...) override the config's
`[train]` section, so a strategy can tune them per node (FedProx's mu, I-Prof's batch size).

Replies carry `num-examples` (the node's training-set size, FedAvg's weight), the training
loss, `examples-processed` and `work-flops` (examples × training FLOPs per example), which the
virtual grid divides by the device's speed to get compute time.
"""

from __future__ import annotations

from typing import Any

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fl.client.plan import planned_work
from fl.client.training import evaluate
from fl.client.workspace import _partition, finish_train, prepare_train, workspace
from fl.protocol import keys
from fl.protocol.planned import PlannedWork


class _ProjectClientApp(ClientApp):
    """This module's ClientApp. It pickles as a reference to `app` (checkpoints, worker
    processes), so a restored grid still runs — and the executors still recognise — `app`.
    It only reads the messages it is given (`reads_only`): the virtual grid may hand every
    node the same content instead of a private copy. It plans its training tasks
    (`planned_work`), so the virtual grid may defer them and run them in batches."""

    reads_only = True

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _project_app, ()

    def planned_work(self, message: Message, context: Context) -> PlannedWork | None:
        """What a train task will report (work, reply bytes) before it runs, so the virtual
        grid may defer it (`fl.protocol.planned`); None for anything it must run now."""
        return planned_work(message, context)


def _project_app() -> ClientApp:
    return app


app = _ProjectClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Load the sent model, train on this node's partition, reply with the new model."""
    return finish_train(msg, prepare_train(msg, context))


@app.query()
def device_features(msg: Message, context: Context) -> Message:
    """Reply with what this device says about itself (`device.<name>` entries of its node
    config): the features a profiler such as I-Prof predicts speed from."""
    feats: dict[str, int | float | list[int] | list[float]] = {
        k: float(v)
        for k, v in context.node_config.items()
        if k.startswith("device.") and isinstance(v, int | float) and not isinstance(v, bool)
    }
    return Message(content=RecordDict({"features": MetricRecord(feats)}), reply_to=msg)


@app.evaluate()
def evaluate_local(msg: Message, context: Context) -> Message:
    """Evaluate the sent model on this node's local test split (train split if it has none)."""
    ws = workspace(context.run_config)
    pid = _partition(context, ws)
    x_tr, y_tr, x_te, y_te = ws.data.node(pid)
    if len(y_te) == 0:
        x_te, y_te = x_tr, y_tr
    ws.model.load_state_dict(ws.decode(next(iter(msg.content.array_records.values()))))
    loss, acc = evaluate(ws.model, x_te, y_te)
    metrics = MetricRecord(
        {
            keys.EVAL_LOSS: loss,
            keys.EVAL_ACC: acc,
            keys.NUM_EXAMPLES: len(y_te),
            keys.WORK_FLOPS: len(y_te) * ws.eval_flops,
        }
    )
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
