"""I-Prof (FLeet, Damaskinos et al., Middleware 2020): predict a device's computation time and
pick the largest mini-batch that meets a latency bound (SLO).

Model. The computation time of a batch of n examples is n × s, where s,
the seconds per example, is predicted in log space:

    log s = g(x) + b_d

- g is the *global* model, a ridge regression of log s on the device's reported features x
  (log-transformed, standardised), fitted on a population of observed devices: offline on a
  device lab's measurements (`fit_global`, as FLeet's pre-collected data), and refitted online
  on every observation so far every `refit_every` observations (FLeet retrains it after every
  stats push). It is all a device that was never observed gets (cold start); before any fit,
  requests get `default_batch`.
- b_d is a *per-device* correction learnt online by a passive-aggressive (PA-II) regressor on the
  residuals log s_observed − g(x): ε-insensitive, each step moves b_d by
  max(0, |r| − ε) / (1 + 1/(2C)) towards the observation, so a few observations pull a device
  that deviates from the population onto its own speed.

Batch size: the largest n with predicted time ≤ SLO at the `slo_quantile` of the prediction
error (log-normal, sd estimated from past errors: the global fit's residuals for cold devices,
the errors of personal predictions, pooled over devices, once a device has been observed),
clipped to [min_batch, max_batch].
FLeet predicts the mean; a quantile is what makes "≥ 90 % of requests meet the SLO" a setting
rather than luck.

As a `profiler` of an asynchronous strategy (AdaSGD and the others), I-Prof sets each
request's `batch-size` (and `local-steps`, default 1: one mini-batch gradient per request, as in
FLeet) and learns from each reply's `compute-s` and `examples-processed`. A synchronous strategy
can use `batch_size` / `update` the same way from its configure_train / aggregate_train.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from fl.protocol import keys


@dataclass(frozen=True)
class Observation:
    """One measured task: the device's features, the examples it processed, the seconds."""

    features: Mapping[str, float]
    examples: int
    compute_s: float


@dataclass
class _Device:
    bias: float = 0.0  # b_d, log space
    observations: int = 0


