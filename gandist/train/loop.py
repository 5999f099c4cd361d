"""One training loop for every family.

The loop runs the phases its objective declares (`gandist/objectives/base.py`: the interface and the
table of phases per family) the same way for every family, and owns everything around them:

  1. every phase: freeze all networks but the phase's, draw its real batch, split it into
     micro-batches, let the objective accumulate gradients, agree across ranks whether the loss was
     finite, step the optimizer (or, where it was not, leave parameters and optimizer state exactly as
     they were), and let the objective act after the step (e.g. WGAN's clipping);
  2. after all phases of a generator step: the EMA networks, with a half-life in images;
  3. before each step: the growth schedule (`schedule.py`, a function of images seen) sets the
     resolution, fade-in alpha, batch size and learning rates; the data source serves that resolution;
  4. around the steps: learning-rate decay, logs, sample pictures, evaluation, checkpoints, signals.

Precision: fp32, or bf16 / fp16 autocast with fp32 weights and optimizer state (fp16 with a dynamic
loss scale kept on the device); gradient penalties run in fp32 inside the objective.

Nothing in a step is read back to the host: statistics stay on the device as 0-dim tensors and are
read in one transfer at log points and health-monitor points; the non-finite decision is made on the
device (`optim.guarded_step`). All randomness the loop draws comes from CPU generators whose states go
into every checkpoint, so a resumed CPU run continues bit for bit.
"""

from __future__ import annotations

import contextlib
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
from gandist.errors import CheckpointError, DivergedError, UserError
from gandist.models import build_networks
from gandist.objectives.base import Phase, PhaseContext, backward_through, build_objective
from gandist.rng import stream
from gandist.train import checkpoint as ckpt
from gandist.train.ema import EMA
from gandist.train.optim import build_optimizer
from gandist.train.runlog import RunLog
from gandist.train.schedule import Schedule, Stage, fade_reals
from gandist.train.strategy import Strategy, strategy_from_config

CHECKPOINT_FORMAT = 2  # 1: gandist 0.1 (fixed G/D/G_ema, d_updates); 2: named networks, images seen, stage
# fp16 loss scale: torch.amp.GradScaler's defaults (start 2^16, x2 after 2000 finite steps, x0.5 on overflow)
FP16_SCALE, FP16_GROWTH, FP16_BACKOFF, FP16_INTERVAL = 2.0**16, 2.0, 0.5, 2000


