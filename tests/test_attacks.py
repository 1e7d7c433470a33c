"""Byzantine attacks: exact update formulas, seeded noise, data poisoning, message plumbing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.supercore.task_identity import TaskIdentity
from scipy.stats import norm

from fl.client.poisoning import IMPULSE_AMOUNT
from fl.sim.attacks import (
    ATTACKS,
    AttackConfig,
    ByzantineClientApp,
    corrupt_data,
    data_attack_from_config,
    is_data_attack,
    is_omniscient,
    malicious_nodes,
)

NUM_NODES = 10
SHAPE_W = (6, 5)


@pytest.fixture(autouse=True)
def task_identity() -> None:
    """Flower needs a task identity to build instruction messages."""
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = 1
    TaskIdentity.task_id = 1


def node_offset(pid: int, size: int) -> np.ndarray:
    """The update honest node `pid` makes: distinct per node, with spread across nodes."""
    return np.random.default_rng(100 + pid).normal(0.05 * pid, 0.1, size)


def make_app(size_w: int = 30, seen: list[ConfigRecord] | None = None) -> ClientApp:
    """Honest fake: w += offset(pid) (float32), b += 0.1·pid (float64), steps += 1 (int64)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        if seen is not None:
            seen.append(msg.content["config"])
        arrays = msg.content["arrays"]
        w = arrays["w"].numpy()
        w = (w + node_offset(pid, w.size).reshape(w.shape)).astype(np.float32)
        b = arrays["b"].numpy() + 0.1 * (pid + 1)
        steps = arrays["steps"].numpy() + 1
        rec = ArrayRecord({"w": Array(w), "b": Array(b), "steps": Array(steps)})
        metrics = MetricRecord({"num-examples": 10 + pid, "train_loss": 0.5, "work-flops": 1e6})
        return Message(RecordDict({"arrays": rec, "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        metrics = MetricRecord({"eval_loss": 1.0, "num-examples": 3})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


def global_model(size_w: int = 30) -> ArrayRecord:
    """The global model the server sends (float32 weights, float64 bias, int64 counter)."""
    rng = np.random.default_rng(0)
    shape = SHAPE_W if size_w == 30 else (size_w,)
    return ArrayRecord(
        {
            "w": Array(rng.normal(0, 1, shape).astype(np.float32)),
            "b": Array(np.array([1.0, -2.0, 0.5])),
            "steps": Array(np.array([7], dtype=np.int64)),
        }
    )


def instruction(pid: int, server_round: int = 1, kind: str = "train", size_w: int = 30) -> Message:
    """A train/evaluate instruction for node `pid`, with a message id as the grid sets it."""
    content = RecordDict(
        {
            "arrays": global_model(size_w),
            "config": ConfigRecord({"server-round": server_round, "lr": 0.1}),
        }
    )
    msg = Message(content, dst_node_id=1001 + pid, message_type=kind)
    msg.metadata.__dict__["_message_id"] = f"m{pid}-{server_round}"
    return msg


def context(pid: int) -> Context:
    return Context(
        run_id=1,
        node_id=1001 + pid,
        node_config={"partition-id": pid, "num-partitions": NUM_NODES},
        state=RecordDict(),
        run_config={},
    )


def arrays_of(msg: Message) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in msg.content["arrays"].items()}


def delta64(reply: Message, ins: Message) -> np.ndarray:
    """The float32 weight update of a reply, in float64 (test-side, numpy only)."""
    w = reply.content["arrays"]["w"].numpy().astype(np.float64)
    g = ins.content["arrays"]["w"].numpy().astype(np.float64)
    return (w - g).reshape(-1)


def honest_round(
    n_honest: int = 8, server_round: int = 1, size_w: int = 30
) -> list[tuple[Message, Message]]:
    """(instruction, reply) pairs of honest nodes 0..n_honest-1 on the same global model."""
    app = make_app(size_w)
    pairs = []
    for pid in range(n_honest):
        ins = instruction(pid, server_round, size_w=size_w)
        pairs.append((ins, app(ins, context(pid))))
    return pairs


def attacked(
    cfg: AttackConfig,
    pid: int = 9,
    *,
    seed: int = 0,
    server_round: int = 1,
    observed: list[tuple[Message, Message]] | None = None,
    num_byzantine: int | None = None,
    size_w: int = 30,
) -> tuple[Message, Message, Message]:
    """(instruction, honest reply, malicious reply) of node `pid` under `cfg`."""
    honest_app = make_app(size_w)
    honest = honest_app(instruction(pid, server_round, size_w=size_w), context(pid))
    byz = ByzantineClientApp(make_app(size_w), cfg, pid, seed)
    if observed is not None:
        byz.observe(observed, num_byzantine=num_byzantine)
    ins = instruction(pid, server_round, size_w=size_w)
    return ins, honest, byz(ins, context(pid))


def malicious_w(reply: Message, ins: Message) -> np.ndarray:
    """The malicious update δ' = w' − g of the float32 weights, in float64."""
    return delta64(reply, ins)


# ----------------------------------------------------------------- update attacks
def test_sign_flip_sends_g_minus_scale_delta_and_preserves_keys_dtypes_metrics() -> None:
    ins, honest, reply = attacked(AttackConfig(kind="sign_flip", fraction=0.1))
    g = arrays_of(ins)
    h = arrays_of(honest)
    r = arrays_of(reply)
    assert list(r) == ["w", "b", "steps"]
    assert [r[k].dtype for k in r] == [np.float32, np.float64, np.int64]
    assert [r[k].shape for k in r] == [h[k].shape for k in h]
    expected_w = g["w"].astype(np.float64) - 5.0 * (h["w"].astype(np.float64) - g["w"])
    np.testing.assert_allclose(r["w"], expected_w.astype(np.float32), rtol=0, atol=1e-6)
    np.testing.assert_allclose(r["b"], g["b"] - 5.0 * (h["b"] - g["b"]), rtol=1e-12)
    np.testing.assert_array_equal(r["steps"], h["steps"])  # integer buffers untouched
    assert dict(reply.content["metrics"]) == dict(honest.content["metrics"])
    assert reply.metadata.reply_to_message_id == ins.metadata.message_id


def test_additive_noise_has_the_configured_std_and_is_seeded() -> None:
    cfg = AttackConfig(kind="additive", fraction=0.1, std=10.0)
    ins, honest, reply = attacked(cfg, size_w=20_000)
    noise = malicious_w(reply, ins) - delta64(honest, ins)
    assert abs(noise.std() - 10.0) < 0.2  # 20 000 draws: std error ≈ 0.05
    assert abs(noise.mean()) < 0.3
    again = attacked(cfg, size_w=20_000)[2]
    np.testing.assert_array_equal(arrays_of(again)["w"], arrays_of(reply)["w"])
    other_seed = attacked(cfg, seed=1, size_w=20_000)[2]
    other_round = attacked(cfg, server_round=2, size_w=20_000)[2]
    assert not np.array_equal(arrays_of(other_seed)["w"], arrays_of(reply)["w"])
    assert not np.array_equal(arrays_of(other_round)["w"], arrays_of(reply)["w"])


def test_gaussian_replaces_the_update_by_noise() -> None:
    cfg = AttackConfig(kind="gaussian", fraction=0.1, std=3.0)
    ins, honest, reply = attacked(cfg, size_w=20_000)
    mal = malicious_w(reply, ins)
    assert abs(mal.std() - 3.0) < 0.06
    assert abs(mal.mean()) < 0.1
    assert abs(np.corrcoef(mal, delta64(honest, ins))[0, 1]) < 0.05


def test_noise_does_not_depend_on_execution_order() -> None:
    cfg = AttackConfig(kind="additive", fraction=0.2)
    apps = {pid: ByzantineClientApp(make_app(), cfg, pid, seed=3) for pid in (2, 5)}
    ctxs = {pid: context(pid) for pid in (2, 5)}
    first = {pid: arrays_of(apps[pid](instruction(pid), ctxs[pid]))["w"] for pid in (2, 5)}
    apps = {pid: ByzantineClientApp(make_app(), cfg, pid, seed=3) for pid in (5, 2)}
    ctxs = {pid: context(pid) for pid in (5, 2)}
    second = {pid: arrays_of(apps[pid](instruction(pid), ctxs[pid]))["w"] for pid in (5, 2)}
    for pid in (2, 5):
        np.testing.assert_array_equal(first[pid], second[pid])
    # The same node's next task (same round, next call) draws fresh noise.
    again = arrays_of(apps[2](instruction(2), ctxs[2]))["w"]
    assert not np.array_equal(again, first[2])


# ------------------------------------------------------------- omniscient attacks
def honest_matrix(pairs: list[tuple[Message, Message]]) -> np.ndarray:
    return np.stack([delta64(rep, ins) for ins, rep in pairs])


def test_alie_is_mean_minus_z_sigma_with_baruch_z_for_n10_f2() -> None:
    pairs = honest_round(8)
    z = norm.ppf((10 - (math.floor(10 / 2 + 1) - 2)) / 10)  # s = 4, z = Φ⁻¹(0.6)
    assert z == pytest.approx(0.253347, abs=1e-6)
    d = honest_matrix(pairs)
    expected = d.mean(axis=0) - z * d.std(axis=0)
    cfg = AttackConfig(kind="alie", fraction=0.2)
    ins, _, reply = attacked(cfg, observed=pairs, num_byzantine=2)
    np.testing.assert_allclose(malicious_w(reply, ins), expected, atol=2e-7)
    # Without num_byzantine, f is estimated from the fraction: 8 honest at 20 % → f = 2.
    ins, _, reply2 = attacked(cfg, observed=pairs)
    np.testing.assert_array_equal(arrays_of(reply2)["w"], arrays_of(reply)["w"])
    # A configured z overrides the formula.
    ins, _, reply3 = attacked(AttackConfig(kind="alie", fraction=0.2, alie_z=1.5), observed=pairs)
    expected3 = d.mean(axis=0) - 1.5 * d.std(axis=0)
    np.testing.assert_allclose(malicious_w(reply3, ins), expected3, atol=2e-7)


def test_ipm_is_minus_epsilon_times_the_honest_mean() -> None:
    pairs = honest_round(8)
    d = honest_matrix(pairs)
    ins, _, reply = attacked(AttackConfig(kind="ipm", fraction=0.2), observed=pairs)
    np.testing.assert_allclose(malicious_w(reply, ins), -0.5 * d.mean(axis=0), atol=2e-7)
    b_updates = [
        rep.content["arrays"]["b"].numpy() - i.content["arrays"]["b"].numpy() for i, rep in pairs
    ]
    g_b = ins.content["arrays"]["b"].numpy()
    np.testing.assert_allclose(
        arrays_of(reply)["b"], g_b - 0.5 * np.mean(b_updates, axis=0), rtol=1e-12
    )


def full_updates(pairs: list[tuple[Message, Message]]) -> np.ndarray:
    """All floating-point arrays' updates (w then b), flattened: the attack's vector space."""
    rows = []
    for ins, rep in pairs:
        b = rep.content["arrays"]["b"].numpy() - ins.content["arrays"]["b"].numpy()
        rows.append(np.concatenate([delta64(rep, ins), b]))
    return np.stack(rows)


def closed_form_gamma(d: np.ndarray, p: np.ndarray) -> float:
    """The exact γ*: smallest positive root over i of ‖μ + γp − δ_i‖² = max_jk ‖δ_j − δ_k‖²."""
    mu = d.mean(axis=0)
    bound2 = max(np.sum((d[j] - d[k]) ** 2) for j in range(len(d)) for k in range(len(d)))
    c = p @ p
    roots = []
    for row in d:
        a, b = np.sum((mu - row) ** 2), p @ (mu - row)
        roots.append((-b + math.sqrt(b * b - c * (a - bound2))) / c)
    return min(roots)


@pytest.mark.parametrize("direction", ["std", "unit", "sign"])
def test_minmax_stays_within_the_honest_spread_with_maximal_gamma(direction: str) -> None:
    pairs = honest_round(8)
    d = full_updates(pairs)
    mu = d.mean(axis=0)
    p = {
        "std": -d.std(axis=0),
        "unit": -mu / np.linalg.norm(mu),
        "sign": -np.sign(mu),
    }[direction]
    cfg = AttackConfig(kind="minmax", fraction=0.2, minmax_direction=direction)
    ins, _, reply = attacked(cfg, observed=pairs)
    b = reply.content["arrays"]["b"].numpy() - ins.content["arrays"]["b"].numpy()
    m = np.concatenate([malicious_w(reply, ins), b])
    gamma = float((m - mu) @ p / (p @ p))
    np.testing.assert_allclose(m, mu + gamma * p, atol=1e-6)  # along p, from μ
    gamma_star = closed_form_gamma(d, p)
    assert gamma == pytest.approx(gamma_star, rel=1e-5)  # maximal within tolerance
    bound = max(np.linalg.norm(d[j] - d[k]) for j in range(8) for k in range(8))
    exact = mu + gamma_star * p  # the constraint at γ*, on the unrounded vector
    assert max(np.linalg.norm(exact - row) for row in d) == pytest.approx(bound, rel=1e-9)
    assert max(np.linalg.norm(m - row) for row in d) <= bound * (1 + 1e-5)
    beyond = mu + gamma_star * 1.001 * p
    assert max(np.linalg.norm(beyond - row) for row in d) > bound


def test_omniscient_falls_back_to_own_update_and_observation_is_used_once() -> None:
    pairs = honest_round(8)
    cfg = AttackConfig(kind="ipm", fraction=0.2, ipm_epsilon=2.0)
    byz = ByzantineClientApp(make_app(), cfg, 9, 0)
    assert byz.omniscient
    byz.observe(pairs)
    ctx = context(9)
    ins = instruction(9)
    first = malicious_w(byz(ins, ctx), ins)
    np.testing.assert_allclose(first, -2.0 * honest_matrix(pairs).mean(axis=0), atol=2e-7)
    ins2 = instruction(9, server_round=2)
    own = delta64(make_app()(instruction(9, 2), context(9)), ins2)
    second = malicious_w(byz(ins2, ctx), ins2)  # nothing observed this time
    np.testing.assert_allclose(second, -2.0 * own, atol=2e-7)
    # ALIE on its own update alone: σ = 0, so it sends its honest update.
    alie_app = ByzantineClientApp(make_app(), AttackConfig(kind="alie", fraction=0.2), 9, 0)
    ins3 = instruction(9)
    np.testing.assert_allclose(malicious_w(alie_app(ins3, context(9)), ins3), own, atol=1e-7)


# ----------------------------------------------------------- pass-through cases
def test_evaluate_messages_and_error_replies_pass_through() -> None:
    for kind in ("sign_flip", "alie", "label_flip"):
        byz = ByzantineClientApp(make_app(), AttackConfig(kind=kind, fraction=0.2), 3, 0)
        ev = instruction(3, kind="evaluate")
        reply = byz(ev, context(3))
        assert dict(reply.content["metrics"]) == {"eval_loss": 1.0, "num-examples": 3}
        assert dict(ev.content["config"]) == {"server-round": 1, "lr": 0.1}

    failing = ClientApp()

    @failing.train()
    def train(msg: Message, context: Context) -> Message:
        return Message(Error(code=7, reason="boom"), reply_to=msg)

    byz = ByzantineClientApp(failing, AttackConfig(kind="sign_flip", fraction=0.2), 3, 0)
    reply = byz(instruction(3), context(3))
    assert reply.has_error() and reply.error.reason == "boom"


def test_kind_none_is_the_honest_app() -> None:
    ins = instruction(4)
    honest = make_app()(instruction(4), context(4))
    reply = ByzantineClientApp(make_app(), AttackConfig(), 4, 0)(ins, context(4))
    for k, v in arrays_of(honest).items():
        np.testing.assert_array_equal(arrays_of(reply)[k], v)


# -------------------------------------------------------------------- data attacks
def test_data_attack_wrapper_passes_the_attack_in_the_config_only() -> None:
    seen: list[ConfigRecord] = []
    cfg = AttackConfig(kind="backdoor", fraction=0.3, target_label=4, trigger_value=0.75)
    byz = ByzantineClientApp(make_app(seen=seen), cfg, 2, 0)
    assert not byz.omniscient
    ins = instruction(2)
    reply = byz(ins, context(2))
    parsed = data_attack_from_config(seen[0])
    assert parsed is not None
    assert (parsed.kind, parsed.target_label, parsed.trigger_value) == ("backdoor", 4, 0.75)
    assert seen[0]["server-round"] == 1 and seen[0]["lr"] == 0.1  # original keys kept
    assert dict(ins.content["config"]) == {"server-round": 1, "lr": 0.1}  # caller's untouched
    honest = make_app()(instruction(2), context(2))
    for k, v in arrays_of(honest).items():
        np.testing.assert_array_equal(arrays_of(reply)[k], v)
    assert data_attack_from_config({"server-round": 1}) is None
    with pytest.raises(ValueError, match=r"attack\.kind = 'sign_flip'"):
        data_attack_from_config({"attack-data": "sign_flip"})


def test_label_flip_maps_y_to_c_minus_1_minus_y() -> None:
    x = torch.rand(6, 4)
    y = torch.tensor([0, 1, 2, 9, 5, 4])
    x2, y2 = corrupt_data(x, y, AttackConfig(kind="label_flip"), 10, seed=0)
    assert y2.tolist() == [9, 8, 7, 0, 4, 5]
    assert torch.equal(x2, x)
    tokens = torch.randint(0, 30, (5, 8))
    _, next_tok = corrupt_data(
        tokens, torch.tensor([0, 29, 3, 3, 1]), AttackConfig(kind="label_flip"), 30, 0
    )
    assert next_tok.tolist() == [29, 0, 26, 26, 28]


def test_backdoor_stamps_a_corner_patch_and_sets_the_target() -> None:
    cfg = AttackConfig(kind="backdoor", target_label=3, trigger_value=1.0)
    x = torch.rand(5, 2, 8, 8) * 0.5
    y = torch.arange(5)
    x2, y2 = corrupt_data(x, y, cfg, 10, seed=0)
    assert y2.tolist() == [3] * 5 and y2.dtype == y.dtype
    assert torch.all(x2[:, :, -3:, -3:] == 1.0)
    mask = torch.ones(8, 8, dtype=torch.bool)
    mask[-3:, -3:] = False
    assert torch.equal(x2[:, :, mask], x[:, :, mask])  # everything else untouched
    assert torch.all(x <= 0.5)  # input not modified in place
    flat, _ = corrupt_data(torch.zeros(4, 20), y[:4], cfg, 10, seed=0)
    assert torch.all(flat[:, -9:] == 1.0) and torch.all(flat[:, :-9] == 0.0)
    tok, _ = corrupt_data(torch.full((2, 6), 7), y[:2], cfg, 10, seed=0, vocab_size=40)
    assert tok.tolist() == [[7, 7, 7, 1, 1, 1]] * 2
    with pytest.raises(ValueError, match="target_label = 3"):
        corrupt_data(x, y, cfg, 3, seed=0)


def test_impulse_noise_is_salt_and_pepper_on_95_percent() -> None:
    cfg = AttackConfig(kind="feature_noise", noise="impulse")
    x = torch.full((40, 1, 16, 16), 0.5)
    y = torch.arange(40) % 10
    x2, y2 = corrupt_data(x, y, cfg, 10, seed=11)
    assert torch.equal(y2, y)
    changed = x2 != 0.5
    assert abs(changed.float().mean().item() - IMPULSE_AMOUNT) < 0.01  # 10 240 values
    assert set(torch.unique(x2[changed]).tolist()) == {0.0, 1.0}
    assert abs((x2[changed] == 1.0).float().mean().item() - 0.5) < 0.02
    same, _ = corrupt_data(x, y, cfg, 10, seed=11)
    other, _ = corrupt_data(x, y, cfg, 10, seed=12)
    assert torch.equal(same, x2) and not torch.equal(other, x2)


def test_additive_feature_noise_is_clipped_and_token_noise_replaces_tokens() -> None:
    cfg = AttackConfig(kind="feature_noise", noise="additive", std=10.0)
    x = torch.full((20, 1, 10, 10), 0.5)
    x2, _ = corrupt_data(x, torch.zeros(20, dtype=torch.long), cfg, 10, seed=1)
    assert x2.dtype == torch.float32
    assert float(x2.min()) == 0.0 and float(x2.max()) == 1.0
    # With std 10, P(|N(0, 100)| < 0.5) ≈ 4 %: almost every value saturates.
    assert ((x2 == 0) | (x2 == 1)).float().mean().item() > 0.9
    tokens = torch.full((50, 20), 3)
    t2, _ = corrupt_data(tokens, torch.zeros(50, dtype=torch.long), cfg, 40, seed=1)
    assert t2.dtype == torch.long and int(t2.min()) >= 0 and int(t2.max()) < 40
    assert abs((t2 != 3).float().mean().item() - IMPULSE_AMOUNT * 39 / 40) < 0.02


# ----------------------------------------------------------- selection and config
def test_malicious_nodes_exact_size_seeded_nested() -> None:
    cfg = AttackConfig(kind="sign_flip", fraction=0.2)
    a = malicious_nodes(cfg, 50, seed=7)
    assert len(a) == 10 and a == malicious_nodes(cfg, 50, seed=7)
    assert all(0 <= i < 50 for i in a)
    assert a != malicious_nodes(cfg, 50, seed=8)
    bigger = malicious_nodes(AttackConfig(kind="sign_flip", fraction=0.3), 50, seed=7)
    assert len(bigger) == 15 and a < bigger
    assert len(malicious_nodes(AttackConfig(kind="ipm", fraction=0.25), 10, 0)) == 3  # 2.5 → 3
    assert malicious_nodes(AttackConfig(kind="none", fraction=0.5), 10, 0) == frozenset()
    assert malicious_nodes(AttackConfig(kind="alie", fraction=0.0), 10, 0) == frozenset()


def test_attack_families() -> None:
    assert [k for k in ATTACKS if is_omniscient(AttackConfig(kind=k))] == ["alie", "ipm", "minmax"]
    data = [k for k in ATTACKS if is_data_attack(AttackConfig(kind=k))]
    assert data == ["label_flip", "feature_noise", "backdoor"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "bitflip"),
        ("fraction", 1.0),
        ("fraction", -0.1),
        ("fraction", float("nan")),
        ("scale", 0.0),
        ("std", -1.0),
        ("target_label", -1),
        ("trigger_value", float("inf")),
        ("noise", "blur"),
        ("alie_z", float("nan")),
        ("ipm_epsilon", 0.0),
        ("minmax_direction", "random"),
    ],
)
def test_validation_names_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ValueError) as err:
        AttackConfig(**{field: value})  # type: ignore[arg-type]
    assert f"attack.{field} = {value!r}" in str(err.value)
