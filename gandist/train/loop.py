"""One training loop for every family.

The loop runs the phases its objective declares (`gandist/objectives/base.py`: the interface and the
table of phases per family) the same way for every family, and owns everything around them:

  1. every phase: freeze all networks but the phase's, draw its real batch, split it into
     micro-batches, let the objective accumulate gradients, agree across ranks whether the loss was
     finite, step the optimizer (or, where it was not, leave parameters and optimizer state exactly as
     they were), and let the objective act after the step (e.g. WGAN's clipping);
  2. after all phases of a generator step: the EMA networks, with a half-life in images;
  3. around the steps: learning-rate decay, logs, sample pictures, evaluation, checkpoints, signals.

Nothing in a step is read back to the host: statistics stay on the device as 0-dim tensors and are
read in one transfer at log points and health-monitor points; the non-finite decision is made on the
device (`optim.guarded_step`). All randomness the loop draws comes from CPU generators whose states go
into every checkpoint, so a resumed CPU run continues bit for bit.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandist.config import Config, dump_config, flat_dict
from gandist.data import build_dataset
from gandist.data.base import Batch
from gandist.errors import CheckpointError, UserError
from gandist.models import build_networks
from gandist.objectives.base import Phase, PhaseContext, build_objective
from gandist.rng import stream
from gandist.train import checkpoint as ckpt
from gandist.train.ema import EMA
from gandist.train.optim import build_optimizer, guarded_step
from gandist.train.runlog import RunLog
from gandist.train.strategy import Strategy, build_strategy

CHECKPOINT_FORMAT = 2  # 1: gandist 0.1 (fixed G/D/G_ema, d_updates); 2: named networks, images seen


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the end of the current step and exits.
    A second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        print(
            f"\n[gandist] {signal.Signals(signum).name} received: saving a checkpoint after this step "
            "(Ctrl-C again to abort without saving)",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> StopRequest:
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread (e.g. tests driving the loop from a thread)
                pass
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


class Trainer:
    """Builds everything a run needs without touching the disk; `train()` creates the run directory."""

    def __init__(
        self, cfg: Config, run_dir: Path, log_enabled: bool = True, strategy: Strategy | None = None
    ) -> None:
        self.cfg = cfg
        self.strategy = strategy or build_strategy(cfg.train.strategy, cfg.train.device)
        self.device = self.strategy.device
        self.run_dir = Path(run_dir)
        self.log_enabled = log_enabled and self.strategy.is_main
        tc = cfg.train
        torch.manual_seed(tc.seed)  # network initialisation
        if tc.deterministic and self.device.type == "cpu":
            torch.use_deterministic_algorithms(True)
        self.data = build_dataset(cfg.data, tc.seed, self.strategy)
        self.kind = self.data.kind
        nets = build_networks(cfg.model, self.data.shape, self.kind)
        self.nets: dict[str, nn.Module] = {name: net.to(self.device) for name, net in nets.items()}
        wrapped = {name: self.strategy.wrap(net, name) for name, net in self.nets.items()}
        self.objective = build_objective(type(cfg.model).objective, cfg, wrapped, self.kind)
        self.ema = {
            name: EMA(self.nets[source], tc.ema_kimg * 1000, tc.ema_rampup)
            for name, source in self.objective.ema.items()
        }
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        for name, spec in self.objective.optimizers().items():
            params = [p for net in spec.networks for p in self.nets[net].parameters()]
            self.optimizers[name] = build_optimizer(params, cfg.optim, spec.lr, spec.reg_interval)
        self.base_lr = {name: [g["lr"] for g in opt.param_groups] for name, opt in self.optimizers.items()}
        self.phases = self.objective.phases()
        sampler = self.nets.get(self.objective.sample_network)
        self.z_dim = getattr(sampler, "z_dim", getattr(cfg.model, "z_dim", 0))
        self.gen = torch.Generator().manual_seed(tc.seed)  # latents and penalty interpolation weights
        self.step = 0  # generator steps completed
        self.nimg = 0  # real images shown by the main phases (kimg in logs, schedules, EMA ramp-up)
        self.skipped = torch.zeros((), dtype=torch.long, device=self.device)  # non-finite updates skipped
        self.fixed_z = torch.randn(tc.sample_n, self.z_dim, generator=stream(tc.seed, "fixed_latents"))
        self.log: RunLog | None = None
        self._skipped_host = 0
        self.health = None
        if cfg.health.enabled:
            from gandist.train.health import HealthMonitor

            probe_z = torch.randn(
                cfg.health.diversity_n, self.z_dim, generator=stream(tc.seed, "health_probe")
            )
            self.health = HealthMonitor(
                cfg.health,
                flat_dict(cfg),
                sample=lambda: self.sample_net()(probe_z.to(self.device)),
                reference=self.data.peek(cfg.health.diversity_n, position=0),
                log_fn=self._log_event,
                echo=self.strategy.is_main,
            )
        self._metric_names = self.metric_names()
        if cfg.metrics.every:
            from gandist.metrics.evaluate import METRICS

            unknown = [m for m in self._metric_names if m not in METRICS]
            if unknown:
                raise UserError(
                    f"metrics.names: unknown metric(s) {', '.join(unknown)}; valid: {', '.join(METRICS)}"
                )

    # ---------------------------------------------------------------------------------------------
    # Helpers

    def sample_net(self) -> nn.Module:
        """The network pictures and evaluations use: G's EMA where the objective keeps one."""
        net = self.objective.sample_network
        for name, source in self.objective.ema.items():
            if source == net:
                return self.ema[name].shadow
        return self.nets[net]

    def open_run(self) -> RunLog:
        """Create the run directory (on the main rank) the first time something is written."""
        if self.log is None:
            self.log = RunLog(self.run_dir, enabled=self.log_enabled)
        return self.log

    def _log_event(self, record: dict[str, Any]) -> None:
        self.open_run().log(record)

    def set_learning_rates(self) -> None:
        o = self.cfg.optim
        scale = 1.0 - self.step / self.cfg.train.steps if o.decay == "linear" else 1.0
        for name, opt in self.optimizers.items():
            for group, lr in zip(opt.param_groups, self.base_lr[name]):
                group["lr"] = lr * scale

    # ---------------------------------------------------------------------------------------------
    # Phases and steps

    def run_phase(self, phase: Phase) -> dict[str, torch.Tensor]:
        """One phase: gradients of the phase's networks from its micro-batches, then a guarded step."""
        opt = self.optimizers[phase.optimizer]
        for name, net in self.nets.items():
            net.requires_grad_(name in phase.trains)
        b = self.cfg.data.batch_size
        micro = self.cfg.train.micro_batch or b
        batch = self.data.next_batch(b).to(self.device) if phase.reals else None
        if phase.reals and phase.interval == 1:
            self.nimg += b
        chunks: list[Batch | None] = (
            batch.split(micro) if batch is not None else [None] * math.ceil(b / micro)
        )
        opt.zero_grad(set_to_none=True)
        losses, acc = [], defaultdict(list)
        for chunk in chunks:
            n = len(chunk) if chunk is not None else min(micro, b - micro * len(losses))
            ctx = PhaseContext(self.step, phase.gain * n / b, self.gen, self.device, self.z_dim, n)
            result = self.objective.accumulate(phase, chunk, ctx)
            losses.append(result.loss)
            for k, v in result.stats.items():
                acc[k].append(v)
        stats = {k: v[0] if len(v) == 1 else torch.stack(v).mean() for k, v in acc.items()}
        loss = losses[0] if len(losses) == 1 else torch.stack(losses)
        ok = self.strategy.all_reduce_flag(torch.isfinite(loss).all())
        if self.health is not None:
            stats[f"{phase.optimizer.lower()}_grad_norm"] = _grad_norm(opt)
        guarded_step(opt, ok)
        self.skipped += (~ok).long()
        self.objective.after_step(phase)
        for net in self.nets.values():
            net.requires_grad_(True)
        return stats

    def train_step(self) -> dict[str, list[torch.Tensor]]:
        """One generator step: every phase due at this step, then EMA. Returns device statistics (one
        tensor per phase run, averaged on the host when read)."""
        self.set_learning_rates()
        stats: dict[str, list[torch.Tensor]] = defaultdict(list)
        for phase in self.phases:
            if self.step % phase.interval:
                continue
            for _ in range(phase.repeat):
                for k, v in self.run_phase(phase).items():
                    stats[k].append(v)
        for name, ema in self.ema.items():
            source = self.nets[self.objective.ema[name]]
            ema.update(source, ema.beta(self.cfg.data.batch_size, self.nimg))
        self.step += 1
        return stats

    # ---------------------------------------------------------------------------------------------
    # Checkpoints

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        modules = {**self.nets, **{name: ema.shadow for name, ema in self.ema.items()}}
        for prefix, module in modules.items():
            for k, v in module.state_dict().items():
                out[f"{prefix}.{k}"] = v
        for k, v in self.objective.state_dict()["tensors"].items():
            out[f"objective.{k}"] = v
        return out

    def save(self) -> Path | None:
        """Write a checkpoint (main rank only); returns its folder."""
        if not self.strategy.is_main:
            return None
        self.open_run()
        rng = {**self.strategy.rng_state(), "loop": self.gen.get_state()}
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "nimg": self.nimg,
            "skipped": int(self.skipped),  # host read: checkpoints are not inside a step
            "data": self.data.state_dict(),
            "objective": self.objective.state_dict()["values"],
            "config": dump_config(self.cfg),
            "data_shape": list(self.data.shape),
            "data_kind": self.kind,
            "torch": torch.__version__,
            "time": time.time(),
        }
        optim = {name: opt.state_dict() for name, opt in self.optimizers.items()}
        path = ckpt.save_checkpoint(
            self.run_dir / "checkpoints", self.step, self.state_tensors(), optim, rng, state
        )
        ckpt.prune_checkpoints(self.run_dir / "checkpoints", self.cfg.train.keep_ckpts)
        return path

    def load(self, path: Path) -> None:
        data = ckpt.load_checkpoint(path)
        t = data["tensors"]
        modules = {**self.nets, **{name: ema.shadow for name, ema in self.ema.items()}}
        for prefix, module in modules.items():
            own = {k[len(prefix) + 1 :]: v for k, v in t.items() if k.startswith(prefix + ".")}
            try:
                module.load_state_dict(own)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[0]
                raise CheckpointError(
                    f"checkpoint '{path}' does not fit this run's {prefix} ({first}); resume with the config "
                    "it was written with (its config.yaml), or start a new run with --out elsewhere"
                ) from None
        missing = set(self.optimizers) - set(data["optim"])
        if missing:
            raise CheckpointError(
                f"checkpoint '{path}' has no optimizer state for {', '.join(sorted(missing))}"
            )
        for name, opt in self.optimizers.items():
            opt.load_state_dict(data["optim"][name])
        objective_tensors = {k[len("objective.") :]: v for k, v in t.items() if k.startswith("objective.")}
        s = data["state"]
        self.objective.load_state_dict({"tensors": objective_tensors, "values": s.get("objective", {})})
        self.strategy.set_rng_state(data["rng"])
        self.gen.set_state(data["rng"]["loop"])
        self.step, self.skipped = s["step"], torch.tensor(s["skipped"], device=self.device)
        # format 1 (gandist 0.1) kept no image count: every step showed d_steps batches
        default_nimg = s["step"] * self.cfg.data.batch_size * self.cfg.train.d_steps
        self.nimg = s.get("nimg", default_nimg)
        self.data.load_state_dict(s["data"])

    # ---------------------------------------------------------------------------------------------
    # Pictures

    @torch.no_grad()
    def save_samples(self, name: str) -> Path | None:
        if not self.log_enabled:
            return None
        from gandist.viz import save_grid, save_scatter

        out = self.sample_net()(self.fixed_z.to(self.device)).cpu()
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

    # ---------------------------------------------------------------------------------------------
    # Periodic evaluation

    def metric_names(self) -> list[str]:
        names = self.cfg.metrics.names
        if names == "auto":
            if self.kind == "points":
                return ["modes", "fid"] if self.cfg.data.name in ("ring", "grid") else ["fid"]
            return ["fid", "is", "kid"] if self.cfg.data.name == "digits" else ["fid"]
        return [m.strip() for m in names.split(",") if m.strip()]

    def run_metrics(self) -> dict[str, Any] | None:
        from gandist.metrics.evaluate import evaluate

        m = self.cfg.metrics
        if not hasattr(self, "_extractor"):
            from gandist.metrics.extractors import build_extractor

            self._extractor = build_extractor(
                m.extractor, self.kind, self.cfg.data.name, self.device, m.inception or None
            )
        res = evaluate(self.sample_net(), self.cfg, self.kind, self._metric_names, n=m.n, seed=self.cfg.train.seed,
                       extractor=self._extractor, device=self.device, out_dir=self.run_dir)  # fmt: skip
        res = {"step": self.step, **res}
        log = self.open_run()
        log.log(res, file="metrics.jsonl")
        if log.enabled:
            from gandist.viz import plot_metrics

            plot_metrics(log.dir / "metrics.jsonl", log.dir / "metrics.png")
        return res

    # ---------------------------------------------------------------------------------------------
    # The loop

    def _read(
        self, pending: list[tuple[int, dict[str, list[torch.Tensor]]]]
    ) -> list[tuple[int, dict[str, float]]]:
        """Device statistics of the pending steps to host floats in one transfer; the count of skipped
        updates rides along. Phase repeats within a step are averaged here, in float64."""
        tensors = [v for _, stats in pending for vs in stats.values() for v in vs]
        values = torch.stack([t.detach().float().reshape(()) for t in tensors + [self.skipped]]).tolist()
        self._skipped_host = int(values.pop())
        out, i = [], 0
        for step, stats in pending:
            host = {}
            for k, vs in stats.items():
                host[k] = sum(values[i : i + len(vs)]) / len(vs)
                i += len(vs)
            out.append((step, host))
        return out

    def train(self, progress: bool | None = None) -> dict[str, Any]:
        """Train until train.steps generator steps; returns a summary. Checkpoints at the end, every
        train.ckpt_every steps and when a stop signal arrives."""
        tc = self.cfg.train
        progress = tc.progress if progress is None else progress
        log = self.open_run()
        log.write_config(dump_config(self.cfg))
        log.truncate_after(self.step)
        log.truncate_after(self.step, file="metrics.jsonl")
        if self.step == 0:
            self.save_reals()
            self.save_samples(f"step_{0:07d}")
        bar = _progress(progress and self.strategy.is_main, tc.steps, self.step)
        pending: list[tuple[int, dict[str, list[torch.Tensor]]]] = []
        window: dict[str, list[float]] = defaultdict(list)
        interrupted = None
        t_start = t_tick = time.perf_counter()
        step_start, nimg_tick = self.step, self.nimg
        with StopRequest() as stop:
            while self.step < tc.steps:
                pending.append((self.step + 1, self.train_step()))
                if bar is not None:
                    bar.update(1)
                log_now = self.step % tc.log_every == 0 or self.step == tc.steps
                health_now = self.health is not None and self.health.due(self.step)
                if log_now or health_now:
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
                if log_now:
                    now = time.perf_counter()
                    n_steps = max(len(next(iter(window.values()), [])), 1)
                    record = {"step": self.step, "kimg": self.nimg / 1000}
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
                    t_tick, nimg_tick = now, self.nimg
                if self.step % tc.sample_every == 0 or self.step == tc.steps:
                    self.save_samples(f"step_{self.step:07d}")
                if self.cfg.metrics.every and (
                    self.step % self.cfg.metrics.every == 0 or self.step == tc.steps
                ):
                    self.run_metrics()
                if stop.signal is not None:
                    interrupted = signal.Signals(stop.signal).name
                    break
                if self.step % tc.ckpt_every == 0 and self.step < tc.steps:
                    self.save()
        if bar is not None:
            bar.close()
        path = self.save()
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

            plot_log(log.dir / "log.jsonl", log.dir / "losses.png")
            (log.dir / "summary.json").write_text(json.dumps(summary, indent=1))
        log.close()
        return summary


def _grad_norm(opt: torch.optim.Optimizer) -> torch.Tensor:
    """Global L2 norm of an optimizer's gradients, on the device (one fused multi-tensor kernel)."""
    grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def _postfix(r: dict[str, Any]) -> str:
    parts = [
        f"D {r.get('d_loss', float('nan')):.3f}",
        f"G {r.get('g_loss', float('nan')):.3f}",
        f"D(x) {r.get('d_real', float('nan')):.2f}",
        f"D(G(z)) {r.get('d_fake', float('nan')):.2f}",
        f"{r['img_per_s']:.0f} img/s",
    ]
    if r.get("health"):
        parts.append(f"! {r['health']}")
    return " | ".join(parts)


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)
