"""vibekit: hand-written, composable serving primitives for LLMs.

    from vibekit import Engine, SamplingParams
    engine = Engine.from_pretrained("dummy:tiny-llama")
    out = engine.generate(["Hello"], SamplingParams(max_tokens=16, temperature=0.0))[0]
"""

from vibekit.core.transcript import TranscriptOutput
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
from vibekit.runtime.audio import read_wav, write_wav
from vibekit.runtime.speech_async import AsyncSpeechEngine, SpeechStream
from vibekit.runtime.speech_engine import SpeechEngine

__version__ = "0.1.0"
__all__ = ["AsyncEngine", "Engine", "EngineClosedError", "EngineDeadError", "InvalidRequestError",
           "RequestOutput", "RequestStream", "SamplingParams", "Usage",
           # streaming speech recognition
           "AsyncSpeechEngine", "SpeechEngine", "SpeechStream", "TranscriptOutput", "read_wav",
           "write_wav"]
