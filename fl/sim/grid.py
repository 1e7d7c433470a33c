"""The virtual grid: a Flower `Grid` whose nodes are simulated devices on a virtual clock.

Any Flower strategy drives it exactly as it drives a real SuperLink: `get_node_ids`,
`push_messages`, `pull_messages` and `send_and_receive`. Each node runs a Flower `ClientApp`
in-process (eagerly, at push time, against exactly the content it was sent), and the grid
computes when its reply would arrive in virtual time from the node's `DeviceProfile`:
download + compute (work the client reports ÷ device speed, with seeded jitter) + upload,
or never, if the device goes offline or fails meanwhile. Lost replies surface as expired-TTL
errors, as on a real SuperLink. Messages carry virtual timestamps in `metadata.created_at`.

The private Flower internals this relies on (TaskIdentity, message ids, shared content) are all
reached through `fl.protocol.flower_internals`, which tests/test_conformance.py checks.
"""

from __future__ import annotations

import copy
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import (
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from fl.executors.base import ClientTask, Executor, SequentialExecutor
from fl.protocol import keys
from fl.protocol.flower_internals import (
    Run,
    copy_run,
    empty_run,
    make_message,
    reply_metadata,
    set_message_id,
    set_task_identity,
    unavailable_reply,
)
from fl.protocol.planned import PlannedWork
from fl.sim.devices import DeviceProfile
from fl.sim.fleet import as_population
from fl.sim.mailbox import Mailbox
from fl.sim.messages import copy_recorddict, payload_bytes, reported_work, shared_copy
from fl.sim.outcomes import (
    DEADLINE,
    LOST_OFFLINE,
    PENDING,
    REPLIED,
    Exchange,
    MessageOutcome,
)
from fl.sim.timing import ReplyTiming, time_reply

FIRST_NODE_ID = 1001  # node ids must differ from SUPERLINK_NODE_ID (1)


class VirtualGrid(Grid):
    """A Flower Grid of simulated devices, each running a ClientApp, on a virtual clock.

    Parameters
    ----------
    client_app:
        The Flower ClientApp every node runs (attacks wrap it per node via `client_app_for`).
    devices:
        One `DeviceProfile` per node; node i gets node id `FIRST_NODE_ID + i` and
        `node_config = {"partition-id": i, "num-partitions": N}`, as Flower's simulation does,
        plus the device's observable features as `device.<name>` (what a phone would report).
    run_config:
        Becomes every node's `context.run_config` (scalars only, as in Flower).
    seed:
        Seeds per-(node, message) jitter and failure draws, so outcomes do not depend on the
        order in which messages are executed.
    evaluation_cost:
        If False, evaluate messages take zero virtual time (an experiment that measures
        time-to-accuracy may mark evaluation free).
    fallback_flops_per_example:
        Cost per example for ClientApps that do not report `work-flops`.
    client_app_for:
        Optional per-node override of the ClientApp (e.g. a Byzantine wrapper).
    recent_honest:
        How many recent honest training replies an omniscient attacker may observe when it is
        pushed alone (asynchronous loops).
    executor:
        Runs the ClientApps of each push (default: one after another, in this process; see
        `fl.executors` for the batched and multi-process ones). Not saved in checkpoints.
    lazy:
        Defer the tasks of ClientApps that plan their work (`planned_work`, see
        `fl.protocol.planned`) until a reply is needed, then run every deferred task together:
        the same results as running them at push time (False), in batches of about the
        concurrency in asynchronous runs. Deferred tasks are part of checkpoints.
    """

    def __init__(
        self,
        client_app: Callable[[Message, Context], Message],
        devices: Sequence[DeviceProfile],
        *,
        run_config: dict[str, Any] | None = None,
        seed: int = 0,
        run_id: int = 1,
        evaluation_cost: bool = True,
        fallback_flops_per_example: float = 1e6,
        client_app_for: Callable[[int], Callable[[Message, Context], Message] | None] | None = None,
        recent_honest: int = 32,
        executor: Executor | None = None,
        lazy: bool = True,
    ) -> None:
        if not devices:
            raise ValueError("devices: a VirtualGrid needs at least one node")
        self._client_app = client_app
        self._client_app_for = client_app_for
        # A DevicePopulation (arrays; a DeviceProfile per contacted node) or a wrapped list.
        self.devices = as_population(devices)
        self.num_nodes = len(self.devices)
        self.seed = int(seed)
        self.evaluation_cost = evaluation_cost
        self.fallback_flops_per_example = float(fallback_flops_per_example)
        self._run_config = dict(run_config or {})
        self._run = empty_run(run_id)
        self._contexts: dict[int, Context] = {}
        self._node_msg_count = [0] * self.num_nodes
        self._seq = 0  # plain ints (not itertools.count): checkpoints pickle the grid
        self._ids = 0
        self.now = 0.0
        self.mailbox = Mailbox()
        self.exchanges: list[Exchange] = []
        self.client_wall_s = 0.0  # wall time spent inside ClientApps (for overhead reports)
        self._bytes_cache: tuple[RecordDict | None, int] = (None, 0)
        self._recent_honest: deque[tuple[Message, Message]] = deque(maxlen=recent_honest)
        self.executor: Executor = executor or SequentialExecutor()
        self.lazy = bool(lazy)
        self._deferred: list[_Deferred] = []  # planned tasks not run yet, in dispatch order
        self.deferred_batches: list[int] = []  # sizes of the deferred batches run (reports)
        self.activate()

    def __getstate__(self) -> dict[str, Any]:
        # Executors may hold worker processes: a checkpoint keeps the grid's state only, and
        # the resumed run attaches the executor its config names.
        state = self.__dict__.copy()
        state["executor"] = SequentialExecutor()
        return state

    # ----------------------------------------------------------------- identity
    def activate(self) -> None:
        """Set Flower's process-global TaskIdentity so strategies can build messages."""
        set_task_identity(self._run.run_id)

    def set_run(self, run: Run) -> None:
        """Operate in `run` from now on: new messages (and message ids) carry its run id.

        As Flower's grids: anything but a `Run` is a TypeError. Nodes' Contexts already
        created keep the run id they were created with.
        """
        if not isinstance(run, Run):
            raise TypeError(f"`run` must be an instance of Run, got {type(run).__name__}")
        self._run = copy_run(run)
        self.activate()

    @property
    def run(self) -> Run:
        """A copy of the run this grid operates in (as Flower's grids return)."""
        return copy_run(self._run)

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Build an instruction message (deprecated in Flower, kept for the ABC)."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    # ------------------------------------------------------------------- nodes
    def node_index(self, node_id: int) -> int:
        """Partition index of a node id (raises for ids this grid does not have)."""
        idx = int(node_id) - FIRST_NODE_ID
        if not 0 <= idx < self.num_nodes:
            raise KeyError(f"unknown node id {node_id}")
        return idx

    def node_id(self, index: int) -> int:
        """Node id of partition `index`."""
        return FIRST_NODE_ID + index

    def all_node_ids(self) -> list[int]:
        """Every node id, online or not."""
        return list(range(FIRST_NODE_ID, FIRST_NODE_ID + self.num_nodes))

    def get_node_ids(self) -> list[int]:
        """Ids of the nodes online at the current virtual time (offline ones get no work).

        One vectorised availability query over the population (no per-device Python loop)."""
        return self.devices.online_ids(self.now, FIRST_NODE_ID)

    def context(self, node_id: int) -> Context:
        """The node's persistent Context (created on first use: 10 000 nodes stay cheap)."""
        ctx = self._contexts.get(node_id)
        if ctx is None:
            idx = self.node_index(node_id)
            ctx = Context(
                run_id=self._run.run_id,
                node_id=node_id,
                node_config={
                    keys.PARTITION_ID: idx,
                    keys.NUM_PARTITIONS: self.num_nodes,
                    **{f"device.{k}": v for k, v in self.devices.feature_dict(idx).items()},
                },
                state=RecordDict(),
                run_config=dict(self._run_config),
            )
            self._contexts[node_id] = ctx
        return ctx

    # -------------------------------------------------------------------- clock
    def advance(self, seconds: float) -> None:
        """Move the clock forward (server work, waiting); the clock never goes backwards."""
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError(f"cannot advance the virtual clock by {seconds}")
        self.now += seconds

    def advance_to(self, t: float) -> None:
        """Move the clock to `t` if that is later than now."""
        if math.isfinite(t):
            self.now = max(self.now, t)

    def wait_for_nodes(self, k: int) -> bool:
        """Advance the clock until at least `k` nodes are online; False if that never happens.

        Flower's `sample_nodes` sleeps on the wall clock while too few nodes are connected;
        a server loop on this grid calls this first, so the wait passes in virtual time.
        """
        t = self.devices.next_time_online_count(self.now, k)
        if not math.isfinite(t):
            return False
        self.advance_to(t)
        return True

    def next_arrival(self) -> float:
        """Virtual time of the earliest reply still pending (inf if none)."""
        return self.mailbox.next_arrival()

    # ----------------------------------------------------------------- messages
    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Deliver instructions: run each node's ClientApp now and schedule its reply.

        The honest messages of one call go to the executor together (it may batch them or
        run them in parallel). Omniscient (Byzantine) apps run last, one at a time: before
        they run they `observe` the honest (instruction, reply) pairs of this batch — or, for
        one-at-a-time pushes as in asynchronous loops, the most recent honest training replies.
        """
        messages = list(messages)
        for msg in messages:  # refuse a bad push before any of it is dispatched
            if msg.metadata.message_type.split(".")[0] not in keys.DELIVERABLE_TYPES:
                raise ValueError(f"message_type {msg.metadata.message_type!r} is not deliverable")
            ttl = msg.metadata.ttl
            if not (isinstance(ttl, int | float) and ttl > 0):  # Flower's grids: ttl > 0
                raise ValueError(f"Invalid message: ttl = {ttl!r} must be > 0")
            self.node_index(int(msg.metadata.dst_node_id))
        ids: list[str] = [""] * len(messages)
        byzantine: list[int] = []
        direct: list[int] = []
        for pos, msg in enumerate(messages):
            app = self._app_for(int(msg.metadata.dst_node_id))
            (byzantine if getattr(app, "omniscient", False) else direct).append(pos)
        batch = [messages[p] for p in direct]
        for pos, mid in zip(direct, self._push_batch(batch, honest=True), strict=True):
            ids[pos] = mid
        if byzantine:
            self.run_deferred()  # an omniscient attacker sees the honest replies themselves
        honest = [pair for pos in direct if (pair := self._honest_pair(ids[pos])) is not None]
        for pos in byzantine:
            app = self._app_for(int(messages[pos].metadata.dst_node_id))
            app.observe(  # type: ignore[attr-defined]
                honest or list(self._recent_honest), num_byzantine=len(byzantine)
            )
            ids[pos] = self._push_batch([messages[pos]], honest=False)[0]
        return ids

    def _honest_pair(self, msg_id: str) -> tuple[Message, Message] | None:
        """(instruction, reply) of an honest training task that produced a model."""
        ins = self.mailbox.instructions.get(msg_id)
        return None if ins is None else _training_pair(ins, self.mailbox.replies.get(msg_id))

    def _app_for(self, node_id: int) -> Callable[[Message, Context], Message]:
        if self._client_app_for is not None:
            app = self._client_app_for(node_id)
            if app is not None:
                return app
        return self._client_app

    def _message_bytes(self, content: RecordDict) -> int:
        # Strategies send one shared RecordDict to all nodes: size it once (the cache holds the
        # object itself, so a new RecordDict can never be mistaken for a freed one).
        cached, size = self._bytes_cache
        if cached is not content:
            size = payload_bytes(content)
            self._bytes_cache = (content, size)
        return size

    def _new_id(self, prefix: str) -> str:
        """Deterministic message id (same run, same ids), unique within this grid."""
        self._ids += 1
        return f"{prefix}{self._run.run_id}-{self._ids}"

    def _push_batch(self, messages: list[Message], *, honest: bool) -> list[str]:
        """Dispatch `messages` (ids, outcomes, availability at send time), then either defer
        them (every online one planned its work: their replies are timed and scheduled now,
        the ClientApps run later) or run the ClientApps now through the executor — after any
        task deferred before, so each node's tasks run in the order they were pushed — and
        schedule each reply. `honest` replies are what an omniscient attacker may observe."""
        dispatched = [self._dispatch(msg) for msg in messages]
        runnable = [d for d in dispatched if d.online]
        plans = [self._plan(d) for d in runnable] if self.lazy else []
        if runnable and plans and all(p is not None for p in plans):
            memo: dict[int, tuple[RecordDict, RecordDict]] = {}  # one snapshot per content
            for d, plan in zip(runnable, plans, strict=True):
                assert plan is not None
                self._defer(d, plan, honest, memo)
        elif runnable:
            self.run_deferred()
            tasks = [self._task(d) for d in runnable]
            for d, reply in zip(runnable, self._execute(tasks), strict=True):
                self._settle(d, reply)
            if honest:
                for d in runnable:
                    pair = _training_pair(d.msg, self.mailbox.replies.get(d.outcome.message_id))
                    if pair is not None:
                        self._recent_honest.append(pair)
        return [d.outcome.message_id for d in dispatched]

    def _execute(self, tasks: list[ClientTask]) -> list[Message]:
        """Run `tasks` through the executor: one reply per task, in task order."""
        t0 = time.perf_counter()  # wall time of the simulation itself, beside virtual
        try:
            replies = self.executor.run(tasks)
        finally:
            self.client_wall_s += time.perf_counter() - t0
        if len(replies) != len(tasks):
            raise RuntimeError(
                f"executor {self.executor!r} returned {len(replies)} replies for {len(tasks)} tasks"
            )
        for reply in replies:
            if not isinstance(reply, Message):
                raise RuntimeError(f"executor {self.executor!r} returned {reply!r}")
        return replies

    def _plan(self, d: _Dispatch) -> PlannedWork | None:
        """The work the node's ClientApp declares for this message (None: run it now)."""
        planner = getattr(self._app_for(d.outcome.node_id), "planned_work", None)
        if planner is None:
            return None
        plan = planner(d.msg, self.context(d.outcome.node_id))
        return plan if isinstance(plan, PlannedWork) else None

    def _defer(
        self,
        d: _Dispatch,
        plan: PlannedWork,
        honest: bool,
        memo: dict[int, tuple[RecordDict, RecordDict]],
    ) -> None:
        """Time and schedule the reply `plan` describes; keep the task to run later (on a
        snapshot of the content: the strategy may reuse its records after the push)."""
        task = self._task(d, snapshot=memo)
        t = self._time(d, plan.up_bytes, plan.work_flops, is_error=False)
        self._deferred.append(_Deferred(task, d, plan, t.compute, honest, t.lost is not None))
        if t.lost is not None:
            self._lose(d.msg, d.outcome, t.lost[0], t.lost[1], d.reply_id)
        else:
            d.outcome.status = PENDING
            self.mailbox.schedule(d.outcome, _NOT_RUN, t.finish)

    @property
    def deferred(self) -> int:
        """How many tasks are deferred (planned, scheduled, not run yet)."""
        return len(self._deferred)

    def run_deferred(self) -> None:
        """Run every deferred task now, together, in dispatch order; check each reply against
        its plan and put it in the mailbox. A reply that differs from its plan (an error, other
        work or size) stops the run: its arrival time was wrong."""
        if not self._deferred:
            return
        batch, self._deferred = self._deferred, []
        self.deferred_batches.append(len(batch))
        replies = self._execute([x.task for x in batch])
        for x, reply in zip(batch, replies, strict=True):
            self._check_plan(x, reply)
            d = x.dispatch
            mid = d.outcome.message_id
            for rec in reply.content.values():
                if isinstance(rec, MetricRecord) and keys.COMPUTE_S in rec:
                    rec[keys.COMPUTE_S] = x.compute_s
            if x.lost:
                continue
            if x.honest and (pair := _training_pair(d.msg, reply)) is not None:
                self._recent_honest.append(pair)
            if self.mailbox.replies.get(mid) is _NOT_RUN:
                arrives = d.outcome.arrives_at
                set_message_id(reply, d.reply_id)
                reply.metadata.created_at = arrives
                reply.metadata.ttl = max(0.0, d.msg.metadata.ttl - (arrives - d.outcome.sent_at))
                self.mailbox.replies[mid] = reply

    def _check_plan(self, x: _Deferred, reply: Message) -> None:
        node = x.dispatch.outcome.node_id
        if reply.has_error():
            reason = (reply.error.reason or "").splitlines()[0]
            raise RuntimeError(
                f"node {node}: a deferred task failed after planning its work ({reason}); its "
                "reply was already scheduled. Run with lazy = false to see it as a client error"
            )
        work = reported_work(reply, self.fallback_flops_per_example)
        up = payload_bytes(reply.content)
        if work != x.plan.work_flops or up != x.plan.up_bytes:
            raise RuntimeError(
                f"node {node}: a deferred task reported {work} FLOPs and {up} bytes, but planned "
                f"{x.plan.work_flops} and {x.plan.up_bytes}: its ClientApp's planned_work is wrong"
            )

    def _task(
        self, d: _Dispatch, *, snapshot: dict[int, tuple[RecordDict, RecordDict]] | None = None
    ) -> ClientTask:
        """The ClientApp call for a dispatched message, on a private copy of its content — or
        on the shared content itself for apps that declare `reads_only` (they never modify
        the message they are given, so every node may read the same records). With a
        `snapshot` memo (a deferred task) such apps share one copy per content object."""
        app = self._app_for(d.outcome.node_id)
        content = d.msg.content
        reads_only = getattr(app, "reads_only", False)
        if not reads_only:
            content = copy_recorddict(content)
        elif snapshot is not None:
            content = shared_copy(content, snapshot)
        return ClientTask(
            message=make_message(metadata=copy.copy(d.msg.metadata), content=content),
            context=self.context(d.outcome.node_id),
            app=app,
        )

    def _dispatch(self, msg: Message) -> _Dispatch:
        node_id = int(msg.metadata.dst_node_id)
        idx = self.node_index(node_id)
        msg_id = self._new_id("m")
        reply_id = self._new_id("r")  # every message gets exactly one reply (or error)
        set_message_id(msg, msg_id)
        seq = self._seq
        self._seq += 1
        device = self.devices[idx]
        rng = np.random.default_rng((self.seed, idx, self._node_msg_count[idx]))
        self._node_msg_count[idx] += 1
        sent_at = self.now
        outcome = MessageOutcome(
            message_id=msg_id,
            node_id=node_id,
            message_type=msg.metadata.message_type,
            group_id=msg.metadata.group_id,
            sent_at=sent_at,
            arrives_at=math.inf,
            status=PENDING,
            seq=seq,
        )
        self.mailbox.record(outcome, msg)
        msg.metadata.created_at = sent_at  # the ClientApp sees virtual time too
        online = device.availability.online(sent_at)
        if not online:
            self._lose(msg, outcome, LOST_OFFLINE, "device offline at dispatch", reply_id)
        return _Dispatch(msg, outcome, rng, reply_id, online)

    def _time(self, d: _Dispatch, up: int, work: float, *, is_error: bool) -> ReplyTiming:
        """Time the reply of a dispatched message on its device (its outcome records it)."""
        msg, outcome = d.msg, d.outcome
        device = self.devices[self.node_index(outcome.node_id)]
        down = self._message_bytes(msg.content)
        is_eval = msg.metadata.message_type.startswith(keys.EVALUATE)
        t = time_reply(
            device,
            down,
            up,
            work,
            d.rng,
            sent_at=outcome.sent_at,
            ttl=float(msg.metadata.ttl),
            is_error=is_error,
            free=is_eval and not self.evaluation_cost,
            can_fail=not is_eval,
        )
        outcome.download_s, outcome.compute_s, outcome.upload_s = t.download, t.compute, t.upload
        outcome.down_bytes, outcome.up_bytes, outcome.work_flops = down, up, work
        msg.metadata.created_at = outcome.sent_at
        return t

    def _settle(self, d: _Dispatch, reply: Message) -> None:
        """Time the reply of a dispatched message on its device, then schedule or lose it."""
        msg, outcome = d.msg, d.outcome
        sent_at = outcome.sent_at
        if reply.has_error():
            outcome.error = reply.error.reason or ""
            t = self._time(d, 0, 0.0, is_error=True)
        else:
            work = reported_work(reply, self.fallback_flops_per_example)
            t = self._time(d, payload_bytes(reply.content), work, is_error=False)
            for rec in reply.content.values():
                if isinstance(rec, MetricRecord) and keys.COMPUTE_S in rec:
                    rec[keys.COMPUTE_S] = t.compute
        finish = t.finish
        if t.lost is not None:
            self._lose(msg, outcome, t.lost[0], t.lost[1], d.reply_id)
            return

        set_message_id(reply, d.reply_id)
        reply.metadata.created_at = finish
        reply.metadata.ttl = max(0.0, msg.metadata.ttl - (finish - sent_at))
        outcome.status = PENDING
        self.mailbox.schedule(outcome, reply, finish)

    def _lose(
        self, msg: Message, outcome: MessageOutcome, status: str, why: str, reply_id: str
    ) -> None:
        """The reply never comes: the server sees an expired-TTL error at sent + ttl."""
        expiry = outcome.sent_at + float(msg.metadata.ttl)
        outcome.status = status
        outcome.error = why
        err = make_message(
            metadata=reply_metadata(msg, created_at=expiry),
            error=Error(code=ErrorCode.REPLY_MESSAGE_UNAVAILABLE, reason=f"expired: {why}"),
        )
        set_message_id(err, reply_id)
        self.mailbox.schedule(outcome, err, expiry)

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        """Replies that have arrived by now, in arrival order.

        If none of the requested replies has arrived, the clock jumps to the earliest one
        among them, so a polling loop never waits on the wall clock. Ids already consumed or
        unknown get an error reply, as Flower's SuperLink answers them.
        """
        ids = list(message_ids)
        out: list[tuple[float, int, Message]] = []
        pending: list[MessageOutcome] = []
        for mid in ids:
            outcome = self.mailbox.outcomes.get(mid)
            if outcome is None or mid in self.mailbox.consumed:
                reply = unavailable_reply(mid, self._run.run_id, created_at=self.now)
                out.append((-1.0, -1, reply))
            else:
                pending.append(outcome)
        if pending and not out and all(o.arrives_at > self.now for o in pending):
            self.advance_to(min(o.arrives_at for o in pending))
        if any(
            o.arrives_at <= self.now and self.mailbox.replies.get(o.message_id) is _NOT_RUN
            for o in pending
        ):
            self.run_deferred()
        for outcome in pending:
            if outcome.arrives_at <= self.now:
                out.append((outcome.arrives_at, outcome.seq, self.mailbox.deliver(outcome)))
        out.sort(key=lambda t: (t[0], t[1]))
        return [m for _, _, m in out]

    def drop(self, message_ids: Iterable[str]) -> None:
        """Forget replies the server no longer waits for (past its deadline)."""
        self.mailbox.drop(message_ids)

    @property
    def outcomes(self) -> dict[str, MessageOutcome]:
        """Every message's outcome so far, by message id (what messages.csv holds)."""
        return self.mailbox.outcomes

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        """Push, then advance the clock to the last reply or to the deadline (`timeout`
        virtual seconds); replies later than the deadline are dropped, as stragglers are on a
        real server.

        A `timeout` ≤ 0 behaves as on Flower's grids: the messages are pushed, no reply is
        pulled (an empty list), and the clock does not move.
        """
        messages = list(messages)
        started = self.now
        ids = self.push_messages(messages)
        outcomes = [self.outcomes[i] for i in ids]
        if timeout is not None and not timeout > 0:
            replies: list[Message] = []  # Flower's pull loop never runs: nothing is pulled
        else:
            deadline = started + timeout if timeout is not None else math.inf
            last = max((o.arrives_at for o in outcomes), default=started)
            self.advance_to(min(deadline, last))
            arrived = [o.message_id for o in outcomes if o.arrives_at <= self.now]
            replies = self.pull_messages(arrived)
        late = [o.message_id for o in outcomes if o.message_id not in self.mailbox.consumed]
        self.drop(late)
        kind = messages[0].metadata.message_type if messages else ""
        ex = Exchange(message_type=kind, started_at=started, ended_at=self.now)
        for o in outcomes:
            ex.sent.append(o.node_id)
            if o.status == REPLIED:
                ex.replied.append(o.node_id)
            elif o.status == DEADLINE:
                ex.dropped.append(o.node_id)  # it would have replied, but too late
            else:  # crashed, lost (offline, failed, TTL) or expired
                ex.failed[o.node_id] = o.error.splitlines()[0] if o.error else o.status
        self.exchanges.append(ex)
        return replies


class _NotRun:
    """The mailbox's reply of a deferred task until it runs (pickles as the one instance)."""

    def __reduce__(self) -> str:
        return "_NOT_RUN"

    def __repr__(self) -> str:
        return "<reply not computed yet>"


_NOT_RUN: Any = _NotRun()


def _training_pair(ins: Message, reply: Message | None) -> tuple[Message, Message] | None:
    """(instruction, reply) if `reply` is the model a training task sent back, else None."""
    if reply is None or reply is _NOT_RUN or reply.has_error():
        return None
    if not ins.metadata.message_type.startswith("train"):
        return None
    return ins, reply


@dataclass
class _Deferred:
    """A planned task whose reply is scheduled but whose ClientApp has not run yet."""

    task: ClientTask
    dispatch: _Dispatch
    plan: PlannedWork
    compute_s: float  # the virtual compute time its reply reports
    honest: bool  # an omniscient attacker may observe its reply
    lost: bool  # the time model loses its reply: it runs (node state) but is never delivered


@dataclass
class _Dispatch:
    """A message sent to a node, waiting for its ClientApp's reply to be timed."""

    msg: Message
    outcome: MessageOutcome
    rng: np.random.Generator  # this (node, message)'s draws: jitter, failure
    reply_id: str
    online: bool  # the device was online at dispatch (else the message is already lost)
