"""One adversarial training loop for every family.

Each generator step (Goodfellow et al. 2014, Algorithm 1):
  1. D phase, k = train.d_steps times: draw reals, fake = G(z) without grad, minimise loss_D; every
     `loss.reg_interval` D steps add the gradient penalty / R1; WGAN clips the critic's weights after
     every update (Arjovsky et al. 2017, Algorithm 1 line 7).
  2. G phase: minimise loss_G(D(G(z))) with D's parameters frozen (requires_grad=False, and D's
     optimizer never steps here).
  3. EMA of G; logging; fixed-z sample picture; checkpoint.

All randomness the loop draws comes from CPU generators whose states go into every checkpoint, so a
resumed CPU run continues bit for bit.
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

from gandist.config import Config, dump_config
from gandist.data import build_dataset
from gandist.losses import AdversarialLoss, r1_penalty, wgan_gp_penalty
from gandist.models import build_models
from gandist.train import checkpoint as ckpt
from gandist.train.ema import EMA
from gandist.train.runlog import RunLog
from gandist.train.strategy import build_strategy

# Seeds derived from train.seed for streams that must not disturb each other.
_FIXED_Z_SALT = 7919  # the fixed latents of the sample grids


def make_optimizer(params, cfg, lr: float) -> torch.optim.Optimizer:
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, eps=cfg.eps)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum)
    raise ValueError(f"unknown optimizer '{cfg.name}'")


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
    def __init__(self, cfg: Config, run_dir: Path, log_enabled: bool = True) -> None:
        self.cfg = cfg
        self.strategy = build_strategy(cfg.train.strategy, cfg.train.device)
        self.device = self.strategy.device
        self.run_dir = Path(run_dir)
        tc = cfg.train
        torch.manual_seed(tc.seed)
        if tc.deterministic and self.device.type == "cpu":
            torch.use_deterministic_algorithms(True)
        self.data = build_dataset(cfg.data, tc.seed)
        G, D = build_models(cfg.model, self.data.shape, self.data.kind)
        self.G, self.D = G.to(self.device), D.to(self.device)
        self.ema = EMA(self.G, tc.ema_beta)
        self.opt_g = make_optimizer(self.G.parameters(), cfg.optim, cfg.optim.lr_g)
        self.opt_d = make_optimizer(self.D.parameters(), cfg.optim, cfg.optim.lr_d)
        self.loss = AdversarialLoss(cfg.loss)
        self.gen = torch.Generator().manual_seed(tc.seed)  # latents and penalty interpolation weights
        self.step = 0  # generator steps completed
        self.d_updates = 0  # discriminator updates completed
        self.skipped = 0  # steps skipped for non-finite losses
        self.log = RunLog(self.run_dir, enabled=log_enabled and self.strategy.is_main)
        self.fixed_z = torch.randn(
            tc.sample_n, cfg.model.z_dim, generator=torch.Generator().manual_seed(tc.seed + _FIXED_Z_SALT)
        )
        self.callbacks: list[
            Any
        ] = []  # objects with on_step(trainer, stats) and optionally on_log(trainer, record)
        self.health = None
        if cfg.health.enabled:
            from gandist.train.health import HealthMonitor

            self.health = HealthMonitor(cfg.health, log_fn=self.log.log, echo=self.strategy.is_main)
            self.callbacks.append(self.health)

    # ---------------------------------------------------------------------------------------------
    # Sampling helpers

    def latents(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.model.z_dim, generator=self.gen).to(self.device)

    def reals(self, n: int) -> torch.Tensor:
        return self.data.sample(n).to(self.device)

    def d_output(self, logits: torch.Tensor) -> float:
        """Mean D output for display: probability for the probabilistic losses, raw value otherwise."""
        if self.cfg.loss.name in ("minimax", "nonsaturating"):
            return float(torch.sigmoid(logits).mean())
        return float(logits.mean())

    # ---------------------------------------------------------------------------------------------
    # The two phases

    def d_step(self) -> dict[str, float]:
        cfg, b = self.cfg, self.cfg.data.batch_size
        real = self.reals(b)
        with torch.no_grad():
            fake = self.G(self.latents(b))
        d_real, d_fake = self.D(real), self.D(fake)
        loss = self.loss.d_loss(d_real, d_fake)
        d_real_, d_fake_ = d_real.detach(), d_fake.detach()
        stats = {
            "d_loss": float(loss.detach()),
            "d_real": self.d_output(d_real_),
            "d_fake": self.d_output(d_fake_),
        }
        if self.loss.decision_boundary is not None:  # share of reals and fakes D classifies correctly
            th = self.loss.decision_boundary
            stats["d_acc"] = float(((d_real_ > th).float().mean() + (d_fake_ < th).float().mean()) / 2)
        else:  # Wasserstein critics score, not classify: report the critic gap E[D(x)] - E[D(G(z))]
            stats["critic_gap"] = float(d_real_.mean() - d_fake_.mean())
        total = loss
        if cfg.loss.drift > 0:
            total = total + cfg.loss.drift * d_real.square().mean()
        if self.d_updates % cfg.loss.reg_interval == 0:
            # Lazy regularisation scales the penalty by the interval (StyleGAN2, Sec. 3.1).
            if cfg.loss.name == "wgan-gp":
                gp = wgan_gp_penalty(self.D, real, fake, generator=self.gen)
                total = total + cfg.loss.gp_weight * cfg.loss.reg_interval * gp
                stats["gp"] = float(gp.detach())
            if cfg.loss.r1_gamma > 0:
                r1 = r1_penalty(self.D, real)
                total = total + 0.5 * cfg.loss.r1_gamma * cfg.loss.reg_interval * r1
                stats["r1"] = float(r1.detach())
        self.opt_d.zero_grad(set_to_none=True)
        if not math.isfinite(float(total.detach())):
            self.skipped += 1
            return stats
        total.backward()
        if self.health is not None:
            stats["d_grad_norm"] = _grad_norm(self.D)
        self.opt_d.step()
        self.d_updates += 1
        if self.loss.clips_weights:
            with torch.no_grad():
                for p in self.D.parameters():
                    p.clamp_(-cfg.loss.clip, cfg.loss.clip)
        return stats

    def g_step(self) -> dict[str, float]:
        b = self.cfg.data.batch_size
        self.D.requires_grad_(False)  # D is only a function here: no gradients reach its weights
        try:
            fake = self.G(self.latents(b))
            loss = self.loss.g_loss(self.D(fake))
            self.opt_g.zero_grad(set_to_none=True)
            stats = {"g_loss": float(loss.detach())}
            if not math.isfinite(stats["g_loss"]):
                self.skipped += 1
                return stats
            loss.backward()
            if self.health is not None:
                stats["g_grad_norm"] = _grad_norm(self.G)
            self.opt_g.step()
        finally:
            self.D.requires_grad_(True)
        self.ema.update(self.G)
        return stats

    def set_learning_rates(self) -> None:
        o = self.cfg.optim
        scale = 1.0 - self.step / self.cfg.train.steps if o.decay == "linear" else 1.0
        for opt, lr in ((self.opt_g, o.lr_g), (self.opt_d, o.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * scale

    def train_step(self) -> dict[str, float]:
        self.set_learning_rates()
        acc: dict[str, list[float]] = defaultdict(list)
        for _ in range(self.cfg.train.d_steps):
            for k, v in self.d_step().items():
                acc[k].append(v)
        stats = {k: sum(v) / len(v) for k, v in acc.items()}
        stats.update(self.g_step())
        self.step += 1
        return stats

    # ---------------------------------------------------------------------------------------------
    # Checkpoints

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for prefix, module in (("G.", self.G), ("D.", self.D), ("G_ema.", self.ema.shadow)):
            for k, v in module.state_dict().items():
                out[prefix + k] = v
        return out

    def save(self) -> Path:
        rng = {"torch_cpu": torch.get_rng_state(), "loop": self.gen.get_state()}
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"cuda_{i}"] = s
        state = {
            "step": self.step,
            "d_updates": self.d_updates,
            "skipped": self.skipped,
            "data": self.data.state_dict(),
            "config": dump_config(self.cfg),
            "data_shape": list(self.data.shape),
            "data_kind": self.data.kind,
            "torch": torch.__version__,
            "time": time.time(),
        }
        optim = {"G": self.opt_g.state_dict(), "D": self.opt_d.state_dict()}
        path = ckpt.save_checkpoint(
            self.run_dir / "checkpoints", self.step, self.state_tensors(), optim, rng, state
        )
        ckpt.prune_checkpoints(self.run_dir / "checkpoints", self.cfg.train.keep_ckpts)
        return path

    def load(self, path: Path) -> None:
        data = ckpt.load_checkpoint(path)
        t = data["tensors"]
        for prefix, module in (("G.", self.G), ("D.", self.D), ("G_ema.", self.ema.shadow)):
            module.load_state_dict({k[len(prefix) :]: v for k, v in t.items() if k.startswith(prefix)})
        self.opt_g.load_state_dict(data["optim"]["G"])
        self.opt_d.load_state_dict(data["optim"]["D"])
        torch.set_rng_state(data["rng"]["torch_cpu"])
        self.gen.set_state(data["rng"]["loop"])
        if torch.cuda.is_available():
            states = [data["rng"][k] for k in sorted(data["rng"]) if k.startswith("cuda_")]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)
        s = data["state"]
        self.step, self.d_updates, self.skipped = s["step"], s["d_updates"], s["skipped"]
        self.data.load_state_dict(s["data"])

    # ---------------------------------------------------------------------------------------------
    # Pictures

    @torch.no_grad()
    def save_samples(self, name: str) -> Path | None:
        if not self.log.enabled:
            return None
        from gandist.viz import save_grid, save_scatter

        out = self.ema.shadow(self.fixed_z.to(self.device)).cpu()
        path = self.log.dir / "samples" / f"{name}.png"
        if self.data.kind == "points":
            ref = self.data.peek(2000)
            return save_scatter(
                out,
                path,
                reference=ref,
                modes=getattr(self.data, "modes", None),
                title=f"{self.cfg.name} {name}",
            )
        return save_grid(out, path)

    # ---------------------------------------------------------------------------------------------
    # Periodic evaluation

    def metric_names(self) -> list[str]:
        names = self.cfg.metrics.names
        if names == "auto":
            if self.data.kind == "points":
                return ["modes", "fid"] if self.cfg.data.name in ("ring", "grid") else ["fid"]
            return ["fid", "is", "kid"] if self.cfg.data.name == "digits" else ["fid"]
        return [m.strip() for m in names.split(",") if m.strip()]

    def run_metrics(self) -> dict[str, Any] | None:
        from gandist.metrics.evaluate import evaluate

        m = self.cfg.metrics
        if not hasattr(self, "_extractor"):
            from gandist.metrics.extractors import build_extractor

            self._extractor = build_extractor(
                m.extractor, self.data.kind, self.cfg.data.name, self.device, m.inception or None
            )
        res = evaluate(self.ema.shadow, self.cfg, self.data.kind, self.metric_names(), n=m.n, seed=self.cfg.train.seed,
                       extractor=self._extractor, device=self.device, out_dir=self.run_dir)  # fmt: skip
        res = {"step": self.step, **res}
        self.log.log(res, file="metrics.jsonl")
        if self.log.enabled:
            from gandist.viz import plot_metrics

            plot_metrics(self.log.dir / "metrics.jsonl", self.log.dir / "metrics.png")
        return res

    # ---------------------------------------------------------------------------------------------
    # The loop

    def train(self, progress: bool | None = None) -> dict[str, Any]:
        """Train until train.steps generator steps; returns a summary. Checkpoints at the end, every
        train.ckpt_every steps and when a stop signal arrives."""
        tc = self.cfg.train
        progress = tc.progress if progress is None else progress
        self.log.write_config(dump_config(self.cfg))
        self.log.truncate_after(self.step)
        self.log.truncate_after(self.step, file="metrics.jsonl")
        if self.step == 0:
            if self.log.enabled and self.data.kind == "images":
                from gandist.viz import save_grid

                save_grid(self.data.peek(tc.sample_n), self.log.dir / "samples" / "reals.png")
            self.save_samples(f"step_{0:07d}")
        bar = _progress(progress and self.strategy.is_main, tc.steps, self.step)
        window: dict[str, list[float]] = defaultdict(list)
        interrupted = None
        t_start = t_tick = time.perf_counter()
        step_start, images_per_step = self.step, self.cfg.data.batch_size * tc.d_steps
        with StopRequest() as stop:
            while self.step < tc.steps:
                stats = self.train_step()
                for k, v in stats.items():
                    window[k].append(v)
                for cb in self.callbacks:
                    cb.on_step(self, stats)
                if bar is not None:
                    bar.update(1)
                if self.step % tc.log_every == 0 or self.step == tc.steps:
                    now = time.perf_counter()
                    n_steps = len(window["g_loss"])
                    record = {"step": self.step, "kimg": self.step * images_per_step / 1000}
                    record.update({k: sum(v) / len(v) for k, v in window.items()})
                    record["sec_per_step"] = (now - t_tick) / max(n_steps, 1)
                    record["img_per_s"] = images_per_step * n_steps / max(now - t_tick, 1e-9)
                    record["skipped"] = self.skipped
                    for cb in self.callbacks:
                        if hasattr(cb, "on_log"):
                            cb.on_log(self, record)
                    self.log.log(record)
                    if bar is not None:
                        bar.set_postfix_str(_postfix(record), refresh=False)
                    window.clear()
                    t_tick = now
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
        path = self.save() if self.strategy.is_main else None
        elapsed = time.perf_counter() - t_start
        summary = {
            "step": self.step,
            "interrupted": interrupted,
            "checkpoint": str(path) if path else None,
            "run_dir": str(self.run_dir),
            "seconds": elapsed,
            "steps_per_s": (self.step - step_start) / max(elapsed, 1e-9),
        }
        if self.log.enabled:
            from gandist.viz import plot_log

            plot_log(self.log.dir / "log.jsonl", self.log.dir / "losses.png")
            (self.log.dir / "summary.json").write_text(json.dumps(summary, indent=1))
        self.log.close()
        return summary


def _grad_norm(module: nn.Module) -> float:
    """Global L2 norm of a module's gradients: one fused multi-tensor kernel and one host sync."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))


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
