"""The contract between a ClientApp and the strategies: keys, reply checks, array payloads.

What a ClientApp sends back, by message type (keys in `fl.protocol.keys`):

- **train**: one `ArrayRecord` with the trained model (same names, shapes and dtypes as the
  model sent, finite values) and one `MetricRecord` with
  `num-examples` (required by strategies that weight by it: FedAvg, FedProx, TiFL's default
  aggregation; named by `weighted_by_key`, which every strategy here honours), and optionally
  `work-flops` (the time model; else num-examples × a fallback cost), `compute-s` (I-Prof),
  `examples-processed` (I-Prof) and `label-counts` (AdaSGD's boost; without it no boost).
- **evaluate**: one `MetricRecord` with `num-examples`, `eval_loss`, `eval_acc` (TiFL's
  adaptive policy reads `eval_acc`, or its `accuracy_key`).
- **query**: one `MetricRecord` of `device.<feature>` numbers (I-Prof's features).

Nothing a client reports is trusted: a reply that fails `reply_problem` is rejected with the
reason and counted, never aggregated.
"""

from fl.protocol import keys
from fl.protocol.payload import decode, npy_header
from fl.protocol.replies import reply_problem, split_replies

__all__ = ["decode", "keys", "npy_header", "reply_problem", "split_replies"]
