"""The serving runtime: requests, scheduler, model runner, engine."""

from vibekit.runtime.engine import Engine
from vibekit.runtime.outputs import RequestOutput, Usage
from vibekit.runtime.sampling_params import SamplingParams

__all__ = ["Engine", "RequestOutput", "SamplingParams", "Usage"]
