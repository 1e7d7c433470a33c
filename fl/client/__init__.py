"""The ClientApp every node runs (`fl.client.app`), and what it needs: its workspace, local
training, data poisoning when a Byzantine wrapper asks for it, and its part of the config.

Importing this package is what a SuperNode pays: it loads torch, Flower's client side, the
data and model packages and nothing of the simulator or the strategies (a test checks it).
"""

from fl.client.app import app
from fl.client.config import ClientConfig, TrainConfig
from fl.client.workspace import (
    TrainTask,
    Workspace,
    _model,
    clear_workspaces,
    federated_data,
    finish_train,
    label_classes,
    local_training,
    make_workspace,
    prepare_train,
    train_reply,
    workspace,
)

__all__ = [
    "ClientConfig",
    "TrainConfig",
    "TrainTask",
    "Workspace",
    "_model",
    "app",
    "clear_workspaces",
    "federated_data",
    "finish_train",
    "label_classes",
    "local_training",
    "make_workspace",
    "prepare_train",
    "train_reply",
    "workspace",
]
