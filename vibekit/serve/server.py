"""run_server: load an Engine, serve it with uvicorn, in this process (an AsyncEngine) or in an
engine core process of its own (vibekit.serve.engine_core)."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("vibekit.serve")
_SPEECH_OPTIONS = {"max_num_seqs", "max_tokens", "max_audio_seconds", "page_size", "num_pages",
                   "num_cross_pages", "idle_timeout_s", "num_threads"}

# NOTE: chosen by measurement (benchmarks/RESULTS.md, "server: engine core process").
ENGINE_PROCESS_DEFAULT = True


def run_server(model: str, host: str = "127.0.0.1", port: int = 8000,
               served_model_name: str | None = None, dtype: str = "float32",
               device: str = "cpu", shutdown_timeout: float = 30.0, log_level: str = "info",
               max_body_bytes: int = 8 * 1024 * 1024, request_timeout: float | None = None,
               max_waiting: int | None = None, chat_template: str | None = None,
               num_prepare_threads: int = 2, engine_process: bool = ENGINE_PROCESS_DEFAULT,
               engine_stall_timeout: float | None = 60.0,
               grammar_compile_timeout: float | None = 60.0, stream_interval: int = 1,
               **engine_options: Any) -> None:
    """Serve `model` (an HF folder, "dummy:<preset>" or "zoo:<name>") until SIGINT/SIGTERM.

    engine_options go to Engine.from_pretrained (max_model_len, page_size, num_pages,
    max_num_seqs, max_num_batched_tokens, enable_prefix_caching, ...). On a signal, uvicorn
    stops accepting connections and waits up to `shutdown_timeout` seconds for open requests,
    then the engine aborts whatever is left and stops. chat_template: a Jinja file for a
    tokenizer that has none. The other options are create_app's. uvicorn uses uvloop and
    httptools when they are installed (the serve extra). engine_process: run the scheduler and
    model loop in a process of its own (EngineCoreClient), so HTTP work never shares their GIL;
    False: an engine thread in this process (AsyncEngine). engine_stall_timeout: seconds the
    engine core may hold requests without progress before it is killed and marked dead (its
    requests get 503 engine_stalled, /health turns 503; None: no check; engine_process only;
    see vibekit.serve.liveness). grammar_compile_timeout: seconds a response_format's grammar
    may take to compile before its request gets a 400 (None: no limit; the compile goes on in
    the background and is cached). stream_interval: tokens per streamed chunk after the first
    (see AsyncEngine; 1: every token).

    Example: `run_server("dummy:tiny-llama", port=8000, max_model_len=1024)`
    """
    import uvicorn

    from vibekit import AsyncEngine, Engine
    from vibekit.serve.app import create_app
    from vibekit.serve.speech import is_speech_model, run_speech_server
    from vibekit.serve.tuning import tune_process

    if is_speech_model(model):  # speech recognition: /v1/audio/transcriptions (serve/speech.py)
        speech_options = {k: v for k, v in engine_options.items() if k in _SPEECH_OPTIONS}
        return run_speech_server(model, host, port, served_model_name, dtype, device,
                                 log_level, max_body_bytes, **speech_options)

    served: Any
    if engine_process:
        from vibekit.serve.engine_core import EngineCoreClient, load_engine

        served = EngineCoreClient(load_engine, model, dtype, device, max_waiting=max_waiting,
                                  stall_timeout=engine_stall_timeout,
                                  grammar_compile_timeout=grammar_compile_timeout,
                                  stream_interval=stream_interval, **engine_options)
        where = f"engine core process {served.process.pid}"
        num_pages = served.num_pages
    else:
        served = AsyncEngine(Engine.from_pretrained(model, dtype=dtype, device=device,
                                                    **engine_options),
                             start=False, max_waiting=max_waiting,
                             grammar_compile_timeout=grammar_compile_timeout,
                             stream_interval=stream_interval)
        where = "engine thread in the server process"
        num_pages = served.engine.num_pages
    if chat_template is not None:  # rendered here, in the server process
        if served.tokenizer is None:
            served.shutdown(False, 0.0)
            raise ValueError(f"{model} has no tokenizer to give a chat template to")
        with open(chat_template) as f:
            served.tokenizer.chat_template = f.read()
    name = served_model_name or model
    app = create_app(served, name,
                     shutdown_timeout=shutdown_timeout, max_body_bytes=max_body_bytes,
                     request_timeout=request_timeout, num_prepare_threads=num_prepare_threads)
    tune_process()  # startup heap out of the collector's way (serve/tuning.py)
    logger.info("serving %s as %r on http://%s:%d (max_model_len %d, %d KV pages, %s)",
                model, name, host, port, served.config.max_model_len, num_pages, where)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=shutdown_timeout)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.draining = True  # /health turns 503 and new requests are refused
            super().handle_exit(sig, frame)

    Server(config).run()
