"""The statistics a Trainer reads and shows: the one device-to-host read per log point (`_read`, with the
skip-limit check riding on it), the health monitor fed from it, the log.jsonl record, the progress bar and
its postfix, and the summary at the end. A part of `Trainer` (`loop.py`).
"""

from __future__ import annotations

import json
import math
import sys
import time
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
                f"{self.step}, train.skip_limit={limit}); training stopped, {self._checkpoints_line()}. "
                "Lower the learning rates, use train.precision=fp32 or bf16, or resume from an earlier checkpoint"
            )
        self._skip_read_at = self._updates + limit - in_a_row
        out, i = [], 0
        for step, stats in pending:
            host = {}
            for k, vs in stats.items():
                host[k] = sum(values[i : i + len(vs)]) / len(vs)
                i += len(vs)
            out.append((step, host))
        return out

    def _checkpoints_line(self) -> str:
        """What a stopped run leaves to resume from, in words."""
        from gandist.train import checkpoint as ckpt

        found = ckpt.list_checkpoints(self.run_dir / "checkpoints")
        if not found:
            return f"no checkpoint was written yet (the first was due at step {self.cfg.train.ckpt_every})"
        return f"{len(found)} checkpoint{'s' if len(found) > 1 else ''} kept, the newest {found[0]}"

    def read_point(
        self,
        pending: list[tuple[int, dict[str, list[torch.Tensor]]]],
        window: dict[str, list[float]],
        health_now: bool,
    ) -> None:
        """At a log or health point: the pending steps' statistics to the host (one read), into the log
        window and the health monitor, which diagnoses now if it is due or a value was not finite."""
        nonfinite = False
        for step, host in self._read(pending):
            for k, v in host.items():
                window[k].append(v)
            nonfinite = nonfinite or not all(math.isfinite(v) for v in host.values())
            if self.health is not None:
                self.health.observe(step, host)
        pending.clear()
        if self.health is not None and (health_now or nonfinite):
            self.health.update(self.step, nonfinite=nonfinite)

    def log_point(
        self, log: Any, bar: Any, window: dict[str, list[float]], t_tick: float, nimg_tick: int
    ) -> tuple[float, int]:
        """One log.jsonl record (means over the window, speed since the last record, the stage, health
        notes) and the progress bar's postfix; returns the new tick (time, images)."""
        now = time.perf_counter()
        n_steps = max(len(next(iter(window.values()), [])), 1)
        record = {"step": self.step, "kimg": self.nimg / 1000}
        if self.schedule.progressive:
            st = self.stage
            record.update(resolution=st.resolution, alpha=st.alpha, phase=st.phase, batch=st.batch)
        record.update({k: sum(v) / len(v) for k, v in window.items()})
        record["sec_per_step"] = (now - t_tick) / n_steps
        record["img_per_s"] = (self.nimg - nimg_tick) / max(now - t_tick, 1e-9)
        record["skipped"] = self._skipped_host
        if self.health is not None:
            self.health.annotate(record)
        log.log(record)
        if bar is not None:
            bar.set_postfix_str(_postfix(record), refresh=False)
        window.clear()
        return now, self.nimg

    def summarise(
        self, log: Any, path: Any, interrupted: str | None, t_start: float, step_start: int
    ) -> dict[str, Any]:
        """The run's summary (summary.json) and the loss plot, after the last checkpoint; closes the log."""
        elapsed = time.perf_counter() - t_start
        summary = {
            "step": self.step,
            "interrupted": interrupted,
            "checkpoint": str(path) if path else None,
            "run_dir": str(self.run_dir),
            "seconds": elapsed,
            "steps_per_s": (self.step - step_start) / max(elapsed, 1e-9),
        }
        if log.enabled:
            from gandist.viz import plot_log

            if (log.dir / "log.jsonl").is_file():  # (a run stopped before its first record has none)
                plot_log(log.dir / "log.jsonl", log.dir / "losses.png")
            (log.dir / "summary.json").write_text(json.dumps(summary, indent=1))
        log.close()
        return summary


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
