"""What a run draws and evaluates while it trains, at the points `Trainer.train` calls them: the fixed-latent
sample pictures (`Pictures`) and the periodic evaluation with its metric defaults from the data section
(`PeriodicMetrics`). Parts of `Trainer` (`loop.py`): they read its sample network, data and run log.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch


class Pictures:
    """Sample grids (or scatter plots of 2-D points) of the fixed latents, and the reals beside them."""

    @torch.no_grad()
    def save_samples(self, name: str) -> Path | None:
        if not self.log_enabled:
            return None
        from gandist.viz import save_grid, save_scatter

        out = self.objective.pictures(self.sample_net(), self.fixed_z.to(self.device), self.data).cpu()
        path = self.open_run().dir / "samples" / f"{name}.png"
        if self.kind == "points":
            ref = self.data.peek(2000)
            return save_scatter(
                out,
                path,
                reference=ref,
                modes=getattr(self.data, "modes", None),
                title=f"{self.cfg.name} {name}",
            )
        return save_grid(out, path)

    def save_reals(self) -> Path | None:
        if not self.log_enabled:
            return None
        from gandist.viz import save_grid, save_scatter

        path = self.open_run().dir / "samples" / "reals.png"
        if self.kind == "points":
            n = max(self.cfg.train.sample_n, 2000)
            return save_scatter(self.data.peek(n), path, modes=getattr(self.data, "modes", None),
                                title=f"{self.cfg.name}: {n} real samples")  # fmt: skip
        return save_grid(self.data.peek(self.cfg.train.sample_n), path)


class PeriodicMetrics:
    """Evaluation every metrics.every steps: the names (auto: the data section's defaults), the extractor
    (built once), the results in metrics.jsonl and a plot."""

    def metric_names(self) -> list[str]:
        names = self.cfg.metrics.names
        if names == "auto":
            return list(type(self.cfg.data).default_metrics)
        return [m.strip() for m in names.split(",") if m.strip()]

    def _uses_inception(self) -> bool:
        ex = self.cfg.metrics.extractor
        return ex == "inception" or (
            ex == "auto" and self.kind == "images" and type(self.cfg.data).extractor == "inception"
        )

    def run_metrics(self) -> dict[str, Any] | None:
        from gandist.metrics.evaluate import evaluate

        m = self.cfg.metrics
        if not hasattr(self, "_extractor"):
            from gandist.metrics.extractors import build_extractor

            self._extractor = build_extractor(
                m.extractor, self.kind, self.cfg.data.name, self.device, m.inception or None
            )
            from gandist.metrics.commands import small_n_line

            line = small_n_line(self._metric_names, m.n, "metrics.n =")  # said once, at the first evaluation
            if line and self.strategy.is_main:
                print(line, file=sys.stderr)
        res = evaluate(self.sample_net(), self.cfg, self.kind, self._metric_names, n=m.n, seed=self.cfg.train.seed,
                       extractor=self._extractor, strategy=self.strategy, out_dir=self.run_dir)  # fmt: skip
        res = {"step": self.step, **res}
        log = self.open_run()
        log.log(res, file="metrics.jsonl")
        if log.enabled:
            from gandist.viz import plot_metrics

            plot_metrics(log.dir / "metrics.jsonl", log.dir / "metrics.png")
        return res
