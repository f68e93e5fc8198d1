"""batch_invariant=True: on a deep, SmolLM-135M-shaped model (dummy weights), float32 and
bfloat16, every fast path gives exactly the tokens of plain one-at-a-time greedy decoding:
batching, exact and edited predictions (alone and batched), chunked prefill with a small token
budget, prefix-cache hits and preemption with recompute.

The default run uses 2 layers of the SmolLM width and 12 new tokens (a layer's numerics do not
change with depth; how many near-ties there are does); the slow variants run all 30 layers.
"""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vibekit import Engine, SamplingParams
from vibekit.config import CacheConfig, EngineConfig, SchedulerConfig, SpecConfig, resolve_dtype
from vibekit.models import load_model
from vibekit.models.dummy import DUMMY_PRESETS, hf_config_dict
from vibekit.ops.attention_cpu import attention_kernel_available
from vibekit.ops.linear import cpu_kernel_available
from vibekit.runtime.engine import engine_options

pytestmark = pytest.mark.skipif(
    not (cpu_kernel_available() and attention_kernel_available()),
    reason="the CPU kernels (AVX512 or AVX2) are unavailable here")

NUM_PROMPTS, PROMPT_LEN, MAX_TOKENS = 3, 128, 12
GREEDY = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)


def smollm_shape(tmp_path_factory, num_layers: int) -> str:
    config = dataclasses.replace(DUMMY_PRESETS["smollm-135m"], num_layers=num_layers)
    path = tmp_path_factory.mktemp(f"smollm{num_layers}") / "config.json"
    path.write_text(json.dumps(hf_config_dict(config)))
    return f"dummy:{path}"


def make_prompts(seed: int = 0) -> list[list[int]]:
    """128-token prompts; 0 and 2 share a 64-token prefix."""
    rng = random.Random(seed)
    prefixes = [[rng.randrange(1000, 40000) for _ in range(64)] for _ in range(2)]
    return [prefixes[i % 2] + [rng.randrange(1000, 40000) for _ in range(PROMPT_LEN - 64)]
            for i in range(NUM_PROMPTS)]


def edit(tokens: list[int], ops: list[tuple[str, int, int]]) -> list[int]:
    out = list(tokens)
    for kind, where, token in ops:
        i = where % (len(out) + 1)
        if kind == "replace" and i < len(out):
            out[i] = token
        elif kind == "insert":
            out.insert(i, token)
        elif kind == "delete" and i < len(out):
            del out[i]
    return out


class Exactness:
    """One model and dtype: the plain reference and engines for each path, built lazily."""

    def __init__(self, source: str, dtype: str) -> None:
        self.source, self.dtype = source, dtype
        self.prompts = make_prompts()
        self._engines: dict[str, Engine] = {}
        self._model = self._model_config = self._tokenizer = None
        plain = self.engine("plain")
        # The reference: each request alone, whole prompt in one step, no cache, no prediction.
        self.expected = [plain.generate([p], GREEDY)[0].token_ids for p in self.prompts]

    def engine(self, name: str, **options) -> Engine:
        """An engine with these options over the one model (built once: packing is idempotent)."""
        if name not in self._engines:
            options = {**dict(batch_invariant=True, max_model_len=512, page_size=16,
                              enable_prefix_caching=False, num_draft_tokens=8), **options}
            if self._model is None:
                self._model, self._model_config, self._tokenizer = load_model(
                    self.source, dtype=resolve_dtype(self.dtype), device="cpu", seed=0)
            groups = engine_options()
            sub = {"cache": CacheConfig, "scheduler": SchedulerConfig, "spec": SpecConfig}
            config = EngineConfig(
                model=self._model_config, dtype=resolve_dtype(self.dtype), device="cpu",
                **{k: v for k, v in options.items() if k in groups["engine"]},
                **{g: cls(**{k: v for k, v in options.items() if k in groups[g]})
                   for g, cls in sub.items()})
            self._engines[name] = Engine(self._model, config, self._tokenizer)
        return self._engines[name]

    def run(self, name: str, prompts=None, predictions=None, **options) -> list[list[int]]:
        engine = self.engine(name, **options)
        outs = engine.generate(prompts or self.prompts, GREEDY, predictions=predictions)
        return [o.token_ids for o in outs]

    def edited(self, seed: int) -> list[list[int]]:
        rng = random.Random(seed)
        preds = []
        for tokens in self.expected:
            ops = [(rng.choice(["replace", "insert", "delete"]), rng.randrange(MAX_TOKENS),
                    rng.randrange(1000, 40000)) for _ in range(3)]
            preds.append(edit(tokens, ops))
        return preds


