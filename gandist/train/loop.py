"""One training loop for every family.

The loop runs the phases its objective declares (`gandist/objectives/base.py`: the interface and the
table of phases per family) the same way for every family, and owns everything around them:

  1. every phase: freeze all networks but the phase's, draw its real batch, split it into
     micro-batches, let the objective accumulate gradients, agree across ranks whether the loss was
     finite, step the optimizer (or, where it was not, leave parameters and optimizer state exactly as
     they were), and let the objective act after the step (e.g. WGAN's clipping);
  2. after all phases of a generator step: the EMA networks (a decay per step or a half-life in images);
  3. before each step: the growth schedule (`schedule.py`, a function of images seen) sets the
     resolution, fade-in alpha, batch size and learning rates; the data source serves that resolution;
  4. around the steps: learning-rate decay, logs, sample pictures, evaluation, checkpoints, signals.

`Trainer.train()` conducts; the parts it calls live beside it: `checkpointer.py` (what a checkpoint holds,
save, load, the previous format, RNG), `stats.py` (the one device-to-host read per log point, the health
monitor fed from it, log records, progress bar, summary) and `callbacks.py` (sample pictures, periodic
metrics). This file keeps the build (`__init__`), the growth stage, learning rates, phases and steps.

Precision: fp32, or bf16 / fp16 autocast with fp32 weights and optimizer state (fp16 with a dynamic
loss scale kept on the device); gradient penalties run in fp32 inside the objective.

Nothing in a step is read back to the host: statistics stay on the device as 0-dim tensors and are
read in one transfer at log points and health-monitor points; the non-finite decision is made on the
device (`optim.guarded_step`). All randomness the loop draws comes from CPU generators whose states go
into every checkpoint, so a resumed CPU run continues bit for bit.
"""

from __future__ import annotations

import contextlib
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
from gandist.errors import UserError
from gandist.models import build_networks, initialise_from_data
from gandist.models.config import check_pack_per_rank
from gandist.objectives.base import Phase, PhaseContext, backward_through, build_objective
from gandist.rng import stream
from gandist.strategies import Strategy
from gandist.train.callbacks import PeriodicMetrics, Pictures
from gandist.train.checkpointer import Checkpointing
from gandist.train.ema import EMA
from gandist.train.optim import build_optimizer
from gandist.train.runlog import RunLog
from gandist.train.schedule import Schedule, Stage, fade_reals
from gandist.train.stats import StatsReader, _progress

# fp16 loss scale: torch.amp.GradScaler's defaults (start 2^16, x2 after 2000 finite steps, x0.5 on overflow)
FP16_SCALE, FP16_GROWTH, FP16_BACKOFF, FP16_INTERVAL = 2.0**16, 2.0, 0.5, 2000


