"""The statistics a Trainer reads and shows: the one device-to-host read per log point (`_read`, with the
skip-limit check riding on it), the progress bar and its postfix. A part of `Trainer` (`loop.py`).
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from gandist.errors import DivergedError


class StatsReader:
    """Device statistics of the pending steps to host floats, once per log or health point."""

    def _read(
        self, pending: list[tuple[int, dict[str, list[torch.Tensor]]]]
    ) -> list[tuple[int, dict[str, float]]]:
        """Device statistics of the pending steps to host floats in one transfer; the count of skipped
        updates rides along. Phase repeats within a step are averaged here, in float64."""
        tensors = [v for _, stats in pending for vs in stats.values() for v in vs]
        extra = [self.skipped, self.skipped_run]
        stacked = torch.stack([t.detach().float().reshape(()) for t in tensors + extra])
        if self.world > 1:  # the statistics of the global batch: every rank logs and diagnoses the same values
            self.strategy.all_reduce(stacked, "mean")
        values = stacked.tolist()
        in_a_row = int(values.pop())
        self._skipped_host = int(values.pop())
        limit = self.cfg.train.skip_limit
        if limit and in_a_row >= limit:
            raise DivergedError(
                f"{in_a_row} updates in a row were skipped because a loss or gradient was not finite (step "
                f"{self.step}); training stopped, the checkpoints in {self.run_dir / 'checkpoints'} are intact. "
                "Lower the learning rates, use train.precision=fp32 or bf16, or resume from an earlier checkpoint"
            )
        out, i = [], 0
        for step, stats in pending:
            host = {}
            for k, vs in stats.items():
                host[k] = sum(values[i : i + len(vs)]) / len(vs)
                i += len(vs)
            out.append((step, host))
        return out


def _postfix(r: dict[str, Any]) -> str:
    parts = (
        [f"{r['resolution']}px" + (f" fade {r['alpha']:.2f}" if r["phase"] == "fade" else "")]
        if "phase" in r
        else []
    )
    parts += [
        f"D {r.get('d_loss', float('nan')):.3f}",
        f"G {r.get('g_loss', float('nan')):.3f}",
        f"D(x) {r.get('d_real', float('nan')):.2f}",
        f"D(G(z)) {r.get('d_fake', float('nan')):.2f}",
        f"{r['img_per_s']:.0f} img/s",
    ]
    if r.get("health"):
        parts.append(f"! {r['health']}")
    return " | ".join(parts)


def _progress(enabled: bool, total: float, initial: float, unit: str):
    if not enabled:
        return None
    from tqdm import tqdm

    fmt = (
        "{l_bar}{bar}| {n:.1f}/{total:.1f} kimg [{elapsed}<{remaining}{postfix}]" if unit == "kimg" else None
    )
    return tqdm(total=total, initial=initial, unit=unit, dynamic_ncols=True, file=sys.stderr, bar_format=fmt)
