"""InputProcessor: a user's prompt, parameters and prediction -> a validated Request, or an
InvalidRequestError naming what was wrong and what is allowed (before anything is queued)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from vibekit.cfg.guidance import TextGuidance, guidance_policy
from vibekit.config import EngineConfig
from vibekit.core.request import Request
from vibekit.core.sampling_params import SamplingParams
from vibekit.core.tokenize import text_encoder
from vibekit.errors import InvalidRequestError
from vibekit.grammar import GrammarBackend
from vibekit.spec import PredictionDrafter


class InputProcessor:
    def __init__(self, config: EngineConfig, tokenizer: Any, num_pages: int,
                 grammars: GrammarBackend, supports_guidance: bool = True) -> None:
        self.config = config
        self.tokenizer = tokenizer
        if tokenizer is not None:
            self._encode = text_encoder(tokenizer)
            self._encode_plain = text_encoder(tokenizer, add_special_tokens=False)
        self.vocab_size = config.model.vocab_size
        self.num_pages = num_pages
        self.grammars = grammars
        self.supports_guidance = supports_guidance
        self.spec_options = dict(num_draft_tokens=config.spec.num_draft_tokens,
                                 adaptive=config.spec.adaptive_draft,
                                 max_draft_tokens=config.spec.max_draft_tokens)
        self._rng = random.Random(config.seed)

    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise InvalidRequestError(
                    "prompt is a string but this model has no tokenizer; pass token ids instead"
                )
            return self._encode(prompt)
        if isinstance(prompt, torch.Tensor):
            prompt = prompt.flatten().tolist()
        if not isinstance(prompt, (list, tuple)) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt
        ):
            raise InvalidRequestError("prompt must be a string or a list of integer token ids")
        return list(prompt)

    def make_request(self, request_id: str, arrival_index: int, prompt: str | Sequence[int],
                     params: SamplingParams | None,
                     prediction: str | Sequence[int] | None) -> Request:
        params = params if params is not None else SamplingParams()
        if not isinstance(params, SamplingParams):
            raise InvalidRequestError(f"params must be SamplingParams, got {type(params).__name__}")
        ids = self.encode(prompt)
        vocab = self.vocab_size
        max_len = self.config.max_model_len
        if not ids:
            raise InvalidRequestError("prompt is empty; it must have at least one token")
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise InvalidRequestError(
                f"prompt has token ids outside the vocabulary [0, {vocab}): {bad[:8]}"
            )
        if len(ids) >= max_len:
            raise InvalidRequestError(
                f"prompt has {len(ids)} tokens; max_model_len is {max_len} and at least one "
                f"token must be generated, so prompts may have at most {max_len - 1} tokens"
            )
        if params.stop_token_ids and any(t >= vocab for t in params.stop_token_ids):
            raise InvalidRequestError(f"stop_token_ids must be < vocab_size {vocab}")
        if params.logit_bias and any(t >= vocab for t in params.logit_bias):
            raise InvalidRequestError(
                f"logit_bias has token ids outside the vocabulary [0, {vocab}): "
                f"{sorted(t for t in params.logit_bias if t >= vocab)[:8]}"
            )
        if params.stop_strings and self.tokenizer is None:
            raise InvalidRequestError("stop strings need a tokenizer; this model has none")
        grammar = self.grammars.request_grammar(params.response_format)  # None: plain text
        total = min(len(ids) + params.max_tokens, max_len)
        pages = -(-total // self.config.cache.page_size)
        negative = self._negative_prompt(params, ids, prediction)
        if negative is not None:  # the companion's pages too
            pages += -(-(len(negative) + params.max_tokens) // self.config.cache.page_size)
        if pages > self.num_pages:
            raise InvalidRequestError(
                f"request needs {pages} KV pages ({total} tokens"
                f"{'' if negative is None else ' and its unconditional sequence'}) but the "
                f"pool has {self.num_pages}; lower max_tokens or enlarge the KV cache"
            )
        prediction_ids = self._encode_prediction(prediction, len(ids))
        generator = None
        if params.temperature > 0:
            seed = params.seed if params.seed is not None else self._rng.getrandbits(63)
            generator = torch.Generator(device=self.config.host_device).manual_seed(seed)
        req = Request(request_id=request_id, prompt_token_ids=ids, params=params,
                      generator=generator, arrival_index=arrival_index)
        req.max_len = total
        req.stop_ids = frozenset(params.stop_token_ids or ())
        if prediction_ids and self.config.spec.enable_predictions:
            req.drafter = PredictionDrafter(prediction_ids, **self.spec_options)
        req.grammar = grammar
        if negative is not None:
            companion = Request(request_id=f"{request_id}:uncond", prompt_token_ids=negative,
                                params=params, arrival_index=arrival_index)
            req.guidance = TextGuidance(companion,
                                        guidance_policy(params.guidance_cache, params.max_tokens),
                                        params.max_tokens, params.guidance_scale)
        return req

    def _negative_prompt(self, params: SamplingParams, ids: list[int],
                         prediction: Any) -> list[int] | None:
        """The unconditional sequence's start of a guided request (None: no guidance)."""
        if params.guidance_scale == 1.0:
            if params.negative_prompt is not None or params.guidance_cache is not None:
                raise InvalidRequestError("negative_prompt and guidance_cache need "
                                          "guidance_scale != 1.0 (1.0 is no guidance)")
            return None
        if not self.supports_guidance:
            raise InvalidRequestError(
                "guidance_scale needs a KV cache that runs a second sequence per request; this "
                "model's recurrent-state cache does not support it")
        if prediction is not None:
            raise InvalidRequestError("guidance_scale cannot be combined with a prediction: "
                                      "guided tokens are not verified in blocks")
        negative = ids[-1:] if not params.negative_prompt else self.encode(params.negative_prompt)
        bad = [t for t in negative if not 0 <= t < self.vocab_size]
        if bad:
            raise InvalidRequestError(f"negative_prompt has token ids outside the vocabulary "
                                      f"[0, {self.vocab_size}): {bad[:8]}")
        if len(negative) + params.max_tokens > self.config.max_model_len:
            raise InvalidRequestError(
                f"negative_prompt has {len(negative)} tokens + max_tokens {params.max_tokens}; "
                f"max_model_len is {self.config.max_model_len}")
        return negative

    def _encode_prediction(self, prediction: str | Sequence[int] | None,
                           prompt_len: int) -> list[int]:
        if prediction is None:
            return []
        if isinstance(prediction, str):
            if self.tokenizer is None:
                raise InvalidRequestError(
                    "prediction is a string but this model has no tokenizer; pass token ids"
                )
            ids = self._encode_plain(prediction)
        elif isinstance(prediction, (list, tuple)) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in prediction
        ):
            ids = list(prediction)
            vocab = self.vocab_size
            if any(not 0 <= t < vocab for t in ids):
                raise InvalidRequestError(
                    f"prediction has token ids outside the vocabulary [0, {vocab})"
                )
        else:
            raise InvalidRequestError(
                f"prediction must be a string or a list of token ids, got "
                f"{type(prediction).__name__}"
            )
        room = self.config.max_model_len - prompt_len
        if len(ids) > room:
            raise InvalidRequestError(
                f"prediction has {len(ids)} tokens but the context leaves room for {room} "
                f"(max_model_len {self.config.max_model_len} - prompt {prompt_len})"
            )
        return ids
