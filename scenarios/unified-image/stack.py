"""unified-image stack: text-to-image requests on the digits-flow model through
vibekit.cfg.FlowCFGSampler, behind the stack protocol of vibekit_agents.stack (add, step,
has_unfinished, abort, activate, stream, run).

Every step() denoises all queued requests as one batch (same num_steps and guidance scale;
their negative prompts and seeds per request) and finishes them; the output of a request is its
image, a [16, 16] list of floats in [0, 1], which the scenario's checker compares with the
full-CFG reference (PSNR / SSIM).

Knobs (plan section [stack], searched by the cfg-cache skill):
    batch_cfg        cond and uncond rows in one forward per step
    reuse_prompt_kv  encode each prompt once and reuse its K/V on every step
    interval, warmup_steps, extrapolate, alpha_low, alpha_high, gate_step, after_gate
                     the CFG cache (vibekit.cfg.CFGCachePolicy): skip the uncond branch
    backend          "torch" (the only one here; "mlx" needs Apple silicon)
"""

from __future__ import annotations

from typing import Any

_POLICY_KNOBS = ("interval", "warmup_steps", "extrapolate", "alpha_low", "alpha_high",
                 "gate_step", "after_gate")


class ImageStack:
    def __init__(self, plan: Any) -> None:
        import torch

        import vibekit.zoo
        from vibekit.cfg import CFGCachePolicy

        backend = plan.get("stack.backend", "torch")
        if backend != "torch":
            raise ValueError(f"[stack] backend {backend!r}: this stack runs 'torch' only")
        self.plan = plan
        self.model = vibekit.zoo.load("digits-flow")
        self.threads = plan.num_threads or torch.get_num_threads()
        opts = {k: plan.get(f"stack.{k}") for k in _POLICY_KNOBS
                if plan.get(f"stack.{k}") is not None}
        gate = opts.get("gate_step")
        self._gate = gate
        self.policy_opts = opts
        self.CFGCachePolicy = CFGCachePolicy
        self.batch_cfg = bool(plan.get("stack.batch_cfg", True))
        self.reuse_prompt_kv = bool(plan.get("stack.reuse_prompt_kv", True))
        self.queue: list[tuple[str, dict]] = []

    def activate(self) -> None:
        import torch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def _sampler(self, num_steps: int, guidance_scale: float) -> Any:
        from vibekit.cfg import FlowCFGSampler

        opts = dict(self.policy_opts)
        if opts.get("gate_step") is not None and opts["gate_step"] >= num_steps:
            opts.pop("gate_step")  # a gate at or past the last step is no gate
        return FlowCFGSampler(self.model, num_steps=num_steps, guidance_scale=guidance_scale,
                              policy=self.CFGCachePolicy(**opts), batch_cfg=self.batch_cfg,
                              reuse_prompt_kv=self.reuse_prompt_kv)

    def add(self, request: dict, request_id: str) -> None:
        for key in ("prompt", "seed", "num_inference_steps", "guidance_scale"):
            if key not in request:
                raise ValueError(f"an image request needs {key!r}")
        self.queue.append((request_id, request))

    def step(self) -> list:
        from vibekit_agents.stack import StepEvent

        if not self.queue:
            return []
        first = self.queue[0][1]
        key = (first["num_inference_steps"], first["guidance_scale"])
        batch = [(rid, r) for rid, r in self.queue
                 if (r["num_inference_steps"], r["guidance_scale"]) == key]
        self.queue = [q for q in self.queue if q not in batch]
        out = self._sampler(*key).generate([r["prompt"] for _, r in batch],
                                           seeds=[r["seed"] for _, r in batch],
                                           negative_prompts=[r.get("negative_prompt", "")
                                                             for _, r in batch])
        return [StepEvent(rid, 1, True, out.images[i].tolist())
                for i, (rid, _) in enumerate(batch)]

    def has_unfinished(self) -> bool:
        return bool(self.queue)

    def abort(self, request_id: str) -> None:
        self.queue = [q for q in self.queue if q[0] != request_id]

    def stream(self, request: dict, request_id: str | None = None):
        from vibekit_agents.audit import new_request_id

        request_id = request_id or new_request_id()
        self.add(request, request_id)
        while self.queue:
            for ev in self.step():
                if ev.request_id == request_id:
                    yield ev
                    return

    def run(self, requests: list[dict], concurrency: int = 1) -> list:
        from vibekit_agents.stack import run_closed_loop

        return run_closed_loop(self, requests, concurrency)


def build_stack(plan: Any, scenario: Any = None, workspace: Any = None) -> ImageStack:
    return ImageStack(plan)
