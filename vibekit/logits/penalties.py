"""Repetition, frequency and presence penalties and logit bias, as one logits processor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vibekit.core.sampling_params import SamplingParams
from vibekit.core.scheduled import ScheduledBatch


def apply_penalties_ref(logits: torch.Tensor, prompt_ids: Sequence[int],
                        output_ids: Sequence[int], params: SamplingParams) -> torch.Tensor:
    """Reference implementation of the penalties for one row: logits [V] given the prompt and
    the output so far. Returns new logits [V].

      repetition (HF / vLLM): tokens seen in prompt or output: logit / p if > 0 else logit * p
      frequency, presence (OpenAI): logit -= f * count_out + p * (count_out > 0)
      logit_bias (OpenAI): logit += bias[token]
    """
    out = logits.clone()
    vocab = out.shape[0]
    if params.repetition_penalty != 1.0:
        seen = torch.zeros(vocab, dtype=torch.bool)
        seen[list(prompt_ids) + list(output_ids)] = True
        p = params.repetition_penalty
        out = torch.where(seen, torch.where(out > 0, out / p, out * p), out)
    counts = torch.bincount(torch.tensor(list(output_ids), dtype=torch.int64), minlength=vocab)
    counts = counts[:vocab].to(out.dtype)
    out = out - params.frequency_penalty * counts - params.presence_penalty * (counts > 0)
    for token, bias in (params.logit_bias or {}).items():
        out[token] += bias
    return out


def _needs_penalties(p: SamplingParams) -> bool:
    return (p.repetition_penalty != 1.0 or p.frequency_penalty != 0.0
            or p.presence_penalty != 0.0 or bool(p.logit_bias))


@dataclass(slots=True)
class _Job:
    rows: range
    prompt_ids: list[int]
    output_ids: list[int]
    draft: list[int]
    params: SamplingParams


class PendingPenalties:
    __slots__ = ("jobs",)

    def __init__(self, jobs: list[_Job]) -> None:
        self.jobs = jobs

    @torch.inference_mode()
    def apply(self, logits: torch.Tensor) -> None:
        vocab = logits.shape[1]
        dev = logits.device
        for job in self.jobs:
            p = job.params
            rows = logits[job.rows.start:job.rows.stop]  # [n, V] view
            n = rows.shape[0]
            # counts[i] = output counts after output + draft[:i] (row i's history)
            out_ids = torch.tensor(job.output_ids, dtype=torch.int64, device=dev)
            base = torch.bincount(out_ids, minlength=vocab)[:vocab].to(rows.dtype)
            counts = base.expand(n, vocab).clone()
            if job.draft and n > 1:
                inc = torch.zeros(n, vocab, dtype=rows.dtype, device=dev)
                draft = torch.tensor(job.draft[:n - 1], dtype=torch.int64, device=dev)
                inc[torch.arange(1, n, device=dev), draft] = 1.0
                counts += inc.cumsum(0)
            if p.repetition_penalty != 1.0:
                prompt = torch.tensor(job.prompt_ids, dtype=torch.int64, device=dev)
                seen = counts > 0
                seen[:, prompt] = True
                penalized = torch.where(rows > 0, rows / p.repetition_penalty,
                                        rows * p.repetition_penalty)
                rows.copy_(torch.where(seen, penalized, rows))
            if p.frequency_penalty:
                rows.sub_(p.frequency_penalty * counts)
            if p.presence_penalty:
                rows.sub_(p.presence_penalty * (counts > 0).to(rows.dtype))
            if p.logit_bias:
                ids = torch.tensor(list(p.logit_bias), dtype=torch.int64, device=dev)
                bias = torch.tensor(list(p.logit_bias.values()), dtype=rows.dtype, device=dev)
                rows[:, ids] += bias


class PenaltiesProcessor:
    """Applies SamplingParams' repetition_penalty, frequency_penalty, presence_penalty and
    logit_bias to the rows of the requests that set them (see `apply_penalties_ref`)."""

    def start(self, batch: ScheduledBatch) -> PendingPenalties | None:
        jobs = [_Job(g.rows, g.request.prompt_token_ids, g.request.output_token_ids, g.draft,
                     g.request.params)
                for g in batch.groups if _needs_penalties(g.request.params)]
        return PendingPenalties(jobs) if jobs else None
