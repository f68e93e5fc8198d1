"""OpenAI-compatible HTTP server built only from vibekit's public API and AsyncEngine.

    from vibekit.serve import run_server
    run_server("dummy:tiny-llama", port=8000)      # or: vibekit serve dummy:tiny-llama

Needs the `serve` extra (fastapi, uvicorn).
"""

from vibekit.serve.app import create_app
from vibekit.serve.server import run_server

__all__ = ["create_app", "run_server"]
