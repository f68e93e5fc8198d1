"""Engine.from_pretrained(..., device="mlx"): the same scheduler, predicted outputs, grammar masks
and prefix cache over the MLX model, with greedy tokens equal to HF transformers `generate` and
to vibekit's torch path (float32)."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest

from tests.runtime.conftest import FAMILIES, hf_greedy, make_checkpoint
from vibekit import Engine, SamplingParams

pytest.importorskip("mlx.core")

GREEDY = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)


def _prompts(n: int, vocab: int, seed: int = 1) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(rng.randint(1, 40))] for _ in range(n)]


@pytest.fixture(scope="module")
def engines():
    """(torch, mlx) engines on the same dummy weights, small pages so prefixes share pages."""
    opts = dict(page_size=4, num_pages=512, max_model_len=512, max_num_batched_tokens=64)
    return (Engine.from_pretrained("dummy:tiny-llama", **opts),
            Engine.from_pretrained("dummy:tiny-llama", device="mlx", **opts))


@pytest.mark.parametrize("family,tie", [(f, False) for f in sorted(FAMILIES)] + [("qwen3", True)])
def test_mlx_batched_greedy_equals_hf_generate_and_the_torch_engine(family, tie, tmp_path):
    hf = make_checkpoint(family, tmp_path, tie=tie)
    prompts = _prompts(4, 512)
    opts = dict(page_size=4, max_num_batched_tokens=64, max_model_len=256)
    outs = Engine.from_pretrained(tmp_path, device="mlx", **opts).generate(prompts, GREEDY)
    torch_outs = Engine.from_pretrained(tmp_path, **opts).generate(prompts, GREEDY)
    for prompt, out, ref in zip(prompts, outs, torch_outs):
        assert out.token_ids == hf_greedy(hf, prompt, 24)
        assert out.token_ids == ref.token_ids
    assert tie or len({t for o in outs for t in o.token_ids}) > 30, "degenerate greedy output"


def test_batched_equals_one_at_a_time(engines):
    _, engine = engines
    prompts = _prompts(6, 512, seed=5)
    batched = engine.generate(prompts, GREEDY)
    for prompt, out in zip(prompts, batched):
        assert engine.generate([prompt], GREEDY)[0].token_ids == out.token_ids


def test_predicted_outputs_give_the_plain_tokens_exact_and_edited(engines):
    _, engine = engines
    prompt = _prompts(1, 512, seed=9)[0]
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    plain = engine.generate([prompt], params)[0].token_ids
    edited = plain[:10] + [7, 8, 9] + plain[14:30]
    outs = engine.generate([prompt, prompt], params, predictions=[plain, edited])
    assert [o.token_ids for o in outs] == [plain, plain]
    # (The first token comes from the prefill and the last needs no draft.)
    assert outs[0].usage.accepted_prediction_tokens >= len(plain) - 2
    assert outs[0].usage.rejected_prediction_tokens == 0
    assert outs[1].usage.rejected_prediction_tokens > 0  # the edit was rolled back
    assert outs[1].usage.accepted_prediction_tokens >= 20


def test_seeded_sampling_penalties_and_guidance_equal_the_torch_engine(engines):
    torch_engine, engine = engines
    prompts = _prompts(4, 512, seed=3)
    params = [SamplingParams(max_tokens=16, temperature=0.8, seed=11, top_k=50),
              SamplingParams(max_tokens=16, temperature=0.0, repetition_penalty=1.3,
                             frequency_penalty=0.5, ignore_eos=True),
              SamplingParams(max_tokens=16, temperature=0.0, logit_bias={5: 100.0},
                             ignore_eos=True),
              SamplingParams(max_tokens=16, temperature=0.0, guidance_scale=1.5,
                             negative_prompt="The end", ignore_eos=True)]
    got = [o.token_ids for o in engine.generate(prompts, params)]
    assert got == [o.token_ids for o in torch_engine.generate(prompts, params)]
    assert got[2] == [5] * 16


class _HostCopyProcessor:
    """A processor with no MLX path that changes nothing: the runner must bring the logits to
    the host and sample there (ModelRunner.sample) instead of its argmax on MLX."""

    def __init__(self) -> None:
        self.num_applied = 0

    def start(self, batch):
        return self if batch.groups else None

    def apply(self, logits) -> None:
        self.num_applied += 1


def test_greedy_argmax_on_mlx_equals_sampling_on_the_host(engines):
    _, engine = engines
    host = Engine.from_pretrained("dummy:tiny-llama", device="mlx", page_size=4, num_pages=512,
                                  max_model_len=512, max_num_batched_tokens=64)
    processor = _HostCopyProcessor()
    host.add_logits_processor(processor)
    prompts = _prompts(3, 512, seed=12)
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)
    plain = [o.token_ids for o in engine.generate(prompts, params)]
    # A verify block too: the second request predicts its output with an edit in it.
    predictions = [None, plain[1][:8] + [3, 4] + plain[1][10:], plain[2]]
    for eng in (engine, host):
        assert [o.token_ids for o in eng.generate(prompts, params)] == plain
        outs = eng.generate(prompts, params, predictions=predictions)
        assert [o.token_ids for o in outs] == plain
        assert outs[1].usage.rejected_prediction_tokens > 0
    assert processor.num_applied > 0


SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 12},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "tags": {"type": "array", "items": {"enum": ["a", "bb", "ccc"]}, "maxItems": 3},
    "ok": {"type": "boolean"}}, "required": ["name", "age", "tags", "ok"],
    "additionalProperties": False}


@pytest.mark.parametrize("jump_forward", [True, False])
def test_json_schema_output_validates_and_equals_the_torch_path(engines, jump_forward):
    pytest.importorskip("xgrammar")
    torch_engine, engine = engines
    fmt = {"type": "json_schema", "json_schema": {"name": "user", "schema": SCHEMA,
                                                  "strict": True},
           "jump_forward": jump_forward}
    params = SamplingParams(max_tokens=200, temperature=0.0, response_format=fmt)
    prompts = ["A user: ", "x"]
    outs = engine.generate(prompts, params)
    refs = torch_engine.generate(prompts, params)
    for out, ref in zip(outs, refs):
        assert out.finish_reason == "stop", out.text
        jsonschema.validate(json.loads(out.text), SCHEMA)
        assert out.token_ids == ref.token_ids
    # With the constrained output as the prediction too (drafts cut by the grammar).
    predicted = engine.generate(prompts, params, predictions=[o.text for o in outs])
    assert [o.token_ids for o in predicted] == [o.token_ids for o in outs]


def test_prefix_reuse_and_no_page_leaks_after_abort(engines):
    _, engine = engines
    prefix = _prompts(1, 512, seed=4)[0] * 3  # long enough for several pages
    first = engine.generate([prefix + [1, 2]], GREEDY)[0]
    second = engine.generate([prefix + [1, 2]], GREEDY)[0]
    assert second.usage.cached_prompt_tokens >= len(prefix) - 4
    assert second.token_ids == first.token_ids
    manager = engine.cache.manager
    free = manager.num_free_pages
    rid = engine.add_request(prefix + [9], SamplingParams(max_tokens=100, ignore_eos=True))
    for _ in range(5):
        engine.step()
    assert manager.num_free_pages < free
    engine.abort(rid)
    assert manager.num_free_pages == free
    assert engine.cache.usage() == 0.0


def test_quantized_weights_agree_with_float_greedy():
    # A trained model (random dummy weights have logit margins too thin for any quantization).
    from vibekit.zoo.code_edit import make_edit_prompt

    code = "def mean(values):\n    total = 0\n    for v in values:\n        total += v\n" \
           "    return total / len(values)\n"
    prompts = [make_edit_prompt(t, code) for t in ("rename `total` to `acc`",
                                                  "add a docstring", "rename `values` to `xs`")]
    params = SamplingParams(max_tokens=64, temperature=0.0)
    ref = [o.token_ids for o in Engine.from_pretrained(
        "zoo:code-edit-tiny", device="mlx").generate(prompts, params)]
    for quant, floor in (("mlx-q8", 0.9), ("mlx-q4", 0.5)):
        q = Engine.from_pretrained("zoo:code-edit-tiny", device="mlx", quantization=quant)
        assert "QuantizedLinear" in repr(q.model) and "QuantizedEmbedding" in repr(q.model)
        got = [o.token_ids for o in q.generate(prompts, params)]
        # Agreement: the mean fraction of tokens before the first divergence.
        prefix = [next((i for i, (a, b) in enumerate(zip(r, g)) if a != b), len(r)) / len(r)
                  for r, g in zip(ref, got)]
        assert sum(prefix) / len(prefix) >= floor, (quant, prefix)


def test_options_the_mlx_backend_cannot_honour_are_refused():
    with pytest.raises(ValueError, match="'int8' is not supported"):
        Engine.from_pretrained("dummy:tiny-llama", device="mlx", quantization="int8")
    with pytest.raises(ValueError, match="not supported on device 'cpu'"):
        Engine.from_pretrained("dummy:tiny-llama", quantization="mlx-q4")
    with pytest.raises(ValueError, match="dense llama family"):
        Engine.from_pretrained("dummy:tiny-bamba", device="mlx")
