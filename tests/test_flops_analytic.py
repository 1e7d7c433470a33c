"""The analytic FLOP counts of the project's models equal torch's FLOP counter's.

`forward_flops_per_example` counts `LogisticRegression`, `MLP`, `SmallCNN` and `CharLSTM`
from their layer sizes (running ``FlopCounterMode`` imports ``torch._dynamo``, ~1.5 s); these
tests pin that count to the measured one for every model and input shape the data sets give
(digits, MNIST, Synthetic, Shakespeare, an ``hf:`` image set) and the configurable variants.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fl.data.shakespeare import VOCAB, WINDOW
from fl.data.synthetic import DIMENSION
from fl.models import (
    ModelConfig,
    build_model,
    clear_flops_cache,
    forward_flops_per_example,
    train_flops_per_example,
)
from fl.models.flops import analytic_forward_flops, measured_forward_flops
from fl.models.linear import MLP

DIGITS = (64,)
MNIST = (1, 28, 28)
SYNTHETIC = (DIMENSION,)
TEXT = (WINDOW,)
V = len(VOCAB)

DENSE_SHAPES = [DIGITS, MNIST, (784,), (28, 28), SYNTHETIC, (3, 32, 32)]
IMAGE_SHAPES = [DIGITS, MNIST, (784,), (28, 28), (3, 32, 32), (1, 5, 7), (2, 9, 13), (4, 4)]

CASES: list[tuple[ModelConfig, tuple[int, ...], int, int | None]] = []
for _shape in DENSE_SHAPES:
    for _cfg in (
        ModelConfig(name="logreg"),
        ModelConfig(name="logreg", dropout=0.5),
        ModelConfig(name="mlp"),
        ModelConfig(name="mlp", hidden=(128, 32)),
        ModelConfig(name="mlp", hidden=(200, 200, 100), dropout=0.3),
        ModelConfig(name="mlp", hidden=(7,), dropout=0.5),
    ):
        CASES.append((_cfg, _shape, 10, None))
CASES.append((ModelConfig(name="mlp", hidden=(64,)), DIGITS, 2, None))
for _shape in IMAGE_SHAPES:
    for _cfg in (
        ModelConfig(name="cnn"),
        ModelConfig(name="cnn", cnn_channels=(32, 64)),
        ModelConfig(name="cnn", cnn_channels=(3, 5), dropout=0.25),
    ):
        CASES.append((_cfg, _shape, 10, None))
for _cfg in (
    ModelConfig(name="char_lstm"),
    ModelConfig(name="char_lstm", lstm_layers=1),
    ModelConfig(name="char_lstm", lstm_layers=3, lstm_hidden=64, dropout=0.2),
    ModelConfig(name="char_lstm", embed_dim=16, lstm_hidden=256),
    ModelConfig(name="char_lstm", lstm_hidden=32, dropout=0.5),
):
    CASES.append((_cfg, TEXT, V, V))
CASES.append((ModelConfig(name="char_lstm", lstm_hidden=32), (20,), V, V))
CASES.append((ModelConfig(name="char_lstm", lstm_hidden=32), TEXT, 5, 50))


def _id(case: tuple[ModelConfig, tuple[int, ...], int, int | None]) -> str:
    cfg, shape, classes, _ = case
    sizes = {
        "logreg": "",
        "mlp": f"h{list(cfg.hidden)}",
        "cnn": f"c{list(cfg.cnn_channels)}",
        "char_lstm": f"e{cfg.embed_dim}h{cfg.lstm_hidden}l{cfg.lstm_layers}",
    }[cfg.name]
    return f"{cfg.name}{sizes}-d{cfg.dropout}-{'x'.join(map(str, shape))}-k{classes}"


@pytest.mark.parametrize(("cfg", "shape", "num_classes", "vocab"), CASES, ids=map(_id, CASES))
def test_analytic_count_equals_torch_flop_counter(
    cfg: ModelConfig, shape: tuple[int, ...], num_classes: int, vocab: int | None
) -> None:
    model = build_model(cfg, shape, num_classes, vocab)
    dtype = torch.int64 if vocab else torch.float32
    measured = measured_forward_flops(model, shape, dtype)
    assert measured > 0
    assert analytic_forward_flops(model, shape, dtype) == measured
    assert analytic_forward_flops(model, shape) == measured  # the model's own input dtype
    clear_flops_cache()
    assert forward_flops_per_example(model, shape, dtype) == measured
    assert train_flops_per_example(model, shape, dtype) == 3 * measured
    assert forward_flops_per_example(model, shape) == measured


def test_other_models_are_measured_with_the_counter() -> None:
    class Doubled(MLP):  # a subclass may change forward: not counted analytically
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) + super().forward(x)

    doubled = Doubled(DIGITS, 10, (64,))
    assert analytic_forward_flops(doubled, DIGITS) is None
    clear_flops_cache()
    assert forward_flops_per_example(doubled, DIGITS) == 2 * 2 * (64 * 64 + 64 * 10)

    seq = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    assert analytic_forward_flops(seq, DIGITS) is None
    assert forward_flops_per_example(seq, DIGITS) == 2 * 64 * 10


def test_inputs_a_model_cannot_take_fail_as_before() -> None:
    mlp = build_model(ModelConfig(name="mlp"), DIGITS, 10)
    assert analytic_forward_flops(mlp, (65,)) is None
    with pytest.raises(RuntimeError):
        forward_flops_per_example(mlp, (65,))
    cnn = build_model(ModelConfig(name="cnn"), DIGITS, 10)
    assert analytic_forward_flops(cnn, (63,)) is None
    lstm = build_model(ModelConfig(name="char_lstm", lstm_hidden=16), TEXT, V, V)
    assert analytic_forward_flops(lstm, TEXT, torch.float32) is None
    with pytest.raises(TypeError, match="integer token ids"):
        forward_flops_per_example(lstm, TEXT, torch.float32)
    assert analytic_forward_flops(lstm, (4, 20)) is None
