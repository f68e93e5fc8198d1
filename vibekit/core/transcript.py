"""What the speech engine returns per stream and step: TranscriptOutput."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TranscriptOutput:
    """The current transcript hypothesis of one audio stream after a step.

    A stream is decoded again from the start each time more of its audio is encoded (the decoder
    cross-attends to all of it, so earlier text may change): `revision` counts those hypotheses
    (1, 2, ...). token_ids / text: the hypothesis so far. delta_text: text appended in this step
    to the same revision; when `revised` is True the hypothesis restarted and delta_text is the
    whole new text. is_final: the audio has ended and this hypothesis covers all of it (its
    text is the transcript). finish_reason: None while running, else "stop" (end of text),
    "length" (max_tokens), "abort", "deadline" (no audio or end of stream in time) or "error";
    `error` says what went wrong. chunk_latencies: seconds from each audio chunk's arrival to
    the first token of a hypothesis that covers it, for the chunks that got one in this step.
    """

    request_id: str
    token_ids: list[int]
    text: str
    revision: int
    delta_text: str = ""
    revised: bool = False
    is_final: bool = False
    finish_reason: str | None = None
    error: str | None = None
    audio_seconds: float = 0.0
    chunk_latencies: list[float] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