def check_world_size(cfg: Config, world: int) -> None:
    """Every global batch (data.batch_size and each schedule.batch entry) must split evenly over the ranks,
    and each rank's share over train.micro_batch and the minibatch-stddev groups."""
    if world == 1:
        return
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
    and exit. A second Ctrl-C aborts at once."""

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
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
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
        self.strategy = strategy or strategy_from_config(cfg.train)  # the entry point's, or the config's
        self.world = self.strategy.world_size
        check_world_size(cfg, self.world)
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
        if (
            tc.compile
        ):  # the objective reaches the plain module for double backward (objectives.base.uncompiled)
            wrapped = {name: torch.compile(net) for name, net in wrapped.items()}
        if self.world > 1:  # after the shared initialisation: each rank its own global stream (noise inputs)
            gen = stream(tc.seed, "rank_global", self.strategy.rank)
            torch.manual_seed(int(torch.randint(2**62, (), generator=gen)))
        self.objective = build_objective(type(cfg.model).objective, cfg, wrapped, self.kind)
        self.ema = {
            name: EMA(self.nets[source], tc.ema_kimg * 1000, tc.ema_rampup)
            for name, source in self.objective.ema.items()
        }
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
        self.health = None
        if cfg.health.enabled:
            from gandist.train.health import HealthMonitor

            probe_z = torch.randn(
                cfg.health.diversity_n, self.z_dim, generator=stream(tc.seed, "health_probe")
            )
            self.health = HealthMonitor(
                cfg.health,
                flat_dict(cfg),
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
        stats: dict[str, list[torch.Tensor]] = defaultdict(list)
        for phase in self.phases:
            if self.step % phase.interval:
                continue
            for _ in range(phase.repeat):
                for k, v in self.run_phase(phase).items():
                    stats[k].append(v)
        self.strategy.sync_buffers(list(self.nets.values()))
        for name, ema in self.ema.items():
            source = self.nets[self.objective.ema[name]]
            ema.update(source, ema.beta(self.batch_size, self.nimg))
        self.step += 1
        return stats

    # ---------------------------------------------------------------------------------------------
    # Checkpoints

    def state_tensors(self, objective: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
        out = {}
        modules = {**self.nets, **{name: ema.shadow for name, ema in self.ema.items()}}
        for prefix, module in modules.items():
            for k, v in module.state_dict().items():
                out[f"{prefix}.{k}"] = v
        for k, v in (objective or self.objective.state_dict())["tensors"].items():
            out[f"objective.{k}"] = v
        return out

    def save(self) -> Path | None:
        """Write a checkpoint (the main rank writes; every rank calls it: the RNG states of all ranks are
        gathered into it); returns its folder on the main rank."""
        rng = {**self.strategy.rng_states(), "loop": self.gen.get_state()}
        objective = self.objective.state_dict()  # rank-local under data parallelism (CycleGAN's image pools):
        objective["tensors"] = self.strategy.gather_rank_tensors(objective["tensors"])  # every rank's
        # state the strategy keeps itself (DeepSpeed's engine checkpoints, written by every rank into a
        # staging folder that becomes part of the checkpoint before it counts); None for single and ddp
        extra = self.strategy.save_extra(self.run_dir / "checkpoints", self.step)
        if not self.strategy.is_main:
            return None
        self.open_run()
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "nimg": self.nimg,
            "schedule": self.schedule.describe(),
            "stage": {
                "resolution": self.stage.resolution,
                "alpha": self.stage.alpha,
                "phase": self.stage.phase,
                "key": list(self._stage_key) if self._stage_key else None,
            },  # fmt: skip
            "skipped": int(self.skipped),  # host read: checkpoints are not inside a step
            "world_size": self.world,
            "data": self.data.state_dict(),
            "objective": objective["values"],
            "config": dump_config(self.cfg),
            "data_shape": list(self.data.shape),
            "data_kind": self.kind,
            "torch": torch.__version__,
            "time": time.time(),
        }
        optim = self.strategy.optimizer_states(self.optimizers)  # default: every optimizer's state_dict()
        path = ckpt.save_checkpoint(
            self.run_dir / "checkpoints", self.step, self.state_tensors(objective), optim, rng, state, extra=extra
        )
        ckpt.prune_checkpoints(self.run_dir / "checkpoints", self.cfg.train.keep_ckpts)
        return path

    def load(self, path: Path) -> None:
        data = ckpt.load_checkpoint(path)
        s = data["state"]
        written = s.get("schedule", {"kind": "fixed"})  # format 1 had no schedule: one resolution
        ours = self.schedule.describe()
        if written.get("kind") != ours["kind"] or (ours["kind"] == "progressive" and written != ours):
            differ = ", ".join(
                f"{k} {written.get(k)} there, {v} here" for k, v in ours.items() if written.get(k) != v
            )
            raise CheckpointError(
                f"checkpoint '{path}' was written under another resolution schedule ({differ}); resume with "
                "the config it was written with (its run's config.yaml), or start a new run with --out elsewhere"
            )
        written_world = s.get("world_size", 1)
        if written_world != self.world and self.data.whole_batches:
            raise CheckpointError(
                f"checkpoint '{path}' was written by {written_world} rank(s) and this run has {self.world}: the DALI "
                f"loader's positions are per rank, so its data order cannot continue; resume with {written_world} "
                "rank(s), or with data.loader=torch (its positions are global)"
            )
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
        self.strategy.load_optimizer_states(self.optimizers, data["optim"], path)
        # DeepSpeed: each engine's checkpoint (weights and optimizer partitions); nothing for single and ddp
        self.strategy.load_extra(path)
        objective_tensors = {k[len("objective.") :]: v for k, v in t.items() if k.startswith("objective.")}
        objective_tensors = self.strategy.own_rank_tensors(objective_tensors, written_world)
        self.objective.load_state_dict({"tensors": objective_tensors, "values": s.get("objective", {})})
        self._restore_rng(data["rng"], written_world, path)
        self.gen.set_state(data["rng"]["loop"])
        self.step, self.skipped = s["step"], torch.tensor(s["skipped"], device=self.device)
        # format 1 (gandist 0.1) kept no image count: every step showed d_steps batches
        default_nimg = s["step"] * self.cfg.data.batch_size * self.cfg.train.d_steps
        self.nimg = s.get("nimg", default_nimg)
        self.data.load_state_dict(s["data"])
        key = (s.get("stage") or {}).get("key")
        self._stage_key = (
            tuple(key) if key else None
        )  # so a phase boundary right after resume resets as before
        self.stage = None
        self.apply_stage()

    def _restore_rng(self, rng: dict[str, torch.Tensor], written_world: int, path: Path) -> None:
        """This rank's global RNG states as they were when the checkpoint was written. Written by another
        number of ranks, the data order and the loop's draws still continue exactly (they depend on the
        global batch only), but the per-rank streams (noise inputs) cannot: they are reseeded, with a notice."""
        own = f"rank{self.strategy.rank}."
        mine = {k[len(own) :]: v for k, v in rng.items() if k.startswith(own)}
        if written_world == self.world:
            self.strategy.set_rng_state(mine or rng)  # one process writes its states without a rank prefix
            return
        gen = stream(self.cfg.train.seed, "rank_global", self.strategy.rank + 1000 * self.step)
        torch.manual_seed(int(torch.randint(2**62, (), generator=gen)))
        if self.strategy.is_main:
            print(
                f"[gandist] checkpoint '{path}' was written by {written_world} rank(s), this run has {self.world}: "
                "the data order and latents continue exactly (same global batch), the per-rank random streams "
                "(noise inputs, dropout) are reseeded",
                file=sys.stderr,
            )

    # ---------------------------------------------------------------------------------------------
    # Pictures

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

    # ---------------------------------------------------------------------------------------------
    # Periodic evaluation

    def metric_names(self) -> list[str]:
        names = self.cfg.metrics.names
        if names == "auto":
            if self.kind == "points":
                return ["modes", "fid"] if self.cfg.data.name in ("ring", "grid") else ["fid"]
            return ["fid", "is", "kid"] if self.cfg.data.name == "digits" else ["fid"]
        return [m.strip() for m in names.split(",") if m.strip()]

    def _uses_inception(self) -> bool:
        ex = self.cfg.metrics.extractor
        return ex == "inception" or (
            ex == "auto" and self.kind == "images" and self.cfg.data.name != "digits"
        )

    def run_metrics(self) -> dict[str, Any] | None:
        from gandist.metrics.evaluate import evaluate

        m = self.cfg.metrics
        if not hasattr(self, "_extractor"):
            from gandist.metrics.extractors import build_extractor

            self._extractor = build_extractor(
                m.extractor, self.kind, self.cfg.data.name, self.device, m.inception or None
            )
        res = evaluate(self.sample_net(), self.cfg, self.kind, self._metric_names, n=m.n, seed=self.cfg.train.seed,
                       extractor=self._extractor, strategy=self.strategy, out_dir=self.run_dir)  # fmt: skip
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
                    if self.schedule.progressive:
                        st = self.stage
                        record.update(
                            resolution=st.resolution, alpha=st.alpha, phase=st.phase, batch=st.batch
                        )
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

            if (log.dir / "log.jsonl").is_file():  # (a run stopped before its first record has none)
                plot_log(log.dir / "log.jsonl", log.dir / "losses.png")
            (log.dir / "summary.json").write_text(json.dumps(summary, indent=1))
        log.close()
        return summary


def _grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """Global L2 norm of an optimizer's gradients, on the device (one fused multi-tensor kernel)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


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
