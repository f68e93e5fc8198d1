"""The serving runtime: requests, scheduler, model runner, engine."""

from vibekit.runtime.async_engine import (
    AsyncEngine,
    EngineClosedError,
    EngineDeadError,
    RequestStream,
)
from vibekit.runtime.engine import Engine
from vibekit.runtime.outputs import RequestOutput, Usage
from vibekit.runtime.sampling_params import SamplingParams

__all__ = ["AsyncEngine", "Engine", "EngineClosedError", "EngineDeadError", "RequestOutput",
           "RequestStream", "SamplingParams", "Usage"]
