"""Types shared by the models and the runtime, below both: the request and its sampling
parameters, what the engine returns, the scheduled batch with its sampling rows, the
ForwardBatch a model reads, and the cache protocol. Nothing here imports another vibekit
package except vibekit.errors."""

from vibekit.core.cache import Cache, CacheMatch
from vibekit.core.forward_batch import ForwardBatch, SeqChunk
from vibekit.core.outputs import RequestOutput, Usage
from vibekit.core.request import Drafter, Grammar, Guidance, Request, RequestStatus
from vibekit.core.sampling_params import SamplingParams
from vibekit.core.scheduled import SampleGroup, ScheduledBatch

__all__ = [
    "Cache", "CacheMatch", "Drafter", "ForwardBatch", "Grammar", "Guidance", "Request",
    "RequestOutput", "RequestStatus", "SampleGroup", "SamplingParams", "ScheduledBatch",
    "SeqChunk", "Usage",
]