def check_world_size(cfg: Config, world: int) -> None:
    """Every global batch (data.batch_size and each schedule.batch entry) must split evenly over the ranks,
    and each rank's share over train.micro_batch and the minibatch-stddev groups. A gradient penalty on a
    D with batch norm synchronised over the ranks is refused: the penalty differentiates D twice, and the
    all-reduce inside synchronised batch norm has no second derivative (2 ranks of the quickstart with R1 and
    batch norm in D differed from one process by 0.23 in a weight after 2 steps; with layer norm, 3e-7)."""
    if world == 1:
        return
    # WGAN-GP on batch norm is refused for every run (ClassicLoss.check); R1 and R2 only across ranks
    keys = [f"loss.{p}_gamma" for p in getattr(cfg.loss, "penalties", ()) if p in ("r1", "r2")]
    if keys and cfg.train.sync_batchnorm and getattr(cfg.model, "d_norm", None) == "batch":
        verb = "differentiates" if len(keys) == 1 else "differentiate"
        raise UserError(
            f"{' and '.join(keys)} {verb} D twice, which batch norm synchronised over {world} ranks cannot: "
            "set model.d_norm=layer (or none), or train in one process"
        )
    check_pack_per_rank(cfg, world)
    batches = {"data.batch_size": cfg.data.batch_size}
    batches.update({f"schedule.batch[{r}]": b for r, b in sorted(cfg.schedule.batch.items())})
    micro = cfg.train.micro_batch
    group = getattr(cfg.model, "mbstd_group", 0) or getattr(cfg.model, "minibatch_std", 0) or 0
    for key, batch in batches.items():
        if batch % world:
            fit = [w for w in range(1, batch + 1) if batch % w == 0 and w <= 64]
            raise UserError(
                f"{key}={batch} (the global batch) does not split over {world} ranks; launch a number of "
                f"ranks that divides it ({', '.join(map(str, fit[-6:]))}) or set {key} to a multiple of {world}"
            )
        local = batch // world
        if micro and local % micro:
            raise UserError(
                f"{key}={batch} over {world} ranks leaves {local} per rank, not divisible by "
                f"train.micro_batch={micro}; choose a micro-batch that divides {local}"
            )
        if group and local > group and local % group:
            raise UserError(
                f"{key}={batch} over {world} ranks leaves {local} per rank, not divisible by the minibatch-stddev "
                f"group {group} (each rank groups its own samples, as the official code); change the batch or the group"
            )


