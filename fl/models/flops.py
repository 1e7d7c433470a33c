"""FLOP and parameter counts that drive the simulator's virtual-time cost model.

Client compute time is ``examples processed x train_flops_per_example / device FLOP/s``, so
these numbers must scale with model size and be nonzero for every model.

Counting convention (that of ``torch.utils.flop_counter.FlopCounterMode``):

* a matrix multiply / convolution costs ``2 x multiply-accumulates`` (``2·in·out`` for a
  linear layer, ``2·C_in·kh·kw`` per conv output element);
* bias additions, activations, pooling, softmax, embedding look-ups and other elementwise
  work are **not** counted (they are a small fraction for these models).

So logistic regression on a ``(64,)`` input with 10 classes costs exactly ``2·64·10 = 1280``
forward FLOPs per example.

Recurrent layers: ``FlopCounterMode`` (torch 2.x on CPU) records **zero** FLOPs for
``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` because they dispatch to fused ``aten._lstm``-style
kernels it has no formula for. We therefore count every ``nn.RNNBase`` module analytically
with the same matmul-only convention (`rnn_forward_flops`) and replace whatever the counter
attributed to it (zero today; the replacement keeps the count correct if a future torch
starts counting part of it).

The project's own models (`LogisticRegression`, `MLP`, `SmallCNN`, `CharLSTM`, exactly those
classes) are counted analytically from their layer sizes (`analytic_forward_flops`), with the
same convention and the same result as the counter: running ``FlopCounterMode`` imports
``torch._dynamo`` (~1.5 s). Any other model, or an input one of ours cannot take, is measured
with the counter (`measured_forward_flops`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from fl.models.cnn import SmallCNN
from fl.models.linear import MLP, LogisticRegression
from fl.models.lstm import CharLSTM

TRAIN_FLOPS_MULTIPLIER = 3.0
"""Training cost per example relative to a forward pass: forward + backward, with the
backward pass ~2x the forward (gradients w.r.t. activations and w.r.t. weights). This is the
convention of FedScale's cost model and of the usual "6·N FLOPs per token" rule."""

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}

_ELEMENTWISE = (nn.ReLU, nn.Dropout, nn.Identity)
"""Layers that cost no counted FLOPs and keep the shape."""
_TOKEN_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)

_cache: dict[tuple[Any, ...], float] = {}
_cache_lock = threading.Lock()


def num_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of `model` (all of them unless `trainable_only`)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def rnn_forward_flops(module: nn.RNNBase, steps: int) -> float:
    """Analytic forward FLOPs of a recurrent layer over `steps` (batch x time) positions.

    Per time step, layer and direction, the gate pre-activations are
    ``W_ih·x + W_hh·h`` with ``G·H`` rows (``G`` = 4 for LSTM, 3 for GRU, 1 for RNN), costing
    ``2·G·H·(in + h_out)`` FLOPs, where ``in`` is the layer's input width (``input_size`` for
    the first layer, ``h_out·directions`` above it) and ``h_out`` is ``proj_size`` if set,
    else ``H``. A projection (LSTM ``proj_size``) adds ``2·H·proj_size``. Biases and gate
    nonlinearities are not counted, matching `FlopCounterMode`'s convention.
    """
    gates = _GATES[module.mode]
    hidden = module.hidden_size
    proj = getattr(module, "proj_size", 0) or 0
    h_out = proj or hidden
    directions = 2 if module.bidirectional else 1
    per_step = 0
    for layer in range(module.num_layers):
        width_in = module.input_size if layer == 0 else h_out * directions
        per_dir = 2 * gates * hidden * (width_in + h_out) + 2 * hidden * proj
        per_step += directions * per_dir
    return float(steps * per_step)


def _rnn_steps(module: nn.RNNBase, inp: Any) -> int:
    """Number of (batch x time) positions a recurrent layer processes for input `inp`."""
    if isinstance(inp, PackedSequence):
        return int(inp.data.shape[0])
    if inp.dim() == 2:  # unbatched (T, features)
        return int(inp.shape[0])
    return int(inp.shape[0] * inp.shape[1])


