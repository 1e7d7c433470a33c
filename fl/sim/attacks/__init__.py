"""Byzantine nodes: attacks that wrap a node's ClientApp, so every aggregator meets the same attack.

Four families; the first three
are ``kind``, the fourth (``lies``) composes with any of them, ``kind = "none"`` included:

- **Update attacks** (``gaussian``, ``sign_flip``, ``additive``) change the model a malicious
  node replies with. With ``g`` the global model it was sent and ``w`` its honest result,
  ``δ = w − g`` and the reply becomes ``g + attack(δ)``.
- **Omniscient update attacks** (``alie``, ``ipm``, ``minmax``) also see the round's honest
  updates (the grid calls `ByzantineClientApp.observe` before running the node).
- **Data attacks** (``label_flip``, ``feature_noise``, ``backdoor``) poison the node's own
  training data: the wrapper adds ``attack-*`` keys to the instruction's ConfigRecord and the
  project's ClientApp applies `corrupt_data` before training.
- **Lies** (``lies``: ``inflate_examples``, ``forge_labels``, ``stale_replay``, ``fast_lane``):
  the node lies about itself rather than (or besides) about its model, after the attack of
  ``kind``. It inflates the examples it claims (FedAvg's weight) by ``inflate_factor``, with
  consistent ``examples-processed`` and ``label-counts``; forges one-hot ``label-counts`` on
  its rarest class (AdaSGD's rare-label boost); replays its first update δ₀ on every later
  model (g + δ₀: a stale update under a fresh version); or holds the population's fastest
  devices (`fast_lane`, applied to the device list, not by the wrapper; virtual grid only).
  See `fl.sim.attacks.lies` and `fl.sim.attacks.fast_lane`.

Which nodes are malicious is fixed for the whole run (`malicious_nodes`); there are some if
``kind`` is not ``"none"`` or ``lies`` is not empty (`is_active`). All randomness is seeded
from (run seed, node index, server round, the node's call count), never from global RNG state,
so results do not depend on the order in which nodes execute; the lies draw none.

Update attacks change floating-point arrays only (weights, BatchNorm statistics); integer
buffers such as ``num_batches_tracked`` pass through from the honest reply. Keys, order,
shapes and dtypes of the reply's arrays are preserved; arithmetic is done in float64.
"""

from fl.client.poisoning import corrupt_data, data_attack_config, data_attack_from_config
from fl.sim.attacks.byzantine import ByzantineClientApp, flat_update
from fl.sim.attacks.config import (
    ATTACKS,
    DATA_ATTACKS,
    LIES,
    OMNISCIENT_ATTACKS,
    REPLY_LIES,
    UPDATE_ATTACKS,
    AttackConfig,
    is_active,
    is_data_attack,
    is_omniscient,
    lies_in_replies,
    malicious_nodes,
)
from fl.sim.attacks.fast_lane import fast_lane, speed_order
from fl.sim.attacks.lies import forge_label_counts, inflate_counts, inflate_metrics
from fl.sim.attacks.updates import (
    additive_noise,
    alie,
    alie_z,
    gaussian_update,
    ipm,
    max_pairwise_distance,
    minmax,
    minmax_direction,
    minmax_gamma,
    sign_flip,
)

__all__ = [
    "ATTACKS",
    "DATA_ATTACKS",
    "LIES",
    "OMNISCIENT_ATTACKS",
    "REPLY_LIES",
    "UPDATE_ATTACKS",
    "AttackConfig",
    "ByzantineClientApp",
    "additive_noise",
    "alie",
    "alie_z",
    "corrupt_data",
    "data_attack_config",
    "data_attack_from_config",
    "fast_lane",
    "flat_update",
    "forge_label_counts",
    "gaussian_update",
    "inflate_counts",
    "inflate_metrics",
    "ipm",
    "is_active",
    "is_data_attack",
    "is_omniscient",
    "lies_in_replies",
    "malicious_nodes",
    "max_pairwise_distance",
    "minmax",
    "minmax_direction",
    "minmax_gamma",
    "sign_flip",
    "speed_order",
]
