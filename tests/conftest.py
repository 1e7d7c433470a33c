"""Test-wide settings: offline hubs, one torch thread per test worker."""

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)
