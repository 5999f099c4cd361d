"""What a checkpoint of a run holds and how a Trainer writes, reads and continues from it: the weights of
every network and EMA copy, the objective's state, optimizer states, the schedule's stage, the data
position and every rank's RNG states (`save`); a resume that refuses what does not fit with one line and
migrates the previous format (`load`); the RNG streams, reseeded when the number of ranks changed
(`_restore_rng`). The files themselves (atomic writes, manifests, verification) are `checkpoint.py`'s.

`Checkpointing` is a part of `Trainer` (`loop.py`): its methods read the Trainer's networks, objective,
strategy, schedule and data.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from gandist.config import dump_config
from gandist.errors import CheckpointError
from gandist.load import load_into
from gandist.rng import stream
from gandist.train import checkpoint as ckpt

CHECKPOINT_FORMAT = 2  # 1: gandist 0.1 (fixed G/D/G_ema, d_updates); 2: named networks, images seen, stage


class Checkpointing:
    """Save, load and RNG restore of a Trainer."""

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
            first = load_into(module, t, prefix)
            if first:
                raise CheckpointError(
                    f"checkpoint '{path}' does not fit this run's {prefix} ({first}); resume with the config "
                    "it was written with (its config.yaml), or start a new run with --out elsewhere"
                )
        self.strategy.load_optimizer_states(self.optimizers, data["optim"], path)
        # DeepSpeed: each engine's checkpoint (weights and optimizer partitions); nothing for single and ddp
        self.strategy.load_extra(path)
        objective_tensors = {k[len("objective.") :]: v for k, v in t.items() if k.startswith("objective.")}
        objective_tensors = self.strategy.own_rank_tensors(objective_tensors, written_world)
        # the objective's rank-local state (CycleGAN's image pools): named in the notice of a shape change
        ranked = sorted({k.split(".")[0] for k in objective_tensors})
        self.objective.load_state_dict({"tensors": objective_tensors, "values": s.get("objective", {})})
        self._restore_rng(data["rng"], written_world, path, ranked)
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

    def _restore_rng(
        self, rng: dict[str, torch.Tensor], written_world: int, path: Path, ranked: list[str]
    ) -> None:
        """This rank's global RNG states as they were when the checkpoint was written. Written by another
        number of ranks, the data order and the loop's draws still continue exactly (they depend on the
        global batch only), but the per-rank streams (noise inputs) cannot: they are reseeded, with a notice
        that also names the objective's rank-local state (`ranked`) that each rank took from another."""
        own = f"rank{self.strategy.rank}."
        mine = {k[len(own) :]: v for k, v in rng.items() if k.startswith(own)}
        if written_world == self.world:
            self.strategy.set_rng_state(mine or rng)  # one process writes its states without a rank prefix
            return
        gen = stream(self.cfg.train.seed, "rank_global", self.strategy.rank + 1000 * self.step)
        torch.manual_seed(int(torch.randint(2**62, (), generator=gen)))
        if self.strategy.is_main:
            source = "the one process" if written_world == 1 else f"rank (r mod {written_world})"
            print(
                f"[gandist] checkpoint '{path}' was written by {written_world} rank(s), this run has {self.world}: "
                "the data order and latents continue exactly (same global batch), the per-rank random streams "
                "(noise inputs, dropout) are reseeded"
                + (f"; rank r takes its {', '.join(ranked)} from {source}" if ranked else ""),
                file=sys.stderr,
            )
