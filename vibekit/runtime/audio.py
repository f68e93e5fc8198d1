"""Audio at the engine's boundary: check samples, read WAV bytes. Bad audio raises
InvalidRequestError naming what was wrong and what is allowed."""

from __future__ import annotations

import io
import wave

import numpy as np
import torch

from vibekit.errors import InvalidRequestError


def check_samples(samples, sample_rate: int | None, expected_rate: int) -> torch.Tensor:
    """samples (1-D float array-like, or int16 PCM) at sample_rate -> float32 tensor [n]."""
    if sample_rate is not None and sample_rate != expected_rate:
        raise InvalidRequestError(
            f"audio sample rate is {sample_rate} Hz; this model takes {expected_rate} Hz "
            "mono audio (resample it first)")
    if isinstance(samples, (bytes, bytearray, memoryview, str)):
        raise InvalidRequestError(
            "audio samples must be a 1-D array of floats in [-1, 1] (or int16 PCM), not "
            f"{type(samples).__name__}; decode files with vibekit.read_wav")
    try:
        array = np.asarray(samples.cpu() if isinstance(samples, torch.Tensor) else samples)
    except (TypeError, ValueError) as e:
        raise InvalidRequestError(f"audio samples are not an array of numbers: {e}") from None
    if array.dtype == np.int16:
        array = array.astype(np.float32) / 32768.0
    if array.dtype.kind not in "fiu" or array.ndim != 1:
        raise InvalidRequestError(
            f"audio samples must be a 1-D array of numbers (mono); got dtype {array.dtype} "
            f"with shape {tuple(array.shape)}")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise InvalidRequestError("audio samples contain NaN or infinity")
    if array.size and np.abs(array).max() > 1.0 + 1e-6:
        raise InvalidRequestError(
            f"audio samples must lie in [-1, 1]; got a peak of {np.abs(array).max():.3g} "
            "(int PCM must be int16, or scaled to [-1, 1])")
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(np.ascontiguousarray(array))


def read_wav(data: bytes) -> tuple[torch.Tensor, int]:
    """PCM WAV bytes -> (mono float32 samples in [-1, 1], sample rate). Multi-channel audio is
    averaged to mono. Raises InvalidRequestError for anything that is not a PCM WAV file."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError, ValueError) as e:
        raise InvalidRequestError(
            f"the audio is not a PCM WAV file ({e}); send 16-bit (or 8/24/32-bit) PCM WAV"
        ) from None
    if width == 1:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, dtype="<i4").astype(np.float32) / float(1 << 31)
    else:
        raise InvalidRequestError(f"WAV sample width {width} bytes is not supported (1-4)")
    if channels > 1:
        x = x[: len(x) // channels * channels].reshape(-1, channels).mean(axis=1)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), rate


def write_wav(samples, sample_rate: int) -> bytes:
    """Mono float samples in [-1, 1] -> 16-bit PCM WAV bytes."""
    x = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes((x * 32767.0).round().astype("<i2").tobytes())
    return buf.getvalue()