class StopRequest:
    """SIGINT, SIGTERM and SIGUSR2 (SLURM's warning before a preemption or the time limit) only set a
    flag; at the end of the current step all ranks agree (one collective), save one checkpoint together
    and exit. A second Ctrl-C aborts at once; a repeated SIGTERM or SIGUSR2 (SLURM signals every process of
    a step, and torchrun passes the signal on to its workers) is absorbed."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signal is not None:  # another delivery of a stop request (SLURM and torchrun both forward it)
            self.signal = max(self.signal, signum)
            return
        self.signal = signum
        print(
            f"\n[gandist] {signal.Signals(signum).name} received: saving a checkpoint after this step "
            "(Ctrl-C again to abort without saving)",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> StopRequest:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
            try:
                self._previous[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread (e.g. tests driving the loop from a thread)
                pass
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


class Trainer(Checkpointing, StatsReader, Pictures, PeriodicMetrics):
    """Builds everything a run needs without touching the disk; `train()` creates the run directory."""

    def __init__(self, cfg: Config, run_dir: Path, strategy: Strategy, log_enabled: bool = True) -> None:
        self.cfg = cfg
        self.strategy = strategy  # built once by whoever starts the run (`strategy_from_config`)
        self.world = self.strategy.world_size
        check_world_size(cfg, self.world)
        self.device = self.strategy.device
        self.run_dir = Path(run_dir)
        self.log_enabled = log_enabled and self.strategy.is_main
        tc = cfg.train
        torch.manual_seed(tc.seed)  # network initialisation
        if tc.deterministic and self.device.type == "cpu":  # without the NaN fill of torch.empty (determinism.py)
            from gandist.train.determinism import set_deterministic

            set_deterministic(True)
        self.data = build_dataset(cfg.data, tc.seed, self.strategy)
        self.kind = self.data.kind
        nets = build_networks(cfg.model, self.data.shape, self.kind)
        initialise_from_data(nets, self.data)  # weight normalisation's data-dependent init, where a network has one
        self.nets: dict[str, nn.Module] = {name: net.to(self.device) for name, net in nets.items()}
        wrapped = {name: self.strategy.wrap(net, name) for name, net in self.nets.items()}
        if (
            tc.compile
        ):  # the objective reaches the plain module for double backward (objectives.base.uncompiled)
            wrapped = {name: torch.compile(net) for name, net in wrapped.items()}
        if self.world > 1:  # after the shared initialisation: each rank its own global stream (noise inputs)
            gen = stream(tc.seed, "rank_global", self.strategy.rank)
            torch.manual_seed(int(torch.randint(2**62, (), generator=gen)))
        self.objective = build_objective(type(cfg.model).objective, cfg, wrapped, self.kind)
        # the EMA copies the objective declares: G_ema where the run keeps one (train.ema_beta or ema_kimg), and
        # those with a decay of their own (the semi-supervised D_ema of loss.d_average) where the objective sets it
        self.ema = {name: EMA.from_config(self.nets[source], tc) for name, source in self.objective.ema.items()
                    if tc.keeps_ema or name in self.objective.ema_decay}  # fmt: skip
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.optimizer_specs = self.objective.optimizers()
        for name, spec in self.optimizer_specs.items():
            params = [p for net in spec.networks for p in self.nets[net].parameters()]
            self.optimizers[name] = build_optimizer(params, cfg.optim, spec.lr, spec.reg_interval)
        self.base_lr = {name: [g["lr"] for g in opt.param_groups] for name, opt in self.optimizers.items()}
        # each optimizer's parameters, in its order: the phase's gradients are read from these (under ZeRO
        # the optimizer's own param_groups hold flat partitions, not the networks' parameters)
        self.params = {name: [p for net in spec.networks for p in self.nets[net].parameters()]
                       for name, spec in self.optimizer_specs.items()}  # fmt: skip
        # a strategy that owns the optimizer step (DeepSpeed: one engine per optimizer) builds it here
        by_optimizer = {name: [self.nets[n] for n in spec.networks]
                        for name, spec in self.optimizer_specs.items()}  # fmt: skip
        self.strategy.prepare(cfg, by_optimizer, self.optimizers)
        self.phases = self.objective.phases()
        self.schedule = Schedule(cfg)
        self.stage: Stage | None = None
        self._stage_key: tuple[int, str] | None = None  # the phase the optimizer state belongs to
        self.batch_size = cfg.data.batch_size
        self.precision = tc.precision
        self.autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tc.precision)
        if self.precision == "fp16":
            self.loss_scale = torch.full((), FP16_SCALE, device=self.device)
            self._scale_growth = torch.zeros((), dtype=torch.int32, device=self.device)
        sampler = self.nets.get(self.objective.sample_network)
        self.z_dim = getattr(sampler, "z_dim", getattr(cfg.model, "z_dim", 0))
        self.gen = torch.Generator().manual_seed(tc.seed)  # latents and penalty interpolation weights
        self.step = 0  # generator steps completed
        self.nimg = 0  # real images shown by the main phases (kimg in logs, schedules, EMA ramp-up)
        self.skipped = torch.zeros((), dtype=torch.long, device=self.device)  # non-finite updates skipped
        self.skipped_run = torch.zeros((), dtype=torch.long, device=self.device)  # ... in a row, up to now
        self.fixed_z = torch.randn(tc.sample_n, self.z_dim, generator=stream(tc.seed, "fixed_latents"))
        self.log: RunLog | None = None
        self._skipped_host = 0
        # train.skip_limit is checked once the updates since the last read could have reached it (a host
        # count, no sync): the run stops within one step of the limit, not at the next log point (49 for 5)
        self._updates = 0
        self._skip_read_at = tc.skip_limit
        self.health = None
        if cfg.health.enabled:
            from gandist.train.coverage_alarm import health_monitor_class

            probe_z = torch.randn(
                cfg.health.diversity_n, self.z_dim, generator=stream(tc.seed, "health_probe")
            )
            settings = {**flat_dict(cfg), "run.world_size": self.world}  # what the advice reads
            self.health = health_monitor_class(settings)(
                cfg.health,
                settings,
                sample=lambda: self.objective.pictures(self.sample_net(), probe_z.to(self.device), self.data),
                reference=self.data.peek(cfg.health.diversity_n, position=0),
                log_fn=self._log_event,
                echo=self.strategy.is_main,
            )
        self.apply_stage()
        self._metric_names = self.metric_names()
        if cfg.metrics.every:
            from gandist.metrics.evaluate import METRICS

            if self._uses_inception():  # a missing weights file fails now, not at the first evaluation
                from gandist.metrics.extractors import find_inception_weights

                find_inception_weights(cfg.metrics.inception or None)
            unknown = [m for m in self._metric_names if m not in METRICS]
            if unknown:
                raise UserError(
                    f"metrics.names: unknown metric(s) {', '.join(unknown)}; valid: {', '.join(METRICS)}"
                )

    # ---------------------------------------------------------------------------------------------
    # Helpers

    def sample_net(self) -> nn.Module:
        """The network pictures and evaluations use: G's EMA where the run keeps one. A run without it
        samples G itself, in eval mode as its EMA would be (batch norm's running statistics, StyleGAN's
        stored noise, no side effects); the next training step puts it back in training mode."""
        net = self.objective.sample_network
        for name, source in self.objective.ema.items():
            if source == net:
                return self.ema[name].shadow if name in self.ema else self.nets[net].eval()
        return self.nets[net]

    def open_run(self) -> RunLog:
        """Create the run directory (on the main rank) the first time something is written."""
        if self.log is None:
            self.log = RunLog(self.run_dir, enabled=self.log_enabled)
        return self.log

    def _log_event(self, record: dict[str, Any]) -> None:
        self.open_run().log(record)

    def growing(self) -> list[nn.Module]:
        """Every network (EMA copies included) that follows the growth schedule."""
        mods = [*self.nets.values(), *(ema.shadow for ema in self.ema.values())]
        return [m for m in mods if hasattr(m, "set_growth")]

    def apply_stage(self) -> Stage:
        """Resolution, fade-in, batch size and learning rates for the step that starts now."""
        stage = self.schedule.at(self.nimg)
        if self.schedule.progressive:
            for net in self.growing():
                net.set_growth(stage.resolution, stage.alpha)
            changed = self._stage_key is not None and stage.key != self._stage_key
            if changed and self.cfg.schedule.reset_optimizer:
                for opt in (
                    self.optimizers.values()
                ):  # the official code resets Adam when the level of detail changes
                    opt.state.clear()
            if self.stage is None or stage.resolution != self.stage.resolution:
                self.data.serve_resolution(stage.resolution)
                if self.health is not None:
                    self.health.set_reference(self.data.peek(self.cfg.health.diversity_n, position=0))
        self._stage_key = stage.key
        self.stage, self.batch_size = stage, stage.batch
        return stage

    def done(self) -> bool:
        tc = self.cfg.train
        return self.nimg >= tc.kimg * 1000 if tc.kimg > 0 else self.step >= tc.steps

    def progress_fraction(self) -> float:
        tc = self.cfg.train
        return self.nimg / (tc.kimg * 1000) if tc.kimg > 0 else self.step / tc.steps

    def set_learning_rates(self) -> None:
        o = self.cfg.optim
        f = self.progress_fraction()
        # linear: to 0 over the run (WGAN-GP's code); linear_half: constant, then to 0 over the second half (CycleGAN)
        scale = {"linear": 1.0 - f, "linear_half": min(1.0, 2.0 * (1.0 - f))}.get(o.decay, 1.0)
        for name, opt in self.optimizers.items():
            role = self.optimizer_specs[name].role
            stage_lr, config_lr = (self.stage.lr_d, o.lr_d) if role == "D" else (self.stage.lr_g, o.lr_g)
            ratio = stage_lr / config_lr  # exactly 1.0 without a per-resolution table
            for group, lr in zip(opt.param_groups, self.base_lr[name]):
                group["lr"] = lr * ratio * scale

    # ---------------------------------------------------------------------------------------------
    # Phases and steps

    def run_phase(self, phase: Phase) -> dict[str, torch.Tensor]:
        """One phase: gradients of the phase's networks from its micro-batches, then a guarded step."""
        opt = self.optimizers[phase.optimizer]
        # freeze the networks the phase does not train; parameters a user froze stay frozen
        frozen = [(p, p.requires_grad) for name, net in self.nets.items() if name not in phase.trains
                  for p in net.parameters()]  # fmt: skip
        for p, _ in frozen:
            p.requires_grad_(False)
        b, stage = self.batch_size // self.world, self.stage  # this rank's share of the global batch
        micro = self.cfg.train.micro_batch or b
        chunks: list[Batch | None] = [None] * math.ceil(b / micro)
        if phase.reals:
            if self.world > 1 and micro < b and not self.data.whole_batches:
                # micro-batch m of rank r is samples [m*W*n + r*n, ...) of the global batch, as the latents
                # (ctx.latents), so W ranks with micro-batch n reproduce one process with micro-batch W*n
                chunks = [self.data.next_batch(micro).to(self.device) for _ in chunks]
            else:
                chunks = self.data.next_batch(b).to(self.device).split(micro)
            if stage.phase == "fade":  # reals blended like G's output (PGGAN Sec. 3)
                for chunk in chunks:
                    chunk.x = fade_reals(chunk.x, stage.alpha)
            if phase.interval == 1:
                self.nimg += self.batch_size
        opt.zero_grad(set_to_none=True)
        losses, acc = [], defaultdict(list)
        extras = {"resolution": stage.resolution, "alpha": stage.alpha}
        fp16 = self.precision == "fp16"
        for chunk in chunks:
            n = len(chunk) if chunk is not None else min(micro, b - micro * len(losses))
            gain = phase.gain * n / b
            ctx = PhaseContext(self.step, gain * self.loss_scale if fp16 else gain, self.gen, self.device,
                               self.z_dim, n, extras, self.strategy.rank, self.world)  # fmt: skip
            # the objective's backward() runs the strategy's (autograd's, or a DeepSpeed engine's)
            with self._autocast(), backward_through(self.strategy.backward_fn(phase.optimizer)):
                result = self.objective.accumulate(phase, chunk, ctx)
            losses.append(result.loss)
            for k, v in result.stats.items():
                acc[k].append(v)
        stats = {k: v[0] if len(v) == 1 else torch.stack(v).mean() for k, v in acc.items()}
        loss = losses[0] if len(losses) == 1 else torch.stack(losses)
        # data parallelism: the global batch's gradients, once per optimizer step (after all micro-batches)
        params = self.params[phase.optimizer]
        self.strategy.reduce_gradients(params)
        finite = torch.isfinite(loss).all()
        if fp16:
            finite = finite & self._unscale(opt)
        ok = self.strategy.all_reduce_flag(finite)
        if self.health is not None:
            held = self.strategy.grad_norm(phase.optimizer)  # None: the gradients are the parameters' .grad
            stats[f"{phase.optimizer.lower()}_grad_norm"] = _grad_norm(params) if held is None else held
        self.strategy.step(phase.optimizer, opt, ok)  # default: guarded_step(opt, ok)
        self.skipped += (~ok).long()
        self.skipped_run = torch.where(ok, 0, self.skipped_run + 1)
        self._updates += 1
        self.objective.after_step(phase)
        for p, flag in frozen:
            p.requires_grad_(flag)
        return stats

    def _autocast(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def _unscale(self, opt: torch.optim.Optimizer) -> torch.Tensor:
        """fp16: divide the gradients by the loss scale and adapt the scale, on the device (the
        GradScaler algorithm without its host reads). Returns 'no gradient overflowed'."""
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        found_inf = torch.zeros((), device=self.device)
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, self.loss_scale.reciprocal())
        torch._amp_update_scale_(self.loss_scale, self._scale_growth, found_inf, FP16_GROWTH, FP16_BACKOFF,
                                 FP16_INTERVAL)  # fmt: skip
        return found_inf == 0

    def train_step(self) -> dict[str, list[torch.Tensor]]:
        """One generator step: the stage, every phase due at this step, then EMA. Returns device
        statistics (one tensor per phase run, averaged on the host when read)."""
        self.apply_stage()
        self.set_learning_rates()
        for net in self.nets.values():  # after pictures of G itself (sample_net), which ran in eval mode
            if not net.training:
                net.train()
        stats: dict[str, list[torch.Tensor]] = defaultdict(list)
        for phase in self.phases:
            if self.step % phase.interval:
                continue
            for _ in range(phase.repeats(self.step)):
                for k, v in self.run_phase(phase).items():
                    stats[k].append(v)
        self.strategy.sync_buffers(list(self.nets.values()))
        for name, ema in self.ema.items():
            source = self.nets[self.objective.ema[name]]
            beta = self.objective.ema_decay.get(name)
            ema.update(source, ema.beta(self.batch_size, self.nimg) if beta is None else beta)
        self.step += 1
        return stats

    # ---------------------------------------------------------------------------------------------
    # The loop

    def train(self, progress: bool | None = None) -> dict[str, Any]:
        """Train until train.steps generator steps (or train.kimg thousand images); returns a summary.
        Checkpoints at the end, every train.ckpt_every steps and when a stop signal arrives."""
        tc = self.cfg.train
        progress = tc.progress if progress is None else progress
        log = self.open_run()
        log.write_config(dump_config(self.cfg))
        log.truncate_after(self.step)
        log.truncate_after(self.step, file="metrics.jsonl")
        if self.step == 0:
            self.save_reals()
            self.save_samples(f"step_{0:07d}")
        by_images = tc.kimg > 0
        total, done_now = (tc.kimg, self.nimg / 1000) if by_images else (tc.steps, self.step)
        bar = _progress(progress and self.strategy.is_main, total, done_now, "kimg" if by_images else "step")
        pending: list[tuple[int, dict[str, list[torch.Tensor]]]] = []
        window: dict[str, list[float]] = defaultdict(list)
        interrupted = None
        t_start = t_tick = time.perf_counter()
        step_start, nimg_tick = self.step, self.nimg
        with StopRequest() as stop:
            while not self.done():
                pending.append((self.step + 1, self.train_step()))
                finished = self.done()
                if bar is not None:
                    bar.update(min(self.nimg / 1000, tc.kimg) - bar.n if by_images else 1)
                log_now = self.step % tc.log_every == 0 or finished
                health_now = self.health is not None and self.health.due(self.step)
                skip_now = tc.skip_limit > 0 and self._updates >= self._skip_read_at
                if log_now or health_now or skip_now:
                    self.read_point(pending, window, health_now)
                if log_now:
                    t_tick, nimg_tick = self.log_point(log, bar, window, t_tick, nimg_tick)
                if self.step % tc.sample_every == 0 or finished:
                    self.save_samples(f"step_{self.step:07d}")
                if self.cfg.metrics.every and (self.step % self.cfg.metrics.every == 0 or finished):
                    self.run_metrics()
                signum = self.strategy.max_over_ranks(stop.signal or 0)  # all ranks stop at the same step
                if signum:
                    interrupted = signal.Signals(signum).name  # (SIGTERM > SIGUSR2 > SIGINT where several came)
                    break
                if self.step % tc.ckpt_every == 0 and not finished:
                    self.save()
            if bar is not None:
                bar.close()
            # The last checkpoint and the summary are written with the handlers still in place: SLURM signals
            # every process of a step and torchrun passes the same signal on to its workers, so a second SIGUSR2
            # or SIGTERM can reach a rank while the ranks save together, and the default action would end that
            # rank in the middle of the save (the others then fail in its collectives)
            path = self.save()
            summary = self.summarise(log, path, interrupted, t_start, step_start)
            self.strategy.barrier()  # every rank leaves together: gloo aborts a rank whose peers close while it works
        return summary


def _grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """Global L2 norm of an optimizer's gradients, on the device (one fused multi-tensor kernel)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))

