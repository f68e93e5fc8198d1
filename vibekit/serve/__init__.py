"""OpenAI-compatible HTTP server built only from vibekit's public API and AsyncEngine.

    from vibekit.serve import run_server
    run_server("dummy:tiny-llama", port=8000)      # or: vibekit serve dummy:tiny-llama
    # the engine runs in a core process of its own (EngineCoreClient) unless
    # engine_process=False (--no-engine-process): then on a thread (AsyncEngine)

Needs the `serve` extra (fastapi, uvicorn).
"""

from vibekit.serve.app import create_app
from vibekit.serve.engine_core import EngineCoreClient, load_engine
from vibekit.serve.server import run_server

__all__ = ["EngineCoreClient", "create_app", "load_engine", "run_server"]
