"""Deterministic, side-effect-free parameter initialisation.

PyTorch layers initialise themselves from the *global* RNG. In a simulator that seeds and
replays many clients (possibly on several threads), drawing from the global RNG would make
model construction change every later random draw. Instead we

1. construct the module on the ``meta`` device (no storage, no RNG draws),
2. allocate real storage with ``Module.to_empty``, and
3. fill every parameter from a *local* ``torch.Generator`` seeded by the caller, using the
   same distributions as PyTorch's defaults (so training dynamics are the usual ones).

The global RNG state is never read or written.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def _uniform_(tensor: torch.Tensor, bound: float, gen: torch.Generator) -> None:
    tensor.uniform_(-bound, bound, generator=gen)


def _init_fan_in(module: nn.Linear | nn.Conv2d, gen: torch.Generator) -> None:
    """PyTorch default for Linear/Conv: kaiming_uniform(a=sqrt(5)) == U(±1/sqrt(fan_in)).

    The bias uses the same bound.
    """
    fan_in = module.weight[0].numel()  # in_features, or in_channels/groups * kh * kw
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    _uniform_(module.weight, bound, gen)
    if module.bias is not None:
        _uniform_(module.bias, bound, gen)


def _init_embedding(module: nn.Embedding, gen: torch.Generator) -> None:
    """PyTorch default for Embedding: N(0, 1), padding row zeroed."""
    module.weight.normal_(0.0, 1.0, generator=gen)
    if module.padding_idx is not None:
        module.weight[module.padding_idx].zero_()


def _init_rnn(module: nn.RNNBase, gen: torch.Generator) -> None:
    """PyTorch default for LSTM/GRU/RNN: every weight and bias U(±1/sqrt(hidden_size))."""
    bound = 1.0 / math.sqrt(module.hidden_size)
    for param in module.parameters(recurse=False):
        _uniform_(param, bound, gen)


_INITIALISERS: tuple[tuple[type[nn.Module], Callable[..., None]], ...] = (
    (nn.Linear, _init_fan_in),
    (nn.Conv2d, _init_fan_in),
    (nn.Embedding, _init_embedding),
    (nn.RNNBase, _init_rnn),
)


def materialise_and_init(model: nn.Module, seed: int, device: str = "cpu") -> nn.Module:
    """Allocate storage for a meta-device `model` and initialise it from `seed`.

    Modules are visited in ``named_modules`` order and each draws from one shared local
    generator, so the result depends only on the architecture and `seed`.

    Raises:
        TypeError: if the model has a parameterised module we have no initialiser for
            (rather than silently leaving uninitialised memory in it).
    """
    # `Module.to_empty` without its ``torch.empty_like``: on meta tensors that runs a Python
    # reference implementation importing torch.fx.experimental.symbolic_shapes (and sympy,
    # ~0.5 s). The storage is overwritten below, so only shape, strides and dtype matter.
    model._apply(lambda t: torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device=device))
    gen = torch.Generator(device=device).manual_seed(seed)
    done: set[int] = set()
    with torch.no_grad():
        for _, module in model.named_modules():
            own = list(module.parameters(recurse=False))
            if not own:
                continue
            for cls, init in _INITIALISERS:
                if isinstance(module, cls):
                    init(module, gen)
                    done.update(id(p) for p in own)
                    break
            else:
                raise TypeError(f"no deterministic initialiser for {type(module).__name__}")
    missing = [name for name, p in model.named_parameters() if id(p) not in done]
    if missing:  # pragma: no cover - guarded by the loop above
        raise TypeError(f"parameters left uninitialised: {missing}")
    for name, buf in model.named_buffers():
        raise TypeError(f"buffer {name!r} has no deterministic initialiser ({buf.shape})")
    return model
