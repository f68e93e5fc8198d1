"""The serving runtime: requests, scheduler, model runner, engine."""

from vibekit.core import RequestOutput, SamplingParams, Usage
from vibekit.runtime.async_engine import (
    AsyncEngine,
    EngineClosedError,
    EngineDeadError,
    RequestStream,
)
from vibekit.runtime.engine import Engine

__all__ = ["AsyncEngine", "Engine", "EngineClosedError", "EngineDeadError", "RequestOutput",
           "RequestStream", "SamplingParams", "Usage"]
