"""Byzantine nodes: attacks that wrap a node's ClientApp, so every aggregator meets the same attack.

Three families (see research/simulators.md §6 and research/algorithms.md §3.3):

- **Update attacks** (``gaussian``, ``sign_flip``, ``additive``) change the model a malicious
  node replies with. With ``g`` the global model it was sent and ``w`` its honest result,
  ``δ = w − g`` and the reply becomes ``g + attack(δ)``.
- **Omniscient update attacks** (``alie``, ``ipm``, ``minmax``) also see the round's honest
  updates (the grid calls `ByzantineClientApp.observe` before running the node).
- **Data attacks** (``label_flip``, ``feature_noise``, ``backdoor``) poison the node's own
  training data: the wrapper adds ``attack-*`` keys to the instruction's ConfigRecord and the
  project's ClientApp applies `corrupt_data` before training.

Which nodes are malicious is fixed for the whole run (`malicious_nodes`). All randomness is
seeded from (run seed, node index, server round, the node's call count), never from global RNG
state, so results do not depend on the order in which nodes execute.

Update attacks change floating-point arrays only (weights, BatchNorm statistics); integer
buffers such as ``num_batches_tracked`` pass through from the honest reply. Keys, order,
shapes and dtypes of the reply's arrays are preserved; arithmetic is done in float64.
"""

from fl.client.poisoning import corrupt_data, data_attack_config, data_attack_from_config
from fl.sim.attacks.byzantine import ByzantineClientApp, flat_update
from fl.sim.attacks.config import (
    ATTACKS,
    DATA_ATTACKS,
    OMNISCIENT_ATTACKS,
    UPDATE_ATTACKS,
    AttackConfig,
    is_data_attack,
    is_omniscient,
    malicious_nodes,
)
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
    "OMNISCIENT_ATTACKS",
    "UPDATE_ATTACKS",
    "AttackConfig",
    "ByzantineClientApp",
    "additive_noise",
    "alie",
    "alie_z",
    "corrupt_data",
    "data_attack_config",
    "data_attack_from_config",
    "flat_update",
    "gaussian_update",
    "ipm",
    "is_data_attack",
    "is_omniscient",
    "malicious_nodes",
    "max_pairwise_distance",
    "minmax",
    "minmax_direction",
    "minmax_gamma",
    "sign_flip",
]
