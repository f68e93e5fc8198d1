"""SpeechEngine: streaming speech recognition over an encoder-decoder model, many streams at once.

One step:
  1. streams past their deadline finish with "deadline" (their pages freed);
  2. every stream with new audio runs the encoder over its new whole frames (the encoder keeps
     the left context it needs; see models/moonshine_streaming_encoder.py) and writes the
     cross-attention K/V of the outputs that became final into its cross pages; a stream whose
     encoded audio grew restarts its hypothesis (the decoder attends to all encoder outputs,
     so every decoder state changes) and drops its self-attention pages;
  3. one decoder token for every running hypothesis, as one ragged batch over both page pools
     (continuous batching: streams join and leave between steps);
  4. a TranscriptOutput for every stream that changed.
The final transcript of a stream is the hypothesis decoded after its end of stream over all of
its audio, i.e. exactly what decoding the whole recording in one pass gives.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vibekit.config import resolve_dtype
from vibekit.core.forward_batch import ForwardBatch, SeqChunk
from vibekit.core.request import Request
from vibekit.core.sampling_params import SamplingParams
from vibekit.core.transcript import TranscriptOutput
from vibekit.errors import InvalidRequestError
from vibekit.kvcache.encoder_decoder import EncoderDecoderCache
from vibekit.models.linear import pack_linears
from vibekit.runtime.audio import check_samples


@dataclass(eq=False)
class _Stream:
    req: Request  # token_ids = [decoder start] + the current hypothesis
    encoder_state: Any
    max_tokens: int
    idle_timeout_s: float
    last_audio_at: float
    pending: list[torch.Tensor] = field(default_factory=list)  # samples not yet encoded
    num_pending: int = 0
    num_samples: int = 0  # samples received
    ended: bool = False
    flushed: bool = False  # the encoder ran with final=True
    hyp_outputs: int = 0  # encoder outputs the current hypothesis decodes over (-1: none yet)
    revision: int = 0
    hyp_done: bool = True
    hyp_reason: str | None = None
    emitted_text: str = ""
    emitted_revision: int = 0
    waiting_chunks: list[float] = field(default_factory=list)  # arrivals not yet covered
    covered_chunks: list[float] = field(default_factory=list)  # covered, awaiting a token


class SpeechEngine:
    """Streaming ASR engine: feed audio as it arrives, read partial transcripts every step.

    Example::

        engine = SpeechEngine.from_pretrained("path/to/moonshine_streaming_folder")
        rid = engine.add_request(stream=True)             # audio will arrive in chunks
        engine.append_audio(rid, chunk)                   # float32 [-1, 1], 16 kHz mono
        for out in engine.step(): print(out.revision, out.text)
        engine.end_audio(rid)
        while engine.has_unfinished_requests(): outs = engine.step()   # last: is_final
        engine.transcribe([samples])[0].text              # whole recordings, one call
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any = None, *, page_size: int = 16,
                 max_num_seqs: int = 64, max_tokens: int = 64, max_audio_seconds: float = 30.0,
                 num_pages: int | None = None, num_cross_pages: int | None = None,
                 idle_timeout_s: float = 30.0, attention_backend: str = "auto",
                 linear_backend: str = "auto", num_threads: int | None = None,
                 max_num_batched_frames: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_num_batched_frames is not None and max_num_batched_frames < 1:
            raise ValueError(f"max_num_batched_frames must be >= 1 (or None: no limit), got "
                             f"{max_num_batched_frames}")
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        # Prepacked projections for the CPU kernel where it builds (else nn.Linear); once.
        self.linear_backend = pack_linears(model, linear_backend)
        self.model = model
        self.config = c = model.config
        self.tokenizer = tokenizer
        self.clock = clock
        self.sample_rate = c.sample_rate
        self.frame_len = c.frame_len
        self.max_num_seqs = max_num_seqs
        # NOTE: the encoder is exact for any split of the audio, so a budget only delays frames
        self.max_num_batched_frames = max_num_batched_frames
        self.max_tokens = max_tokens
        self.idle_timeout_s = idle_timeout_s
        self.attention_backend = attention_backend
        self.eos = frozenset(c.eos_token_ids)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.max_outputs = min(model.max_encoder_outputs(),
                               math.ceil(max_audio_seconds * self.sample_rate
                                         / c.samples_per_output))
        self.max_audio_samples = self.max_outputs * c.samples_per_output
        if num_pages is None:
            num_pages = max_num_seqs * (math.ceil((max_tokens + 1) / page_size) + 1)
        if num_cross_pages is None:
            num_cross_pages = max_num_seqs * math.ceil(self.max_outputs / page_size)
        self.cache = EncoderDecoderCache(model.kv_spec(), num_pages, num_cross_pages, page_size,
                                         self.dtype, self.device)
        self.page_size = page_size
        self.streams: dict[str, _Stream] = {}
        self._ids = itertools.count()
        self._arrivals = itertools.count()

    @classmethod
    def from_pretrained(cls, source: str, dtype: str | torch.dtype = "float32",
                        device: str = "cpu", **options: Any) -> SpeechEngine:
        """An HF moonshine_streaming folder, "zoo:<name>", or "dummy:<preset>" (random
        weights, `seed`; presets in vibekit.models.speech_dummy). Options: page_size,
        max_num_seqs, max_tokens (per hypothesis; default: the folder's generation_config
        max_length - 1, as HF generate, else 64), max_audio_seconds, num_pages,
        num_cross_pages, idle_timeout_s, attention_backend, linear_backend ("auto": the
        prepacked CPU kernel where it builds; "torch"), num_threads, max_num_batched_frames
        (new 5 ms frames encoded per step over all streams, oldest stream first; None: all)."""
        from vibekit.models.loader import load_model
        from vibekit.models.registry import build_model, config_from_hf
        from vibekit.models.speech_dummy import SPEECH_DUMMY_PRESETS, speech_dummy_hf_model
        from vibekit.models.tokenizer import byte_level_tokenizer

        seed = options.pop("seed", 0)
        if source.startswith("dummy:") and source[len("dummy:"):] in SPEECH_DUMMY_PRESETS:
            hf = speech_dummy_hf_model(source[len("dummy:"):], seed)
            config = config_from_hf(hf.config.to_dict())
            model = build_model(config, resolve_dtype(dtype), device)
            model.load_weights(hf.state_dict().items())
            tokenizer = None
        else:
            model, config, tokenizer = load_model(source, resolve_dtype(dtype), device)
        if not hasattr(model, "write_cross_kv"):
            raise ValueError(f"{source!r} is a {config.model_type} model, not an "
                             "encoder-decoder speech model (supported: moonshine_streaming)")
        if tokenizer is None and config.vocab_size >= 259:
            tokenizer = byte_level_tokenizer(config.vocab_size)
        if "max_tokens" not in options:
            # HF generate stops at the checkpoint's generation_config max_length (the decoder
            # start token included); the same default gives the same transcripts
            limit = _generation_max_length(source)
            if limit is not None:
                options["max_tokens"] = max(1, min(limit - 1, config.max_position_embeddings - 1))
        return cls(model, tokenizer, **options)

    # -- requests -------------------------------------------------------------------------------

    def add_request(self, audio=None, *, stream: bool = False, sample_rate: int | None = None,
                    request_id: str | None = None, max_tokens: int | None = None,
                    idle_timeout_s: float | None = None) -> str:
        """Queue a recognition request. stream=False: `audio` is the whole recording.
        stream=True: `audio` (optional) is the first chunk; more come by `append_audio`, the
        end by `end_audio`. Raises InvalidRequestError for bad audio or parameters."""
        request_id = request_id if request_id is not None else f"asr-{next(self._ids)}"
        if request_id in self.streams:
            raise InvalidRequestError(f"request_id {request_id!r} is already running")
        max_tokens = self.max_tokens if max_tokens is None else max_tokens
        if not 1 <= max_tokens <= self.config.max_position_embeddings - 1:
            limit = self.config.max_position_embeddings - 1
            raise InvalidRequestError(f"max_tokens must be in [1, {limit}], got {max_tokens}")
        if audio is None and not stream:
            raise InvalidRequestError("a non-streaming request needs its audio")
        samples = check_samples([] if audio is None else audio, sample_rate, self.sample_rate)
        if audio is None:
            samples = None
        start = self.config.decoder_start_token_id
        req = Request(request_id, [start], SamplingParams(max_tokens=max_tokens, temperature=0.0),
                      arrival_index=next(self._arrivals))
        s = _Stream(req, self.model.encoder.new_stream(), max_tokens,
                    self.idle_timeout_s if idle_timeout_s is None else idle_timeout_s,
                    self.clock())
        if samples is not None:
            self._check_length(s, samples)
        self.cache.add(req)
        self.streams[request_id] = s
        if samples is not None:
            self._push(s, samples)
        if not stream:
            self.end_audio(request_id)
        return request_id

    def append_audio(self, request_id: str, samples, sample_rate: int | None = None,
                     arrived_at: float | None = None) -> None:
        """Append a chunk of samples (1-D, float in [-1, 1] or int16) to a streaming request.
        arrived_at: when the chunk arrived on the engine's clock (default now), the start of
        its chunk latency."""
        s = self._get(request_id)
        if s.ended:
            raise InvalidRequestError(f"request {request_id!r}: audio chunk after end of stream")
        x = check_samples(samples, sample_rate, self.sample_rate)
        self._check_length(s, x)
        self._push(s, x, arrived_at)

    def end_audio(self, request_id: str) -> None:
        """No more audio for this request: its final transcript follows."""
        s = self._get(request_id)
        if s.ended:
            raise InvalidRequestError(f"request {request_id!r}: end of stream was already sent")
        if s.num_samples == 0:
            self.abort(request_id)
            raise InvalidRequestError(f"request {request_id!r}: the audio is empty (0 samples); "
                                      "send at least one sample before ending the stream")
        s.ended = True
        partial = s.num_pending % self.frame_len
        if partial:
            # NOTE: HF's processor pads to whole frames and masks the padding; the encoder then
            # zeroes the embedding of the partial last frame, which is the embedding of a frame
            # of zeros: so the partial frame's samples become zeros.
            x = torch.cat(s.pending)
            s.pending = [x[:x.numel() - partial], torch.zeros(self.frame_len)]
            s.num_pending += self.frame_len - partial

    def abort(self, request_id: str) -> None:
        """Drop a request and free its pages (no output follows). Unknown ids are ignored."""
        s = self.streams.pop(request_id, None)
        if s is not None:
            self.cache.free(s.req, finished=False)

    def has_unfinished_requests(self) -> bool:
        return bool(self.streams)

    def transcribe(self, audios: Sequence, max_tokens: int | None = None,
                   sample_rate: int | None = None) -> list[TranscriptOutput]:
        """Whole recordings -> their final transcripts (batched like any streams)."""
        ids = [self.add_request(a, sample_rate=sample_rate, max_tokens=max_tokens)
               for a in audios]
        final: dict[str, TranscriptOutput] = {}
        while len(final) < len(ids):
            for out in self.step():
                if out.finished and out.request_id in ids:
                    final[out.request_id] = out
        return [final[i] for i in ids]

    def stats(self) -> dict[str, Any]:
        return {"num_streams": len(self.streams), **self.cache.stats()}

    # -- the step -------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> list[TranscriptOutput]:
        outputs: list[TranscriptOutput] = []
        now = self.clock()
        for s in list(self.streams.values()):
            if not s.ended and now - s.last_audio_at > s.idle_timeout_s:
                outputs.append(self._finish(s, "deadline", error=(
                    f"no audio and no end of stream for {s.idle_timeout_s:g} s "
                    "(idle_timeout_s)")))
        self._encode([s for s in self.streams.values()
                      if s.num_pending >= self.frame_len or (s.ended and not s.flushed)])
        decoded = self._decode()
        now = self.clock()
        for s in list(self.streams.values()):
            if s in decoded:
                outputs.append(self._output(s, now))
            if s.ended and s.flushed and s.hyp_done and s.hyp_outputs == self._num_outputs(s):
                outputs.append(self._finish(s, s.hyp_reason or "stop"))
        return outputs

    def _encode(self, streams: list[_Stream]) -> None:
        """Run the encoder over the new whole frames of these streams (one batch) and write
        the cross K/V of the outputs that became final."""
        batch, samples, final = [], [], []
        budget = self.max_num_batched_frames
        for s in sorted(streams, key=lambda s: s.req.arrival_index):
            num_frames = s.num_pending // self.frame_len
            if budget is not None:
                num_frames = min(num_frames, budget)
            usable = num_frames * self.frame_len
            if usable == 0 and s.num_pending:
                continue  # the step's frame budget is spent: this stream waits
            bound = self._output_bound(s.encoder_state.num_samples + usable)
            if not self.cache.can_append_encoder(s.req, bound - self._num_outputs(s)):
                continue  # cross pages are full: this stream's audio waits for a later step
            x = torch.cat(s.pending) if s.pending else torch.zeros(0)
            s.pending = [x[usable:]] if x.numel() > usable else []
            s.num_pending -= usable
            if budget is not None:
                budget -= num_frames
            batch.append(s)
            samples.append(x[:usable].to(self.device, self.dtype))
            final.append(s.ended and s.num_pending == 0)
        if not batch:
            return
        outs = self.model.encoder.step_many([s.encoder_state for s in batch], samples, final)
        frames, positions, slots = [], [], []
        for s, out, last in zip(batch, outs, final):
            s.flushed = last
            if out.shape[0]:
                start = self._num_outputs(s)
                slots.append(self.cache.append_encoder(s.req, out.shape[0]))
                positions.append(torch.arange(start, start + out.shape[0]))
                frames.append(out)
        if frames:
            backend = "ref" if self.attention_backend == "torch" else self.attention_backend
            self.model.write_cross_kv(torch.cat(frames), torch.cat(positions).to(self.device),
                                      torch.cat(slots), self.cache.cross.kv_caches, backend)
        for s in batch:
            if self._num_outputs(s) > s.hyp_outputs:
                self._restart(s)

    def _restart(self, s: _Stream) -> None:
        self.cache.restart_decoder(s.req)
        s.req.token_ids = list(s.req.prompt_token_ids)
        s.hyp_outputs = self._num_outputs(s)
        s.hyp_done, s.hyp_reason = False, None
        s.revision += 1
        s.covered_chunks += s.waiting_chunks
        s.waiting_chunks = []

    def _decode(self) -> set[_Stream]:
        running = sorted((s for s in self.streams.values() if not s.hyp_done),
                         key=lambda s: s.req.arrival_index)[: self.max_num_seqs]
        batch: list[_Stream] = []
        for s in running:
            req = s.req
            if req.num_computed_tokens == 0:
                if not self.cache.can_admit(req, self.cache.match(req), 1):
                    continue
                self.cache.admit(req, self.cache.match(req), 1)
            elif self.cache.can_allocate(req, 1):
                self.cache.allocate(req, 1)
            else:
                continue
            batch.append(s)
        if not batch:
            if running:  # nothing fits: give the youngest hypothesis's pages back, retry later
                self.cache.restart_decoder(running[-1].req)
                running[-1].req.token_ids = list(running[-1].req.prompt_token_ids)
            return set()
        chunks, cross = [], []
        for s in batch:
            req = s.req
            pos = req.num_computed_tokens
            chunks.append(SeqChunk([req.token_ids[pos]], pos, self.cache.page_ids(req)))
            cross.append(SeqChunk([0], s.hyp_outputs - 1, self.cache.cross_table(req).pages, 0))
        args = self.cache.forward_args([s.req for s in batch], self.device)
        fb = ForwardBatch.build(chunks, self.page_size, args["kv_caches"], self.device,
                                self.attention_backend)
        xb = ForwardBatch.build(cross, self.page_size, args["cross_kv_caches"], self.device,
                                self.attention_backend)
        tokens = self.model.decode(fb, xb).argmax(dim=-1).tolist()
        for s, token in zip(batch, tokens):
            req = s.req
            req.num_computed_tokens += 1
            req.token_ids.append(token)
            if token in self.eos:
                s.hyp_done, s.hyp_reason = True, "stop"
            elif len(req.token_ids) - 1 >= s.max_tokens:
                s.hyp_done, s.hyp_reason = True, "length"
        return set(batch)

    # -- outputs --------------------------------------------------------------------------------

    def _text(self, ids: list[int]) -> str:
        ids = [t for t in ids if t not in self.eos]
        if self.tokenizer is None:
            return " ".join(map(str, ids))
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _output(self, s: _Stream, now: float) -> TranscriptOutput:
        ids = s.req.token_ids[1:]
        text = self._text(ids)
        # NOTE: a trailing U+FFFD is half a multi-byte character: deltas wait for the rest.
        revised, delta = self._delta(s, text.rstrip("\ufffd"))
        latencies = [now - t for t in s.covered_chunks] if len(ids) == 1 else []
        if latencies:
            s.covered_chunks = []
        return TranscriptOutput(s.req.request_id, list(ids), text, s.revision, delta,
                                revised=revised, audio_seconds=self._seconds(s),
                                chunk_latencies=latencies)

    def _delta(self, s: _Stream, text: str) -> tuple[bool, str]:
        """(revised, delta_text) of text against what this stream emitted before."""
        same = s.revision == s.emitted_revision and text.startswith(s.emitted_text)
        delta = text[len(s.emitted_text):] if same else text
        s.emitted_text, s.emitted_revision = text, s.revision
        return not same, delta

    def _finish(self, s: _Stream, reason: str, error: str | None = None) -> TranscriptOutput:
        ids = s.req.token_ids[1:]
        text = self._text(ids)
        revised, delta = self._delta(s, text)
        out = TranscriptOutput(s.req.request_id, list(ids), text, s.revision, delta, revised,
                               is_final=error is None, finish_reason=reason, error=error,
                               audio_seconds=self._seconds(s))
        self.streams.pop(s.req.request_id, None)
        self.cache.free(s.req, finished=True)
        return out

    # -- helpers --------------------------------------------------------------------------------

    def _get(self, request_id: str) -> _Stream:
        s = self.streams.get(request_id)
        if s is None:
            raise InvalidRequestError(f"request {request_id!r} is not running (finished, "
                                      "aborted, past its deadline, or never added)")
        return s

    def _push(self, s: _Stream, x: torch.Tensor, arrived_at: float | None = None) -> None:
        s.last_audio_at = self.clock()
        if x.numel() == 0:
            return
        s.pending.append(x)
        s.num_pending += x.numel()
        s.num_samples += x.numel()
        s.waiting_chunks.append(s.last_audio_at if arrived_at is None else arrived_at)

    def _check_length(self, s: _Stream, x: torch.Tensor) -> None:
        total = s.num_samples + x.numel()
        if total > self.max_audio_samples:
            raise InvalidRequestError(
                f"request {s.req.request_id!r}: audio of {total / self.sample_rate:.2f} s "
                f"exceeds the {self.max_audio_samples / self.sample_rate:.2f} s this engine "
                "takes per stream (max_audio_seconds, and the model's position embedding)")

    def _num_outputs(self, s: _Stream) -> int:
        return self.cache.num_encoder_outputs(s.req)

    def _output_bound(self, num_samples: int) -> int:
        frames = num_samples // self.frame_len
        if frames == 0:
            return 0
        return ((frames - 1) // 2) // 2 + 1

    def _seconds(self, s: _Stream) -> float:
        return s.num_samples / self.sample_rate


def _generation_max_length(source: str) -> int | None:
    """max_length of an HF folder's (or zoo model's) generation_config.json, if it has one."""
    from vibekit.models.loader import generation_config

    value = generation_config(source).get("max_length")
    return value if isinstance(value, int) and value > 1 else None
