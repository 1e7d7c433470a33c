"""Names the ClientApp and the strategies exchange: message types, config and metric keys.

Every module that builds or reads a message imports its keys from here (`fl.protocol`), so the
contract between a ClientApp and a strategy is written down once. Which keys a reply must carry
for each strategy, and what happens when an optional one is missing, is documented in
`fl.protocol` (the package docstring) and in the README ("The client contract").
"""

from __future__ import annotations

# ------------------------------------------------------------------------ message types
TRAIN = "train"
EVALUATE = "evaluate"
QUERY = "query"
DELIVERABLE_TYPES = (TRAIN, EVALUATE, QUERY)
"""Message types a grid delivers to a ClientApp (a type may carry an action: "train.x")."""

# -------------------------------------------------------- node config (set by the grid)
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
DEVICE_PREFIX = "device."
"""`device.<feature>` node-config entries: what a device says about itself (I-Prof's input)."""

# ------------------------------------------------------ instruction config (server → node)
SERVER_ROUND = "server-round"
LR = "lr"
LOCAL_EPOCHS = "local-epochs"
LOCAL_STEPS = "local-steps"
BATCH_SIZE = "batch-size"
MOMENTUM = "momentum"
WEIGHT_DECAY = "weight-decay"
PROXIMAL_MU = "proximal-mu"
PROFILING_ROUND = "profiling-round"
MODEL_VERSION = "model-version"
"""The model version an asynchronous task was sent (config), and the version reached (metric)."""

# ------------------------------------------------------------ reply metrics (node → server)
NUM_EXAMPLES = "num-examples"
"""Examples the node holds (FedAvg's weight). Required by weighted strategies; untrusted."""
EXAMPLES_PROCESSED = "examples-processed"
"""Examples the local training went through (epochs × partition, or steps × batch)."""
WORK_FLOPS = "work-flops"
"""Floating-point operations the task performed: the virtual grid's compute time divides it by
the device's speed. Optional: without it the grid charges num-examples × a fallback cost."""
COMPUTE_S = "compute-s"
"""Seconds the computation took on the device. The virtual grid replaces the host's measurement
with the device's virtual compute time, so profilers (I-Prof) see the simulated device."""
LABEL_COUNTS = "label-counts"
"""Per-class counts of the labels trained on (AdaSGD's similarity). Optional: without it the
update's similarity is 1 (no boost)."""
TRAIN_LOSS = "train_loss"
EVAL_LOSS = "eval_loss"
EVAL_ACC = "eval_acc"