@dataclass
class IProf:
    """Latency predictor and SLO-driven batch-size chooser (see module docstring).

    Parameters: slo_s (the compute-time bound), feature_names (None: every feature the first
    training set has), slo_quantile, min_batch / max_batch / multiple (batch clipping and
    rounding), pa_c / pa_epsilon (PA-II aggressiveness and insensitivity, log space), ridge
    (global model's L2 penalty), personal (False: global-only baseline), local_steps (steps per
    request), default_batch (when a device reports no features and no model exists).
    """

    slo_s: float
    feature_names: Sequence[str] | None = None
    slo_quantile: float = 0.95
    min_batch: int = 1
    max_batch: int = 4096
    multiple: int = 1
    pa_c: float = 1.0
    pa_epsilon: float = 0.02
    ridge: float = 1e-3
    personal: bool = True
    local_steps: int = 1
    default_batch: int = 32
    refit_every: int = 10
    _history: list[Observation] = field(default_factory=list, init=False, repr=False)
    _coef: np.ndarray | None = field(default=None, init=False, repr=False)
    _mean: np.ndarray | None = field(default=None, init=False, repr=False)
    _std: np.ndarray | None = field(default=None, init=False, repr=False)
    _global_sd: float = field(default=1.0, init=False)
    _err_sq: float = field(default=0.0, init=False)  # personal prediction errors (log space)
    _err_n: int = field(default=0, init=False)
    _devices: dict[int, _Device] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        checks = (
            (math.isfinite(self.slo_s) and self.slo_s > 0, "slo_s", self.slo_s, "> 0"),
            (0.5 <= self.slo_quantile < 1, "slo_quantile", self.slo_quantile, "in [0.5, 1)"),
            (1 <= self.min_batch <= self.max_batch, "min_batch", self.min_batch,
             "≥ 1 and ≤ max_batch"),
            (self.multiple >= 1, "multiple", self.multiple, "≥ 1"),
            (self.pa_c > 0, "pa_c", self.pa_c, "> 0"),
            (self.pa_epsilon >= 0, "pa_epsilon", self.pa_epsilon, "≥ 0"),
            (self.ridge >= 0, "ridge", self.ridge, "≥ 0"),
            (self.local_steps >= 1, "local_steps", self.local_steps, "≥ 1"),
            (self.default_batch >= 1, "default_batch", self.default_batch, "≥ 1"),
            (self.refit_every >= 0, "refit_every", self.refit_every, "≥ 0 (0: never)"),
        )  # fmt: skip
        for ok, name, value, rule in checks:
            if not ok:
                raise ValueError(f"IProf.{name} = {value!r} is invalid: must be {rule}")

    # ------------------------------------------------------------ global model
    def _phi(self, features: Mapping[str, float]) -> np.ndarray:
        assert self.feature_names is not None
        problem = self.feature_problem(features)
        if problem:
            raise ValueError(problem)
        raw = np.array([float(features[k]) for k in self.feature_names])
        return np.log(np.maximum(raw, 1e-9))

    def feature_problem(self, features: Mapping[str, float] | None) -> str | None:
        """Why `features` cannot be used (missing or non-finite values), or None."""
        if features is None:
            return "the device reported no features"
        names = self.feature_names if self.feature_names is not None else tuple(features)
        missing = [k for k in names if k not in features]
        if missing:
            return f"device features lack {missing} (I-Prof uses {list(names)})"
        bad = {k: features[k] for k in names if not math.isfinite(float(features[k]))}
        if bad:
            return f"device features {bad} are not finite numbers"
        return None

    def fit_global(self, observations: Sequence[Observation]) -> IProf:
        """Fit the global model on observations of a population of devices; returns self."""
        obs = [
            o
            for o in observations
            if o.examples > 0
            and math.isfinite(o.compute_s)
            and o.compute_s > 0
            and self.feature_problem(o.features) is None
        ]
        if len(obs) < 2:
            raise ValueError(f"fit_global needs ≥ 2 usable observations, got {len(obs)}")
        if self.feature_names is None:
            self.feature_names = tuple(sorted(obs[0].features))
        x = np.stack([self._phi(o.features) for o in obs])
        y = np.log([o.compute_s / o.examples for o in obs])
        self._mean, self._std = x.mean(axis=0), x.std(axis=0)
        self._std[self._std == 0] = 1.0
        z = np.hstack([np.ones((len(x), 1)), (x - self._mean) / self._std])
        reg = self.ridge * len(z) * np.eye(z.shape[1])
        reg[0, 0] = 0.0  # no penalty on the intercept
        self._coef = np.linalg.solve(z.T @ z + reg, z.T @ y)
        resid = y - z @ self._coef
        self._global_sd = float(np.sqrt(np.mean(resid**2) * len(z) / max(len(z) - z.shape[1], 1)))
        return self

    @property
    def fitted(self) -> bool:
        """Whether a global model exists."""
        return self._coef is not None

    def global_log_slope(self, features: Mapping[str, float]) -> float:
        """g(x): the population model's log seconds per example."""
        if self._coef is None or self._mean is None or self._std is None:
            raise RuntimeError("I-Prof has no global model: call fit_global first")
        z = np.concatenate([[1.0], (self._phi(features) - self._mean) / self._std])
        return float(z @ self._coef)

    # ------------------------------------------------------------- prediction
    def log_slope(self, node_id: int, features: Mapping[str, float]) -> float:
        """Predicted log seconds per example of `node_id` (global + its correction)."""
        dev = self._devices.get(node_id)
        bias = dev.bias if (dev is not None and self.personal) else 0.0
        return self.global_log_slope(features) + bias

    def predict(self, node_id: int, features: Mapping[str, float], examples: int) -> float:
        """Predicted computation seconds for `examples` examples on `node_id`."""
        return examples * math.exp(self.log_slope(node_id, features))

    def error_sd(self, node_id: int) -> float:
        """Sd of the log prediction error: pooled over the personal predictions of all devices
        once this node has been observed (and ≥ 5 such errors exist), else the global fit's
        residual sd."""
        dev = self._devices.get(node_id)
        if self.personal and dev is not None and dev.observations > 0 and self._err_n >= 5:
            return math.sqrt(self._err_sq / self._err_n)
        return self._global_sd

    def batch_size(self, node_id: int, features: Mapping[str, float] | None) -> int:
        """The largest batch whose predicted time meets the SLO at `slo_quantile`
        (`default_batch` without a model or without usable features)."""
        if not self.fitted or self.feature_problem(features) is not None:
            return self.default_batch
        assert features is not None
        z = NormalDist().inv_cdf(self.slo_quantile)
        per_example = math.exp(self.log_slope(node_id, features) + z * self.error_sd(node_id))
        n = int(self.slo_s / per_example / self.local_steps)
        n = (n // self.multiple) * self.multiple
        return int(min(self.max_batch, max(self.min_batch, n)))

    # --------------------------------------------------------------- learning
    def update(
        self, node_id: int, features: Mapping[str, float], examples: int, compute_s: float
    ) -> None:
        """Learn from one measured task: a PA-II step on the node's log-space correction, and
        (every `refit_every` observations) a refit of the global model on all observations."""
        if examples <= 0 or not (math.isfinite(compute_s) and compute_s > 0):
            return
        if self.feature_problem(features) is not None:
            return
        if self.refit_every:
            self._history.append(Observation(dict(features), examples, compute_s))
            n_params = len(self.feature_names or features) + 1
            if len(self._history) >= 2 * n_params and len(self._history) % self.refit_every == 0:
                self.fit_global(self._history)
        if not self.fitted:
            return
        y = math.log(compute_s / examples)
        dev = self._devices.setdefault(node_id, _Device())
        residual = y - self.log_slope(node_id, features)
        if dev.observations > 0:  # errors of personal predictions (not of the cold start)
            self._err_sq += residual**2
            self._err_n += 1
        loss = max(0.0, abs(residual) - self.pa_epsilon)
        step = loss / (1.0 + 1.0 / (2.0 * self.pa_c))
        dev.bias += math.copysign(step, residual)
        dev.observations += 1

    def observations(self, node_id: int) -> int:
        """How many tasks of `node_id` I-Prof has learnt from."""
        dev = self._devices.get(node_id)
        return dev.observations if dev else 0

    # ------------------------------------------ the asynchronous strategies' hooks
    def request(
        self, node_id: int, features: Mapping[str, float] | None, config: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Per-request overrides: this node's batch size and the steps per request."""
        return {
            keys.BATCH_SIZE: self.batch_size(node_id, features),
            keys.LOCAL_STEPS: self.local_steps,
        }

    def observe(
        self,
        node_id: int,
        features: Mapping[str, float] | None,
        config: Mapping[str, Any],
        metrics: Mapping[str, float],
    ) -> None:
        """Learn from a reply's `compute-s` and `examples-processed`."""
        if features is None or keys.COMPUTE_S not in metrics:
            return
        examples = int(metrics.get(keys.EXAMPLES_PROCESSED, 0))
        self.update(node_id, features, examples, float(metrics[keys.COMPUTE_S]))
