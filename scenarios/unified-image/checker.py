"""unified-image checker: every image must be within PSNR >= 35 dB and SSIM >= 0.98 of the full-CFG
reference (scikit-image's metrics, data range 1.0)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def check(outputs: list[Any], references: list[Any], min_psnr_db: float = 35.0,
          min_ssim: float = 0.98) -> dict[str, Any]:
    """Verdict {"passed", "min_psnr_db", "min_ssim", "details": [{index, psnr_db, ssim, passed}]}.

    Images are [H, W] arrays in [0, 1]; an identical image has PSNR inf."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if len(outputs) != len(references):
        return {"passed": False, "reason": f"{len(outputs)} outputs for {len(references)} "
                                           f"references", "details": []}
    details = []
    for i, (out, ref) in enumerate(zip(outputs, references)):
        out = np.asarray(out, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        if out.shape != ref.shape or not np.isfinite(out).all():
            details.append({"index": i, "psnr_db": -math.inf, "ssim": -1.0, "passed": False,
                            "reason": f"shape {out.shape} (reference {ref.shape}) or non-finite"})
            continue
        if np.array_equal(out, ref):
            psnr = math.inf
        else:
            psnr = float(peak_signal_noise_ratio(ref, out, data_range=1.0))
        ssim = float(structural_similarity(ref, out, data_range=1.0))
        details.append({"index": i, "psnr_db": psnr, "ssim": ssim,
                        "passed": psnr >= min_psnr_db and ssim >= min_ssim})
    return {
        "passed": bool(details) and all(d["passed"] for d in details),
        "min_psnr_db": min((d["psnr_db"] for d in details), default=-math.inf),
        "min_ssim": min((d["ssim"] for d in details), default=-1.0),
        "details": details,
    }
