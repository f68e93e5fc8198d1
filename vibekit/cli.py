"""`vibekit` command line: `vibekit generate` (a batch generation demo) and `vibekit serve`
(an OpenAI-compatible HTTP server)."""

from __future__ import annotations

import argparse
import sys
import time

DEFAULT_MODEL = "dummy:smollm-135m"

DEMO_PROMPTS = [
    "Write a function that reverses a linked list.",
    "Explain paged attention in one paragraph.",
    "List three prime numbers greater than one hundred.",
    "What does a KV cache store?",
    "Summarise the plot of Hamlet.",
    "Translate 'good morning' into French.",
    "Why is decoding memory-bandwidth bound?",
    "Name a sorting algorithm with O(n log n) worst case.",
]
SYSTEM = "You are a concise assistant. Answer the user's question directly.\n\n" * 4


def _generate(args: argparse.Namespace) -> int:
    from vibekit import Engine, SamplingParams

    t0 = time.perf_counter()
    engine = Engine.from_pretrained(args.model, dtype=args.dtype, device=args.device,
                                    tensor_parallel_size=args.tensor_parallel_size)
    load_s = time.perf_counter() - t0
    prompts = args.prompt or [SYSTEM + p for p in DEMO_PROMPTS]
    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature,
                            seed=args.seed)
    print(f"model {args.model} ({engine.model_config.num_params() / 1e6:.1f}M params, "
          f"{args.dtype}, {args.device}) loaded in {load_s:.1f}s; "
          f"KV pool {engine.num_pages} pages of {engine.config.cache.page_size} tokens")
    if args.model.startswith("dummy:"):
        print("note: dummy weights are random, so the text below is meaningless; the demo shows "
              "batching, prefix caching and speed")
    t0 = time.perf_counter()
    outs = engine.generate(prompts, params)
    dt = time.perf_counter() - t0
    for i, out in enumerate(outs):
        text = out.text.replace("\n", "\\n")
        print(f"[{i}] {out.finish_reason:6s} cached={out.usage.cached_prompt_tokens:4d} "
              f"{len(out.token_ids):3d} tokens: {text[:100]!r}")
    num_out = sum(len(o.token_ids) for o in outs)
    num_cached = sum(o.usage.cached_prompt_tokens for o in outs)
    num_prompt = sum(o.usage.prompt_tokens for o in outs)
    print(f"{len(outs)} requests, {num_out} tokens in {dt:.2f}s: {num_out / dt:.1f} tok/s; "
          f"prefix cache served {num_cached}/{num_prompt} prompt tokens")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import logging

    if args.replicas is not None:
        return _serve_replicas(args)

    from vibekit.serve import run_server

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    options = {name: getattr(args, name) for name in
               ("max_model_len", "page_size", "num_pages", "max_num_seqs",
                "max_num_batched_tokens", "seed", "num_threads", "num_draft_tokens",
                "tensor_parallel_size")
               if getattr(args, name) is not None}
    if args.no_prefix_caching:
        options["enable_prefix_caching"] = False
    if args.batch_invariant:
        options["batch_invariant"] = True
    try:
        run_server(args.model, host=args.host, port=args.port,
                   served_model_name=args.served_model_name, dtype=args.dtype,
                   device=args.device, shutdown_timeout=args.shutdown_timeout,
                   log_level=args.log_level, max_body_bytes=args.max_body_bytes,
                   request_timeout=args.request_timeout, max_waiting=args.max_waiting,
                   chat_template=args.chat_template,
                   num_prepare_threads=args.prepare_threads,
                   engine_process=args.engine_process,
                   engine_stall_timeout=args.engine_stall_timeout or None,
                   grammar_compile_timeout=args.grammar_compile_timeout or None,
                   stream_interval=args.stream_interval, **options)
    except KeyboardInterrupt:  # uvicorn re-raises SIGINT after its graceful shutdown
        pass
    return 0


