"""vibekit: hand-written, composable serving primitives for LLMs.

    from vibekit import Engine, SamplingParams
    engine = Engine.from_pretrained("dummy:tiny-llama")
    out = engine.generate(["Hello"], SamplingParams(max_tokens=16, temperature=0.0))[0]
"""

from vibekit.errors import InvalidRequestError
from vibekit.runtime import (
    AsyncEngine,
    Engine,
    EngineClosedError,
    EngineDeadError,
    RequestOutput,
    RequestStream,
    SamplingParams,
    Usage,
)

__version__ = "0.1.0"
__all__ = ["AsyncEngine", "Engine", "EngineClosedError", "EngineDeadError", "InvalidRequestError",
           "RequestOutput", "RequestStream", "SamplingParams", "Usage"]