def check_every_path(ex: Exactness) -> None:
    expected = ex.expected
    assert len({t for out in expected for t in out}) > MAX_TOKENS, "degenerate outputs"
    assert ex.run("plain") == expected, "batched"
    exact = [list(t) for t in expected]
    alone = [ex.run("plain", [p], [pred])[0] for p, pred in zip(ex.prompts, exact)]
    assert alone == expected, "exact prediction, one at a time"
    assert ex.run("plain", predictions=exact) == expected, "exact predictions, batched"
    edited = ex.edited(seed=1)
    alone = [ex.run("plain", [p], [pred])[0] for p, pred in zip(ex.prompts, edited)]
    assert alone == expected, "edited prediction, one at a time"
    assert ex.run("plain", predictions=edited) == expected, "edited predictions, batched"
    assert ex.run("chunked", max_num_batched_tokens=19) == expected, "chunked prefill"
    cached = ex.engine("cached", enable_prefix_caching=True)
    assert ex.run("cached", ex.prompts[:2]) == expected[:2]
    # Prompts 0-1 now hit 7 full pages (their whole prompt but the last page), prompt 2 the
    # 64-token prefix it shares with prompt 0.
    again = cached.generate(ex.prompts, GREEDY, predictions=edited)
    assert [o.usage.cached_prompt_tokens for o in again] == [112, 112, 64]
    assert [o.token_ids for o in again] == expected, "after prefix-cache hits"
    # 17 pages of 16: two 128-token prompts (8 pages each) are admitted, but both cannot grow
    # past 128 tokens (9 pages each), so one is preempted and later recomputed (the third
    # waits).
    tight = ex.engine("tight", num_pages=17, max_model_len=160)
    assert [o.token_ids for o in tight.generate(ex.prompts, GREEDY)] == expected, "preemption"
    assert tight.scheduler.num_preemptions > 0


_SHALLOW: dict[str, Exactness] = {}


def _shallow(tmp_path_factory, dtype: str) -> Exactness:
    if dtype not in _SHALLOW:
        _SHALLOW[dtype] = Exactness(smollm_shape(tmp_path_factory, 2), dtype)
    return _SHALLOW[dtype]


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def shallow(request, tmp_path_factory):
    return _shallow(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def shallow_fp32(tmp_path_factory):
    return _shallow(tmp_path_factory, "float32")


def test_every_fast_path_gives_the_plain_tokens(shallow):
    check_every_path(shallow)


edits = st.lists(st.tuples(st.sampled_from(["replace", "insert", "delete"]),
                           st.integers(0, MAX_TOKENS), st.integers(1000, 40000)),
                 min_size=1, max_size=4)


def check_edited_prediction(ex: Exactness, ops, which: int, batched: bool) -> None:
    pred = edit(ex.expected[which], ops)
    if batched:  # the edited request verified alongside exact predictions of the others
        preds = [list(t) for t in ex.expected]
        preds[which] = pred
        assert ex.run("plain", predictions=preds) == ex.expected
    else:
        assert ex.run("plain", [ex.prompts[which]], [pred]) == [ex.expected[which]]


@settings(max_examples=5, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=edits, which=st.integers(0, NUM_PROMPTS - 1), batched=st.booleans())
def test_any_edited_prediction_gives_the_plain_tokens(shallow_fp32, ops, which, batched):
    check_edited_prediction(shallow_fp32, ops, which, batched)


@pytest.fixture(scope="module")
def deep_bf16(tmp_path_factory):
    return Exactness(smollm_shape(tmp_path_factory, 30), "bfloat16")


@pytest.mark.slow
@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=edits, which=st.integers(0, NUM_PROMPTS - 1), batched=st.booleans())
def test_any_edited_prediction_gives_the_plain_tokens_at_full_depth(deep_bf16, ops, which,
                                                                     batched):
    check_edited_prediction(deep_bf16, ops, which, batched)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_every_fast_path_gives_the_plain_tokens_at_full_depth(tmp_path_factory, dtype):
    check_every_path(Exactness(smollm_shape(tmp_path_factory, 30), dtype))


def test_seeded_sampling_is_bit_identical_alone_and_batched(shallow_fp32):
    params = SamplingParams(max_tokens=8, temperature=0.9, top_p=0.95, top_k=40, seed=7,
                            ignore_eos=True)
    engine = shallow_fp32.engine("plain")
    alone = engine.generate(shallow_fp32.prompts[:1], params)[0].token_ids
    batched = engine.generate(shallow_fp32.prompts, params)[0].token_ids
    assert alone == batched


def test_the_mode_chooses_the_invariant_kernels(shallow_fp32):
    engine = shallow_fp32.engine("plain")
    assert engine.config.attention_backend == "cpu" and engine.linear_backend == "cpu"


def test_conflicting_options_are_refused_with_what_is_allowed():
    with pytest.raises(ValueError, match="attention_backend='torch' must be 'auto' or 'cpu'"):
        Engine.from_pretrained("dummy:tiny-llama", batch_invariant=True,
                               attention_backend="torch")
    with pytest.raises(ValueError, match="linear_backend='torch' must be 'auto' or 'cpu'"):
        Engine.from_pretrained("dummy:tiny-llama", batch_invariant=True, linear_backend="torch")


def test_an_unavailable_kernel_is_a_clear_error(monkeypatch):
    import vibekit.ops.attention_cpu as attention_cpu
    from vibekit.ops.cpu_extension import CpuExtension

    kernel = CpuExtension("attention_cpu.cpp", "paged attention kernel", required_flags=(
        "avx512f", "no_such_flag"), avx2=False)
    monkeypatch.setattr(attention_cpu, "_KERNEL", kernel)
    with pytest.raises(RuntimeError, match="needs the CPU paged attention kernel.*"
                                           "CPU lacks .*no_such_flag"):
        Engine.from_pretrained("dummy:tiny-llama", batch_invariant=True)


def test_hybrid_models_are_refused():
    with pytest.raises(ValueError, match="covers attention-only llama-family models"):
        Engine.from_pretrained("dummy:tiny-qwen3.5", batch_invariant=True)


