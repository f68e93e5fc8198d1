"""The engine's request API: stops, streaming, aborts, bad input, no leaks."""

from __future__ import annotations

import random

import pytest

from vibekit import Engine, InvalidRequestError, SamplingParams


@pytest.fixture(scope="module")
def engine(llama_ckpt):
    path, _ = llama_ckpt
    return Engine.from_pretrained(path, page_size=4, num_pages=64, max_model_len=128)


def _greedy(n: int, **kw) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0, **kw)


def test_stop_token_ids_and_max_tokens(engine):
    prompt = [5, 6, 7, 8]
    full = engine.generate([prompt], _greedy(20, ignore_eos=True))[0].token_ids
    stop_at = full[7]
    first = full.index(stop_at)
    out = engine.generate([prompt], _greedy(20, stop_token_ids=[stop_at]))[0]
    assert out.token_ids == full[:first + 1]
    assert out.finish_reason == "stop"
    out = engine.generate([prompt], _greedy(5))[0]
    assert out.token_ids == full[:5] and out.finish_reason == "length"


def test_generation_stops_at_max_model_len(engine):
    out = engine.generate([list(range(1, 120))], _greedy(100, ignore_eos=True))[0]
    assert len(out.token_ids) == 128 - 119
    assert out.finish_reason == "length"


def test_bad_requests_fail_at_the_boundary_and_engine_keeps_serving(engine, llama_ckpt):
    rid = engine.add_request([1, 2, 3], _greedy(8, ignore_eos=True))
    with pytest.raises(InvalidRequestError, match="empty"):
        engine.add_request([], _greedy(4))
    with pytest.raises(InvalidRequestError, match="max_model_len is 128"):
        engine.add_request(list(range(200)), _greedy(4))
    with pytest.raises(InvalidRequestError, match="outside the vocabulary"):
        engine.add_request([1, 99999], _greedy(4))
    with pytest.raises(InvalidRequestError, match="temperature"):
        SamplingParams(temperature=-1.0)
    with pytest.raises(InvalidRequestError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        SamplingParams(max_tokens=0)
    with pytest.raises(InvalidRequestError, match="KV pages"):
        Engine.from_pretrained(llama_ckpt[0], page_size=4, num_pages=4,
                               max_model_len=128).add_request([1] * 20, _greedy(10))
    outs = []
    while engine.has_unfinished_requests():
        outs += engine.step()
    assert outs[-1].request_id == rid and len(outs[-1].token_ids) == 8


def test_abort_frees_pages_and_many_requests_leave_no_leak(engine):
    rng = random.Random(0)
    pool = engine.cache.manager.pool
    for round_ in range(5):
        ids = [engine.add_request([rng.randrange(512) for _ in range(rng.randint(1, 30))],
                                  _greedy(rng.randint(1, 20), ignore_eos=True))
               for _ in range(12)]
        for _ in range(3):
            engine.step()
        for rid in ids[::3]:
            engine.abort(rid)
        while engine.has_unfinished_requests():
            engine.step()
        assert pool.num_used_pages == 0, f"pages leaked in round {round_}"
    assert pool.num_free_pages == engine.num_pages


def test_stream_deltas_add_up_to_the_final_output(llama_ckpt):
    path, _ = llama_ckpt
    engine = Engine.from_pretrained(path, page_size=4)
    ids, deltas = [], []
    for out in engine.stream([3, 4, 5], _greedy(12, ignore_eos=True)):
        ids += out.delta_token_ids
        deltas.append(out)
    assert ids == deltas[-1].token_ids and len(ids) == 12
    assert deltas[-1].finished
    # each output is a snapshot of its step, read here after the request grew past it
    seen: list[int] = []
    for out in deltas:
        seen += out.delta_token_ids
        assert out.token_ids == seen and out.usage.completion_tokens == len(seen)


def test_request_output_snapshot_reads_its_moment_and_behaves_as_the_dataclass():
    import copy
    import dataclasses
    import pickle

    from vibekit.core.outputs import RequestOutput, Usage

    ids = [1, 2, 3, 4]
    lazy = RequestOutput.snapshot("r", [1, 2], ids, 2, 4, "ab", None, Usage(2, 2), [4], "b")
    ids += [5, 6]  # the source grows after the snapshot
    eager = RequestOutput("r", [1, 2], [3, 4], "ab", None, Usage(2, 2), [4], "b")
    assert lazy == eager and repr(lazy) == repr(eager)

    def fresh():  # each check reads a snapshot nobody has read yet
        return RequestOutput.snapshot("r", [1, 2], ids, 2, 6, "ab", None, Usage(2, 2), [4], "b")

    assert pickle.loads(pickle.dumps(fresh())).token_ids == [3, 4, 5, 6]
    assert copy.deepcopy(fresh()).token_ids == [3, 4, 5, 6]
    assert dataclasses.replace(fresh(), text="x").token_ids == [3, 4, 5, 6]
    assert dataclasses.asdict(fresh())["token_ids"] == [3, 4, 5, 6]
    merged = RequestOutput.snapshot("r", [1, 2], ids, 2, 5, "a", None, Usage(), [5], "") \
        .with_deltas([4, 5], "ab")
    ids.append(7)
    assert merged.token_ids == [3, 4, 5]
    assert (merged.delta_token_ids, merged.delta_text) == ([4, 5], "ab")
    assert eager.with_deltas([9], "z").token_ids == [3, 4]
    with pytest.raises(AttributeError, match="no attribute 'tokens'"):
        lazy.tokens  # noqa: B018


def test_stop_strings_cut_the_text_and_streaming_never_shows_them():
    engine = Engine.from_pretrained("dummy:tiny-llama")
    full = engine.generate(["hello world"], _greedy(100, ignore_eos=True))[0]
    assert len(full.text) > 12, "the byte tokenizer should decode the dummy output to text"
    stop = full.text[8:10]
    cut = full.text.index(stop)
    params = _greedy(100, ignore_eos=True, stop=[stop])
    out = engine.generate(["hello world"], params)[0]
    assert out.finish_reason == "stop" and out.text == full.text[:cut]
    streamed = "".join(o.delta_text for o in engine.stream("hello world", params))
    assert streamed == full.text[:cut]
