"""Model zoo for the simulator: configs, deterministic builders and FLOP/parameter counts.

``build_model(ModelConfig(name=...), input_shape, num_classes, vocab_size, seed)`` builds one
of `MODELS`; ``train_flops_per_example`` feeds the virtual-time cost model.
"""

from fl.models.config import MODELS, ModelConfig
from fl.models.flops import (
    TRAIN_FLOPS_MULTIPLIER,
    analytic_forward_flops,
    clear_flops_cache,
    forward_flops_per_example,
    measured_forward_flops,
    num_parameters,
    rnn_forward_flops,
    train_flops_per_example,
)
from fl.models.registry import build_model

__all__ = [
    "MODELS",
    "TRAIN_FLOPS_MULTIPLIER",
    "ModelConfig",
    "analytic_forward_flops",
    "build_model",
    "clear_flops_cache",
    "forward_flops_per_example",
    "measured_forward_flops",
    "num_parameters",
    "rnn_forward_flops",
    "train_flops_per_example",
]