def _signature(model: nn.Module) -> tuple[Any, ...]:
    """Cache key for an architecture: class, printed structure and parameter shapes.

    ``repr`` covers layer types and hyper-parameters (our models also print their input
    geometry via ``extra_repr``); parameter shapes guard against look-alike reprs.
    """
    cls = type(model)
    shapes = tuple((name, tuple(p.shape), p.dtype) for name, p in model.named_parameters())
    return (cls.__module__, cls.__qualname__, repr(model), shapes)


def _pool_side(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil: bool) -> int:
    """Output length of one spatial side of a max-pooling (PyTorch's formula)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + padding:  # the last window must start inside
        out -= 1
    return out


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _layers_flops(
    layers: Iterable[nn.Module], shape: tuple[int, ...]
) -> tuple[float, tuple[int, ...]] | None:
    """FLOPs and per-example output shape of `layers` on a per-example input `shape`, for
    sequences of Linear, Conv2d, MaxPool2d, Flatten and elementwise layers (None otherwise)."""
    flops = 0.0
    for layer in layers:
        if type(layer) in _ELEMENTWISE:
            continue
        if type(layer) is nn.Linear:
            if len(shape) != 1 or shape[0] != layer.in_features:
                return None
            flops += 2 * layer.in_features * layer.out_features
            shape = (layer.out_features,)
        elif type(layer) is nn.Flatten and layer.start_dim == 1 and layer.end_dim == -1:
            shape = (math.prod(shape),)
        elif type(layer) is nn.Conv2d and layer.padding_mode == "zeros":
            if len(shape) != 3 or shape[0] != layer.in_channels or isinstance(layer.padding, str):
                return None
            (kh, kw), (sh, sw) = _pair(layer.kernel_size), _pair(layer.stride)
            (ph, pw), (dh, dw) = _pair(layer.padding), _pair(layer.dilation)
            h = (shape[1] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
            w = (shape[2] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
            if h < 1 or w < 1:
                return None
            per_output = 2 * (layer.in_channels // layer.groups) * kh * kw
            flops += per_output * layer.out_channels * h * w
            shape = (layer.out_channels, h, w)
        elif type(layer) is nn.MaxPool2d and not layer.return_indices:
            if len(shape) != 3:
                return None
            k, st = _pair(layer.kernel_size), _pair(layer.stride or layer.kernel_size)
            pad, dil = _pair(layer.padding), _pair(layer.dilation)
            if pad[0] > k[0] // 2 or pad[1] > k[1] // 2:
                return None
            h, w = (
                _pool_side(shape[1 + i], k[i], st[i], pad[i], dil[i], layer.ceil_mode)
                for i in range(2)
            )
            if h < 1 or w < 1:
                return None
            shape = (shape[0], h, w)
        else:
            return None
    return flops, shape


def analytic_forward_flops(
    model: nn.Module, input_shape: tuple[int, ...], input_dtype: torch.dtype | None = None
) -> float | None:
    """Forward FLOPs per example of one of the project's models, from its layer sizes.

    The same number `measured_forward_flops` counts (the convention of the module docstring),
    without running the model. None if `model` is not exactly one of `LogisticRegression`,
    `MLP`, `SmallCNN`, `CharLSTM` (a subclass may override ``forward``), or if it could not
    take a ``(1, *input_shape)`` input of `input_dtype` (then the measurement reports the
    problem).
    """
    shape = tuple(int(s) for s in input_shape)
    total: float
    if type(model) is LogisticRegression or type(model) is MLP:
        layers = (model.fc,) if isinstance(model, LogisticRegression) else model.net
        counted = _layers_flops(layers, (math.prod(shape),))
        if counted is None:
            return None
        total = counted[0]
    elif type(model) is SmallCNN:
        image = tuple(model.image_shape)
        if math.prod(shape) != math.prod(image):
            return None
        features = _layers_flops(model.features, image)
        if features is None:
            return None
        head = _layers_flops(model.classifier, features[1])
        if head is None:
            return None
        total = features[0] + head[0]
    elif type(model) is CharLSTM:
        dtype = input_dtype if input_dtype is not None else model.input_dtype
        emb, lstm, fc = model.embedding, model.lstm, model.fc
        h_out = (getattr(lstm, "proj_size", 0) or lstm.hidden_size) * (
            2 if lstm.bidirectional else 1
        )
        if (
            len(shape) != 1
            or dtype not in _TOKEN_DTYPES
            or type(emb) is not nn.Embedding
            or type(lstm) is not nn.LSTM
            or not lstm.batch_first
            or lstm.input_size != emb.embedding_dim
            or type(model.dropout) not in _ELEMENTWISE
            or type(fc) is not nn.Linear
            or fc.in_features != h_out
        ):
            return None
        total = rnn_forward_flops(lstm, shape[0]) + 2 * fc.in_features * fc.out_features
    else:
        return None
    return float(total)


def measured_forward_flops(
    model: nn.Module, input_shape: tuple[int, ...], input_dtype: torch.dtype | None = None
) -> float:
    """Forward FLOPs per example counted by running one batch-of-1 forward pass of zeros under
    ``FlopCounterMode`` (in eval mode, without gradients), recurrent layers counted
    analytically (`rnn_forward_flops`). Not cached; see `forward_flops_per_example`."""
    shape = tuple(int(s) for s in input_shape)
    dtype = input_dtype if input_dtype is not None else getattr(model, "input_dtype", torch.float32)
    return _measure(model, shape, dtype)


def _measure(model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype) -> float:
    """Run one batch-of-1 forward pass under `FlopCounterMode` and add analytic RNN FLOPs."""
    # Imported here: running the counter imports torch._dynamo, which takes ~1.5 s.
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros((1, *input_shape), dtype=dtype, device=device)

    counter = FlopCounterMode(display=False)
    corrections: list[float] = []
    before: dict[int, int] = {}

    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        before[id(module)] = counter.get_total_flops()

    def post_hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        assert isinstance(module, nn.RNNBase)
        counted = counter.get_total_flops() - before.pop(id(module))
        corrections.append(rnn_forward_flops(module, _rnn_steps(module, args[0])) - counted)

    handles = []
    for module in model.modules():
        if isinstance(module, nn.RNNBase):
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(post_hook))
    # eval(): dropout would otherwise draw from the global RNG; restore per-module flags.
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes:
            module.training = mode
    return float(counter.get_total_flops()) + sum(corrections)


def forward_flops_per_example(
    model: nn.Module,
    input_shape: tuple[int, ...],
    input_dtype: torch.dtype | None = None,
) -> float:
    """Forward-pass FLOPs for one example of shape `input_shape` (see module docstring).

    The project's own models are counted from their layer sizes (`analytic_forward_flops`);
    any other model is measured once per (architecture signature, input shape, dtype) with a
    batch of 1 of zeros, in eval mode and without gradients (`measured_forward_flops`). Either
    way the count is cached. The model's parameters, RNG state and train/eval flags are left
    untouched.

    Args:
        model: any ``nn.Module`` taking a ``(B, *input_shape)`` tensor.
        input_shape: per-example input shape (no batch dimension).
        input_dtype: dtype of the probe input. ``None`` (the default) uses the model's
            ``input_dtype`` attribute if present (``torch.int64`` for ``char_lstm``), else
            ``torch.float32``.

    Raises:
        ValueError: if no FLOPs at all are counted (the cost model would make the model
            free to train).
    """
    shape = tuple(int(s) for s in input_shape)
    dtype = input_dtype if input_dtype is not None else getattr(model, "input_dtype", torch.float32)
    key = (_signature(model), shape, dtype)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    analytic = analytic_forward_flops(model, shape, dtype)
    flops = analytic if analytic is not None else _measure(model, shape, dtype)
    if flops <= 0:
        raise ValueError(
            f"counted {flops} forward FLOPs for {type(model).__name__} on input_shape={shape}"
            "; the virtual-time model needs a positive cost"
        )
    with _cache_lock:
        _cache[key] = flops
    return flops


def train_flops_per_example(
    model: nn.Module,
    input_shape: tuple[int, ...],
    input_dtype: torch.dtype | None = None,
) -> float:
    """Training FLOPs per example: ``TRAIN_FLOPS_MULTIPLIER (3) x`` forward FLOPs.

    Forward + backward with backward ~2x forward, as in FedScale's cost model. Optimizer
    updates (O(parameters) per step, not per example) are not included.
    """
    return TRAIN_FLOPS_MULTIPLIER * forward_flops_per_example(model, input_shape, input_dtype)


def clear_flops_cache() -> None:
    """Forget cached FLOP measurements (for tests and long-running processes)."""
    with _cache_lock:
        _cache.clear()
