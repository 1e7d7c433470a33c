"""Tests for fl.models: shapes, learning, deterministic init, FLOP/parameter counts, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fl.models import (
    MODELS,
    TRAIN_FLOPS_MULTIPLIER,
    ModelConfig,
    build_model,
    clear_flops_cache,
    forward_flops_per_example,
    num_parameters,
    rnn_forward_flops,
    train_flops_per_example,
)

DIGITS = (64,)
MNIST = (1, 28, 28)
TEXT = (80,)
VOCAB = 81

# (config, input_shape, num_classes, vocab_size) for every model on its intended data.
CASES = [
    pytest.param(ModelConfig(name="logreg"), DIGITS, 10, None, id="logreg-digits"),
    pytest.param(ModelConfig(name="logreg"), MNIST, 10, None, id="logreg-mnist"),
    pytest.param(ModelConfig(name="mlp"), DIGITS, 10, None, id="mlp-digits"),
    pytest.param(ModelConfig(name="mlp"), MNIST, 10, None, id="mlp-mnist"),
    pytest.param(ModelConfig(name="cnn"), DIGITS, 10, None, id="cnn-digits"),
    pytest.param(ModelConfig(name="cnn"), MNIST, 10, None, id="cnn-mnist"),
    pytest.param(ModelConfig(name="char_lstm"), TEXT, VOCAB, VOCAB, id="char_lstm-text"),
]


def _batch(
    shape: tuple[int, ...], num_classes: int, vocab: int | None, n: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    if vocab is not None:
        x = torch.randint(0, vocab, (n, *shape), generator=gen)
    else:
        x = torch.rand((n, *shape), generator=gen)
    y = torch.randint(0, num_classes, (n,), generator=gen)
    return x, y


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_models_constant() -> None:
    assert MODELS == ("logreg", "mlp", "cnn", "char_lstm")


@pytest.mark.parametrize(("cfg", "shape", "num_classes", "vocab"), CASES)
def test_forward_shape_and_one_sgd_step_reduces_loss(
    cfg: ModelConfig, shape: tuple[int, ...], num_classes: int, vocab: int | None
) -> None:
    model = build_model(cfg, shape, num_classes, vocab_size=vocab, seed=0)
    assert model.training
    x, y = _batch(shape, num_classes, vocab)
    logits = model(x)
    assert logits.shape == (8, num_classes)
    assert logits.dtype == torch.float32
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05 if cfg.name != "char_lstm" else 1.0)
    loss0 = loss_fn(logits, y)
    opt.zero_grad()
    loss0.backward()
    opt.step()
    with torch.no_grad():
        loss1 = loss_fn(model(x), y)
    assert loss1.item() < loss0.item()


@pytest.mark.parametrize(("cfg", "shape", "num_classes", "vocab"), CASES)
def test_seeded_init_is_deterministic_and_leaves_global_rng_alone(
    cfg: ModelConfig, shape: tuple[int, ...], num_classes: int, vocab: int | None
) -> None:
    torch.manual_seed(999)
    state = torch.get_rng_state()
    a = _params(build_model(cfg, shape, num_classes, vocab, seed=7))
    b = _params(build_model(cfg, shape, num_classes, vocab, seed=7))
    c = _params(build_model(cfg, shape, num_classes, vocab, seed=8))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))
    assert all(torch.isfinite(p).all() for p in a)


def test_init_follows_pytorch_default_scales() -> None:
    model = build_model(ModelConfig(name="mlp", hidden=(32,)), DIGITS, 10, seed=0)
    w = dict(model.named_parameters())["net.0.weight"]
    bound = 1 / 64**0.5
    assert w.abs().max() <= bound
    assert w.abs().max() > 0.9 * bound  # uniform, not collapsed
    lstm = build_model(ModelConfig(name="char_lstm"), TEXT, VOCAB, VOCAB, seed=0)
    params = dict(lstm.named_parameters())
    assert params["lstm.weight_hh_l1"].abs().max() <= 1 / 128**0.5
    assert 0.8 < params["embedding.weight"].std().item() < 1.2  # N(0, 1)


def test_cnn_accepts_flat_square_and_image_input_identically() -> None:
    flat = build_model(ModelConfig(name="cnn"), (64,), 10, seed=3)
    image = build_model(ModelConfig(name="cnn"), (1, 8, 8), 10, seed=3)
    x = torch.rand(4, 64)
    assert torch.equal(flat(x), image(x.reshape(4, 1, 8, 8)))
    assert torch.equal(flat(x), flat(x.reshape(4, 1, 8, 8)))  # either layout accepted
    # Non-square small images and odd sizes still work (ceil-mode pooling).
    odd = build_model(ModelConfig(name="cnn"), (3, 5, 9), 4, seed=0)
    assert odd(torch.rand(2, 3, 5, 9)).shape == (2, 4)


def test_linear_models_accept_float64_input() -> None:
    model = build_model(ModelConfig(name="mlp"), DIGITS, 10)
    assert model(torch.rand(3, 64, dtype=torch.float64)).dtype == torch.float32


def test_char_lstm_rejects_float_tokens() -> None:
    model = build_model(ModelConfig(name="char_lstm"), TEXT, VOCAB, VOCAB)
    with pytest.raises(TypeError, match="token ids"):
        model(torch.rand(2, 80))


# ---------------------------------------------------------------------------------------------
# Parameter counts (hand-computed)


def test_num_parameters_hand_counts() -> None:
    logreg = build_model(ModelConfig(name="logreg"), DIGITS, 10)
    assert num_parameters(logreg) == 64 * 10 + 10
    mlp = build_model(ModelConfig(name="mlp", hidden=(64,)), DIGITS, 10)
    assert num_parameters(mlp) == (64 * 64 + 64) + (64 * 10 + 10)
    cnn = build_model(ModelConfig(name="cnn"), DIGITS, 10)
    conv = (1 * 9 * 16 + 16) + (16 * 9 * 32 + 32)
    assert num_parameters(cnn) == conv + (32 * 2 * 2 * 10 + 10)
    cnn28 = build_model(ModelConfig(name="cnn"), MNIST, 10)
    assert num_parameters(cnn28) == conv + (32 * 7 * 7 * 10 + 10)
    lstm = build_model(ModelConfig(name="char_lstm"), TEXT, VOCAB, VOCAB)
    h, e = 128, 8
    layer0 = 4 * h * (e + h) + 2 * 4 * h
    layer1 = 4 * h * (h + h) + 2 * 4 * h
    assert num_parameters(lstm) == VOCAB * e + layer0 + layer1 + (h * VOCAB + VOCAB)
    assert num_parameters(lstm) == 213_849
    dict(lstm.named_parameters())["embedding.weight"].requires_grad_(False)
    assert num_parameters(lstm, trainable_only=True) == 213_849 - VOCAB * e


# ---------------------------------------------------------------------------------------------
# FLOPs. Convention: 2 FLOPs per multiply-accumulate of matmuls/convs; biases, activations,
# pooling and embedding look-ups are not counted.


def test_logreg_flops_hand_count() -> None:
    model = build_model(ModelConfig(name="logreg"), DIGITS, 10)
    assert forward_flops_per_example(model, DIGITS) == 2 * 64 * 10 == 1280
    mnist = build_model(ModelConfig(name="logreg"), MNIST, 10)
    assert forward_flops_per_example(mnist, MNIST) == 2 * 784 * 10


def test_mlp_flops_hand_count_and_scaling() -> None:
    model = build_model(ModelConfig(name="mlp", hidden=(64,)), DIGITS, 10)
    assert forward_flops_per_example(model, DIGITS) == 2 * (64 * 64 + 64 * 10) == 9472
    mnist = build_model(ModelConfig(name="mlp", hidden=(64,)), MNIST, 10)
    assert forward_flops_per_example(mnist, MNIST) == 2 * (784 * 64 + 64 * 10)
    deep = build_model(ModelConfig(name="mlp", hidden=(128, 32)), DIGITS, 10)
    assert forward_flops_per_example(deep, DIGITS) == 2 * (64 * 128 + 128 * 32 + 32 * 10)


def test_cnn_flops_hand_count_and_exceeds_mlp() -> None:
    def cnn_hand(h: int, w: int) -> int:
        conv1 = 16 * h * w * (2 * 1 * 9)
        h2, w2 = -(-h // 2), -(-w // 2)
        conv2 = 32 * h2 * w2 * (2 * 16 * 9)
        return conv1 + conv2 + 2 * (32 * -(-h2 // 2) * -(-w2 // 2)) * 10

    for shape, (h, w) in ((DIGITS, (8, 8)), (MNIST, (28, 28))):
        cnn = build_model(ModelConfig(name="cnn"), shape, 10)
        mlp = build_model(ModelConfig(name="mlp"), shape, 10)
        flops = forward_flops_per_example(cnn, shape)
        assert flops == cnn_hand(h, w)
        assert flops > forward_flops_per_example(mlp, shape)
    assert cnn_hand(8, 8) == 168_448
    assert cnn_hand(28, 28) == 2_063_488
    wide = build_model(ModelConfig(name="cnn", cnn_channels=(32, 64)), MNIST, 10)
    assert forward_flops_per_example(wide, MNIST) > cnn_hand(28, 28)


def test_flop_counter_misses_lstm_so_we_count_it_analytically() -> None:
    # Documents why fl.models.flops adds analytic RNN FLOPs: the stock counter sees none of
    # the LSTM's work. If a future torch counts it, our total must still be the hand count.
    lstm = nn.LSTM(8, 16, num_layers=2, batch_first=True)
    with FlopCounterMode(display=False) as counter:
        lstm(torch.zeros(1, 5, 8))
    assert counter.get_total_flops() < rnn_forward_flops(lstm, 5)
    assert rnn_forward_flops(lstm, 5) == 5 * (2 * 4 * 16 * (8 + 16) + 2 * 4 * 16 * (16 + 16))
    bi = nn.GRU(8, 16, num_layers=2, bidirectional=True)
    per_step = 2 * (2 * 3 * 16 * (8 + 16)) + 2 * (2 * 3 * 16 * (32 + 16))
    assert rnn_forward_flops(bi, 5) == 5 * per_step


def test_char_lstm_flops_hand_count() -> None:
    model = build_model(ModelConfig(name="char_lstm"), TEXT, VOCAB, VOCAB)
    t, e, h = 80, 8, 128
    # Per step: gates W_ih·x + W_hh·h for 4 gates, 2 FLOPs per MAC; then the output head.
    layer0 = 2 * 4 * h * (e + h)
    layer1 = 2 * 4 * h * (h + h)
    hand = t * (layer0 + layer1) + 2 * h * VOCAB
    assert hand == 32_133_376
    assert forward_flops_per_example(model, TEXT) == hand
    assert forward_flops_per_example(model, TEXT, torch.int64) == hand
    bigger = build_model(ModelConfig(name="char_lstm", lstm_hidden=256), TEXT, VOCAB, VOCAB)
    assert forward_flops_per_example(bigger, TEXT) > 3 * hand


@pytest.mark.parametrize(("cfg", "shape", "num_classes", "vocab"), CASES)
def test_train_flops_is_three_times_forward(
    cfg: ModelConfig, shape: tuple[int, ...], num_classes: int, vocab: int | None
) -> None:
    model = build_model(cfg, shape, num_classes, vocab)
    forward = forward_flops_per_example(model, shape)
    assert forward > 0
    assert TRAIN_FLOPS_MULTIPLIER == 3.0
    assert train_flops_per_example(model, shape) == 3 * forward


def test_flops_measurement_is_side_effect_free_and_cached() -> None:
    clear_flops_cache()
    model = build_model(ModelConfig(name="mlp", dropout=0.5), DIGITS, 10)
    model.train()
    before = _params(model)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    first = forward_flops_per_example(model, DIGITS)
    assert torch.equal(torch.get_rng_state(), state)  # dropout did not draw
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(p, q) for p, q in zip(before, _params(model), strict=True))
    # Same architecture, different weights and seed: served from the cache.
    other = build_model(ModelConfig(name="mlp", dropout=0.5), DIGITS, 10, seed=9)
    assert forward_flops_per_example(other, DIGITS) == first
    # Different input shape or architecture: measured separately.
    assert (
        forward_flops_per_example(
            build_model(ModelConfig(name="mlp", hidden=(65,)), DIGITS, 10), DIGITS
        )
        > first
    )


# ---------------------------------------------------------------------------------------------
# Errors name the field and the value.


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"name": "resnet"}, r"name.*'resnet'"),
        ({"hidden": (64, 0)}, r"hidden.*\(64, 0\)"),
        ({"hidden": (64.0,)}, r"hidden.*64\.0"),
        ({"cnn_channels": (16,)}, r"cnn_channels.*\(16,\)"),
        ({"cnn_channels": (16, -1)}, r"cnn_channels.*-1"),
        ({"embed_dim": 0}, r"embed_dim.*0"),
        ({"lstm_hidden": -3}, r"lstm_hidden.*-3"),
        ({"lstm_layers": 0}, r"lstm_layers.*0"),
        ({"dropout": 1.0}, r"dropout.*1\.0"),
        ({"dropout": -0.1}, r"dropout.*-0\.1"),
    ],
)
def test_config_errors_name_field_and_value(kwargs: dict[str, object], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        ModelConfig(**kwargs)  # type: ignore[arg-type]


def test_config_coerces_lists_and_is_hashable() -> None:
    cfg = ModelConfig(name="mlp", hidden=[32, 16], cnn_channels=[8, 8])  # type: ignore[arg-type]
    assert cfg.hidden == (32, 16) and cfg.cnn_channels == (8, 8)
    assert hash(cfg) == hash(ModelConfig(name="mlp", hidden=(32, 16), cnn_channels=(8, 8)))


@pytest.mark.parametrize(
    ("cfg", "shape", "num_classes", "vocab", "pattern"),
    [
        (ModelConfig(name="cnn"), TEXT, VOCAB, None, r"input_shape.*\(80,\)"),
        (ModelConfig(name="cnn"), (10, 3), 2, None, r"input_shape.*\(10, 3\).*4x4"),
        (ModelConfig(name="cnn"), (1, 2, 3, 4), 2, None, r"input_shape.*\(1, 2, 3, 4\)"),
        (ModelConfig(name="char_lstm"), TEXT, VOCAB, None, r"vocab_size.*None"),
        (ModelConfig(name="char_lstm"), TEXT, VOCAB, 0, r"vocab_size.*0"),
        (ModelConfig(name="char_lstm"), (8, 10), VOCAB, VOCAB, r"input_shape.*\(8, 10\)"),
        (ModelConfig(name="mlp", hidden=()), DIGITS, 10, None, r"hidden.*mlp"),
        (ModelConfig(name="logreg"), DIGITS, 0, None, r"num_classes.*0"),
        (ModelConfig(name="logreg"), (64, 0), 10, None, r"input_shape.*\(64, 0\)"),
        (ModelConfig(name="logreg"), (), 10, None, r"input_shape.*\(\)"),
    ],
)
def test_build_errors_name_field_and_value(
    cfg: ModelConfig,
    shape: tuple[int, ...],
    num_classes: int,
    vocab: int | None,
    pattern: str,
) -> None:
    with pytest.raises(ValueError, match=pattern):
        build_model(cfg, shape, num_classes, vocab_size=vocab)


def test_build_rejects_non_config() -> None:
    with pytest.raises(ValueError, match="cfg"):
        build_model("mlp", DIGITS, 10)  # type: ignore[arg-type]