def _stream_interval(text: str) -> int:
    """argparse type of --stream-interval: an integer >= 1 (AsyncEngine's check)."""
    from vibekit.runtime.async_engine import check_stream_interval

    try:
        value = int(text)
        check_stream_interval(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1") from None
    return value


def _serve_replicas(args: argparse.Namespace) -> int:
    """`vibekit serve MODEL --replicas N`: N engines on Ray Serve behind one ingress."""
    import logging

    if args.stream_interval != 1:
        print("vibekit serve --replicas: --stream-interval is not supported with replicas yet",
              file=sys.stderr)
        return 2

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        from vibekit.serve.ray import run_ray_server
    except ImportError as exc:
        print(f"vibekit serve --replicas: {exc}", file=sys.stderr)
        return 2
    engine_options = {name: getattr(args, name) for name in
                      ("max_model_len", "page_size", "num_pages", "max_num_seqs",
                       "max_num_batched_tokens", "seed", "num_threads", "num_draft_tokens",
                       "tensor_parallel_size")
                      if getattr(args, name) is not None}
    engine_options.update(dtype=args.dtype, device=args.device)
    if args.no_prefix_caching:
        engine_options["enable_prefix_caching"] = False
    chat_template = None
    if args.chat_template is not None:
        with open(args.chat_template) as f:
            chat_template = f.read()
    app_options = dict(shutdown_timeout=args.shutdown_timeout, max_body_bytes=args.max_body_bytes,
                       request_timeout=args.request_timeout, max_waiting=args.max_waiting,
                       num_prepare_threads=args.prepare_threads)
    try:
        run_ray_server(args.model, args.replicas, host=args.host, port=args.port,
                       address=args.ray_address, served_model_name=args.served_model_name,
                       engine_options=engine_options, app_options=app_options,
                       chat_template=chat_template, router=args.router,
                       num_prefix_pages=args.route_prefix_pages,
                       load_factor=args.route_load_factor, replica_num_cpus=args.replica_cpus)
    except KeyboardInterrupt:  # SIGINT during Ray's shutdown
        pass
    return 0


def _engine_process_default() -> bool:
    from vibekit.serve.server import ENGINE_PROCESS_DEFAULT

    return ENGINE_PROCESS_DEFAULT


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows each option's default, unless it is None (then the help says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_ = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            help_ += " (default: %(default)s)"
        return help_


_TP_HELP = ("shard the model over N ranks (torch.distributed: gloo on cpu, NCCL on cuda); "
            "dense llama-family models only")


def _build_kernels(args: argparse.Namespace) -> int:
    import time

    from vibekit.ops.build_kernels import build_all

    t0 = time.perf_counter()
    status = build_all()
    for kernel, state in status.items():
        print(f"{kernel}: {state}")
    print(f"{time.perf_counter() - t0:.0f} s")
    return 0 if all(s.startswith("ok") for s in status.values()) else 1


def main(argv: list[str] | None = None) -> int:
    from vibekit import __version__

    parser = argparse.ArgumentParser(prog="vibekit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"vibekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate for a batch of prompts and report speed")
    gen.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                     help=f"HF folder, dummy:<preset> or zoo:<name> (default {DEFAULT_MODEL})")
    gen.add_argument("--prompt", action="append", help="a prompt (repeatable); default: a demo set")
    gen.add_argument("--max-tokens", type=int, default=32)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--dtype", default="float32")
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--tensor-parallel-size", type=int, default=1, help=_TP_HELP)
    gen.set_defaults(func=_generate)
    kern = sub.add_parser("build-kernels", help="build the CPU kernels now (the engine builds "
                          "each on first use; cached under ~/.cache/vibekit/kernels or "
                          "$VIBEKIT_KERNEL_CACHE)")
    kern.set_defaults(func=_build_kernels)
    srv = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API",
                         formatter_class=_DefaultsFormatter)
    srv.add_argument("model", help="HF folder, dummy:<preset> or zoo:<name>")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on")
    srv.add_argument("--port", type=int, default=8000, help="port to listen on")
    srv.add_argument("--served-model-name", default=None,
                     help="the `model` name clients use (default: MODEL as given)")
    srv.add_argument("--dtype", default="float32", help="weight and activation dtype")
    srv.add_argument("--device", default="cpu", help="torch device")
    engine_default = "(default: the engine's)"
    srv.add_argument("--max-model-len", type=int, default=None,
                     help=f"context length in tokens {engine_default}")
    srv.add_argument("--page-size", type=int, default=None,
                     help=f"tokens per KV page {engine_default}")
    srv.add_argument("--num-pages", type=int, default=None,
                     help=f"KV pages in the pool {engine_default}")
    srv.add_argument("--max-num-seqs", type=int, default=None,
                     help=f"requests running at once {engine_default}")
    srv.add_argument("--max-num-batched-tokens", type=int, default=None,
                     help=f"token budget of one step {engine_default}")
    srv.add_argument("--num-threads", type=int, default=None,
                     help=f"torch CPU threads {engine_default}; 1 is often best on a shared CPU")
    srv.add_argument("--num-draft-tokens", type=int, default=None,
                     help=f"draft block of predicted outputs {engine_default}")
    srv.add_argument("--no-prefix-caching", action="store_true",
                     help="turn off prefix caching (on by default)")
    srv.add_argument("--seed", type=int, default=None, help="engine seed (dummy weights, sampling)")
    srv.add_argument("--batch-invariant", action="store_true",
                     help="bit-identical tokens whatever the batch, prediction or prefill split "
                          "(CPU kernels; an error where they cannot build)")
    srv.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024,
                     help="larger request bodies get a 413 before they are read")
    srv.add_argument("--request-timeout", type=float, default=600.0,
                     help="seconds a request may take (queueing included) unless it sends "
                          "`timeout`; past it, 504")
    srv.add_argument("--max-waiting", type=int, default=256,
                     help="requests that may wait beyond --max-num-seqs; past it, 429")
    srv.add_argument("--chat-template", default=None,
                     help="a Jinja chat template file, for tokenizers without one")
    srv.add_argument("--prepare-threads", type=int, default=2,
                     help="worker threads that parse and tokenize requests")
    srv.add_argument("--tensor-parallel-size", type=int, default=None, help=_TP_HELP)
    srv.add_argument("--engine-process", action=argparse.BooleanOptionalAction,
                     default=_engine_process_default(),
                     help="run the scheduler and model loop in a process of their own (the "
                          "engine core); --no-engine-process: a thread of the server process")
    srv.add_argument("--engine-stall-timeout", type=float, default=60.0,
                     help="seconds the engine core may hold requests without progress before "
                          "it is killed and its requests fail with 503 engine_stalled (0: no "
                          "check; engine process only)")
    srv.add_argument("--grammar-compile-timeout", type=float, default=60.0,
                     help="seconds a response_format's grammar may take to compile before its "
                          "request gets a 400 (0: no limit); the compile finishes in the "
                          "background and is cached for the next request with that schema")
    srv.add_argument("--stream-interval", type=_stream_interval, default=1,
                     help="tokens per streamed chunk after the first: fewer, bigger SSE events "
                          "(less CPU per token) at the cost of the time between them; 1: every "
                          "token (not with --replicas)")
    ray_ = srv.add_argument_group(
        "replicas (Ray Serve; needs the `ray` extra)",
        "--replicas N runs N engines behind one OpenAI ingress on Ray Serve, each request routed "
        "to the replica most likely to hold its prompt's prefix (see README, Scaling out)")
    ray_.add_argument("--replicas", type=int, default=None,
                      help="engine replicas (default: one engine in this process, no Ray)")
    ray_.add_argument("--ray-address", default=None,
                      help="join this Ray cluster (default: start a local one)")
    ray_.add_argument("--replica-cpus", type=float, default=1.0,
                      help="Ray CPUs each replica reserves")
    ray_.add_argument("--router", default="prefix", choices=["prefix", "round_robin"],
                      help="prefix: consistent hashing with bounded loads on the prompt's first "
                           "KV pages; round_robin: the baseline")
    ray_.add_argument("--route-prefix-pages", type=int, default=4,
                      help="KV pages of the prompt the route key hashes")
    ray_.add_argument("--route-load-factor", type=float, default=1.25,
                      help="a replica takes its keys while it holds fewer than this x the mean "
                           "requests in flight (>= 1; higher keeps more affinity, see "
                           "benchmarks/RESULTS.md)")
    srv.add_argument("--shutdown-timeout", type=float, default=30.0,
                     help="seconds in-flight requests may run on after SIGINT/SIGTERM")
    srv.add_argument("--log-level", default="info", help="log level",
                     choices=["critical", "error", "warning", "info", "debug"])
    srv.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
