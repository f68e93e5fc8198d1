"""Fixtures: a small random unified model (every parameter non-zero, so no path is trivially the
identity) and the trained zoo model."""

from __future__ import annotations

import pytest
import torch

import vibekit.zoo
from vibekit.models.unified import UnifiedConfig, UnifiedFlowModel
from vibekit.zoo.digits_flow import WORDS


def random_unified_model(seed: int = 0) -> UnifiedFlowModel:
    torch.manual_seed(seed)
    config = UnifiedConfig(words=WORDS, hidden_size=64, num_layers=2, num_heads=4,
                           intermediate_size=128, max_prompt_len=7)
    model = UnifiedFlowModel(config)
    with torch.no_grad():
        for param in model.parameters():
            if not param.abs().sum():  # the zero-initialised modulation and output layers
                param.normal_(0.0, 0.2)
    return model.eval().requires_grad_(False)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tests run on one thread (the machines are shared); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model() -> UnifiedFlowModel:
    return random_unified_model()


@pytest.fixture(scope="session")
def zoo_model() -> UnifiedFlowModel:
    return vibekit.zoo.load("digits-flow")
