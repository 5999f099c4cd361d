"""DeepSpeed (`train.strategy=deepspeed`): data parallelism with one DeepSpeed engine per optimizer.

A GAN trains two networks with two optimizers, so it gets two engines (two `deepspeed.initialize` calls),
one per optimizer spec of the objective (classic: engine `G` over G, engine `D` over D), each built around
the optimizer gandist already built (fused Adam, RMSprop, SGD: the engine's "client optimizer").

What goes where (stages 0-2 keep the whole weights on every rank, so a network's own forward needs
nothing from its engine):

  forward passes   always the plain network (`engine.module`), under gandist's own autocast: the D and G
                   passes, the frozen-D pass of the G phase and the R1 / WGAN-GP pass. A forward through
                   the engine would add backward hooks to its outputs (they scale gradients for DeepSpeed's
                   accumulation and start its backward bookkeeping), which must not run for a frozen D or
                   for `autograd.grad(create_graph=True)` w.r.t. the inputs.
  backward         `engine.backward(loss, scale_wrt_gas=False)` for the engine of the phase's optimizer: the
                   objective still calls `gandist.objectives.base.backward(loss, gain)`, which the loop routes
                   here (`backward_fn`); the loop's gain already weights the micro-batches.
  reduction, step  `engine.step()` once per phase: with `managed_gradient_accumulation: false` every step()
                   is the accumulation boundary (the loop owns the micro-batches), where the engine averages
                   the gradients over the ranks once (stage 0: one bucketed all-reduce; stage 1: the ZeRO
                   optimizer's reduce; stage 2: its reduce-scatter during backward) and updates. The loop's
                   own `reduce_gradients` is therefore a no-op here. A non-finite loss on any rank skips the
                   step on every rank (the flag is read on the host: one sync per phase).
  checkpoints      every rank writes each engine's checkpoint (`engine.save_checkpoint`; ZeRO >= 1 saves one
                   optimizer partition per rank) into `checkpoints/.deepspeed-<step>/<engine>/`, which gandist's
                   atomic checkpoint moves inside as `deepspeed/<engine>/` and lists in its manifest; the run
                   state (step, data position, every rank's RNG, EMA) is gandist's as for any run, so
                   `--resume auto` restores both. optim.pt holds no optimizer state under DeepSpeed.

Batch sizes come from the gandist config and are written into the JSON (data.batch_size is the global
batch, each rank takes batch / ranks, in micro-batches of train.micro_batch); a JSON that sets them
otherwise is refused with one line. Precision is gandist's, as under ddp: train.precision=bf16 runs bf16
autocast around the forward passes with fp32 weights, gradients and optimizer state (the engines stay
fp32). DeepSpeed's own "bf16" section is refused: it keeps the weights in bf16, and the gradient penalties
(fp32 by design), G_ema (an fp32 average of G) and the checkpoints need fp32 weights (measured: the R1 pass
fails with "Input type (float) and bias type (c10::BFloat16) should be the same", and G_ema's lerp with a
dtype error). fp16 is refused: its loss scale does not reach the `autograd.grad` of gradient penalties.
The JSON must set gradient_clipping (DeepSpeed's default is 1.0, which silently clips).

Limits: ZeRO 3 (partitioned weights) is refused; an engine checkpoint resumes only with the world size
that wrote it (ZeRO partitions); DeepSpeed's checkpoint files are pickles loaded by DeepSpeed itself
(`weights_only=False`), trusted because gandist verifies their sha256 against its manifest first.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandist.errors import CheckpointError, UserError
from gandist.registry import register
from gandist.strategies.base import (
    STRATEGIES,
    DataParallelStrategy,
    DistEnv,
    StrategyError,
    _rendezvous_defaults,
)

TAG = "state"  # the one tag inside each engine's folder (gandist's folder already names the step)
BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")
ZERO_STAGES = (0, 1, 2)


def _import_deepspeed(device: torch.device):
    """The deepspeed package, imported here only (it is slow to import and optional)."""
    if device.type == "cpu":  # otherwise DeepSpeed picks CUDA wherever it is visible
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        import deepspeed
    except ImportError:
        raise StrategyError(
            "train.strategy=deepspeed needs the deepspeed package: pip install deepspeed "
            "(or pip install 'gandist[deepspeed]')"
        ) from None
    import logging

    deepspeed.utils.logger.setLevel(logging.WARNING)  # its INFO lines repeat every engine's config per rank
    _skip_shm_build(deepspeed)
    return deepspeed


def _skip_shm_build(deepspeed) -> None:
    """DeepSpeed's CPU communication backend JIT-compiles a shared-memory C++ op (ninja, ~2 minutes on 2
    cores, once per machine) when it starts; only `inference_all_reduce` (DeepSpeed inference) uses it,
    training collectives go through torch.distributed (gloo). Skip the build; leave other releases alone."""
    import importlib

    try:
        comm = importlib.import_module("deepspeed.comm.torch")
    except ImportError:
        return
    if hasattr(comm, "build_shm_op"):
        comm.build_shm_op = lambda: None


def resolve_json(name: str) -> Path:
    """train.deepspeed_config: a path to a JSON file, or the name of one in launch/deepspeed/."""
    p = Path(name).expanduser()
    if p.suffix == ".json" or p.exists():
        if not p.is_file():
            raise UserError(
                f"train.deepspeed_config='{name}': no such file; give a JSON path or one of {_known()}"
            )
        return p
    found = _launch_dir() / f"{name}.json"
    if not found.is_file():
        raise UserError(f"train.deepspeed_config='{name}' is neither a JSON file nor one of {_known()}")
    return found


def _launch_dir() -> Path:
    from gandist.resources import deepspeed_dir

    return deepspeed_dir()


def _known() -> str:
    names = sorted(p.stem for p in _launch_dir().glob("*.json"))
    return ", ".join(names) if names else "(no DeepSpeed JSON files in this installation: give a path)"


def build_ds_config(raw: dict[str, Any], source: str, cfg, world: int) -> dict[str, Any]:
    """The DeepSpeed config of one engine: the JSON checked against the gandist config, batch sizes filled in.
    Every contradiction is one UserError naming the key, both values and the fix."""
    batch = cfg.data.batch_size
    per_rank = batch // world
    micro = cfg.train.micro_batch or per_rank
    derived = {"train_batch_size": batch, "train_micro_batch_size_per_gpu": micro,
               "gradient_accumulation_steps": per_rank // micro}  # fmt: skip
    wrong = [k for k in BATCH_KEYS if k in raw and raw[k] != "auto" and raw[k] != derived[k]]
    if wrong:
        have = ", ".join(f"{k}={raw[k]}" for k in wrong)
        need = ", ".join(f"{k}={derived[k]}" for k in wrong)
        raise UserError(
            f"{source} sets {have}, but data.batch_size={batch} over {world} rank(s) with "
            f"train.micro_batch={cfg.train.micro_batch} needs {need}; delete these keys from the JSON "
            "(gandist fills them in from its config) or change data.batch_size / train.micro_batch"
        )
    precision = cfg.train.precision
    if precision == "fp16" or (raw.get("fp16") or {}).get("enabled", False):
        raise UserError(
            f"fp16 is not supported with train.strategy=deepspeed ({source} / train.precision={precision}): "
            "its loss scale does not reach the autograd.grad of R1 / WGAN-GP penalties; use "
            "train.precision=bf16 or fp32, and no fp16 section in the JSON"
        )
    for key in ("bf16", "bfloat16"):
        if (raw.get(key) or {}).get("enabled", False):
            raise UserError(
                f"{source} enables {key}, which makes DeepSpeed keep the weights in bf16, but gandist's fp32 "
                "gradient penalties, G_ema and checkpoints need fp32 weights; delete the bf16 section from the "
                "JSON and set train.precision=bf16 (bf16 autocast with fp32 weights, as under ddp)"
            )
    if (raw.get("torch_autocast") or {}).get("enabled", False):
        raise UserError(
            f"{source} enables torch_autocast, but gandist runs autocast itself (train.precision); "
            'delete "torch_autocast" from the JSON'
        )
    if "gradient_clipping" not in raw:
        raise UserError(
            f"{source} does not set gradient_clipping; set it explicitly (0.0 = off; DeepSpeed's default "
            "1.0 clips every update)"
        )
    stage = int((raw.get("zero_optimization") or {}).get("stage", 0))
    if stage not in ZERO_STAGES:
        raise UserError(
            f"{source} asks for ZeRO stage {stage}; gandist supports stages 0-2 (stage 3 partitions the "
            "weights, which the frozen-D and gradient-penalty passes through engine.module cannot see)"
        )
    for key in ("optimizer", "scheduler"):
        if key in raw:
            raise UserError(
                f"{source} defines an {key}; delete it from the JSON (gandist's optim section builds the "
                "optimizers and learning-rate schedule, and hands them to the engines)"
            )
    if raw.get("managed_gradient_accumulation", False):
        raise UserError(
            f"{source} sets managed_gradient_accumulation=true; delete it (gandist's loop owns the micro-batches "
            "and calls engine.step() once per optimizer step)"
        )
    out = {k: v for k, v in raw.items() if not k.startswith("_")}  # "_comment" keys are for people
    out.update(derived)
    out["managed_gradient_accumulation"] = False  # every engine.step() is the boundary (module docstring)
    out.setdefault("zero_allow_untested_optimizer", True)  # ZeRO with gandist's client optimizers
    out.setdefault("steps_per_print", 2**31 - 1)  # gandist logs; DeepSpeed's progress lines would repeat them
    return out


DS_BUCKET = 500_000_000  # DeepSpeed's default reduce / all-gather bucket, in elements (2 GB of fp32)


def _fit_buckets(ds_config: dict[str, Any], n_params: int) -> dict[str, Any]:
    """ZeRO allocates its gradient bucket (reduce_bucket_size elements) at every backward; with DeepSpeed's
    default, 5e8 elements, that is a 2 GB buffer per backward, whatever the network's size (measured on CPU,
    quickstart DCGAN, ZeRO 1: 2.4 s per generator step against 0.08 s under ddp, nearly all of it in
    `torch.empty` of the bucket). A bucket larger than the engine's parameters holds nothing more, so
    unless the JSON sets them, both buckets are the engine's parameter count rounded up to a multiple of
    256 (at most the default)."""
    out = {**ds_config, "zero_optimization": dict(ds_config.get("zero_optimization") or {})}
    if int(out["zero_optimization"].get("stage", 0)) == 0:
        return out
    # rounded up to a multiple of 256: ZeRO asserts a multiple of its alignment (2 to 8 elements)
    size = min(-(-max(n_params, 1) // 256) * 256, DS_BUCKET)
    for key in ("reduce_bucket_size", "allgather_bucket_size"):
        out["zero_optimization"].setdefault(key, size)
    return out


class DeepSpeedStrategy(DataParallelStrategy):
    """Data parallelism through one DeepSpeed engine per optimizer (module docstring). Wrapping is the ddp
    strategy's (rank 0's weights, synchronised batch norm, averaged buffers), so both train the same model."""

    name = "deepspeed"

    def __init__(self, device: torch.device, env: DistEnv, backend: str = "auto",
                 sync_batchnorm: bool = True) -> None:  # fmt: skip
        self._ds = _import_deepspeed(torch.device(device))  # a missing package fails before any rendezvous
        super().__init__(device, env, backend, sync_batchnorm)
        # DeepSpeed reads these itself (asserts LOCAL_RANK); `gandist train` without torchrun sets none of them
        ranks = {"RANK": env.rank, "WORLD_SIZE": env.world_size, "LOCAL_RANK": env.local_rank}
        for key, value in ranks.items():
            os.environ.setdefault(key, str(value))
        self.engines: dict[str, Any] = {}
        self._norms: dict[str, torch.Tensor] = {}  # grad_norm tensors step() fills in (ZeRO 2)
        self.zero_stage = 0
        self.source = ""

    def prepare(
        self, cfg, networks: dict[str, list[nn.Module]], optimizers: dict[str, torch.optim.Optimizer]
    ) -> None:
        path = resolve_json(cfg.train.deepspeed_config)
        self.source = str(path)
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); fix the file"
            ) from None
        if not isinstance(raw, dict):
            raise UserError(f"{path}: a DeepSpeed config is a JSON object {{...}}; fix the file")
        ds_config = build_ds_config(raw, str(path), cfg, self.world_size)
        self.zero_stage = int(ds_config.get("zero_optimization", {}).get("stage", 0))
        for name, opt in optimizers.items():
            nets = networks[name]
            # one network per optimizer in the classic family; several (CycleGAN's generators) share an engine
            module = nets[0] if len(nets) == 1 else nn.ModuleList(nets)
            config = _fit_buckets(ds_config, sum(p.numel() for p in module.parameters()))
            engine, *_ = self._ds.initialize(model=module, optimizer=opt, config=config,
                                             dist_init_required=False)  # fmt: skip
            self.engines[name] = engine

    def backward_fn(self, optimizer: str):
        engine = self.engines[optimizer]
        # the loop's gain already weights each micro-batch: no division by gradient_accumulation_steps
        return lambda loss: engine.backward(loss, scale_wrt_gas=False)

    def reduce_gradients(self, params: list[torch.Tensor]) -> None:
        """Nothing: the engine averages the gradients over the ranks in `step` (once per optimizer step)."""

    def grad_norm(self, optimizer: str) -> torch.Tensor | None:
        """ZeRO 0 and 1 leave this rank's gradients in `.grad` until the step (the loop reads them; the log
        averages the ranks' norms). ZeRO 2 reduce-scatters them during backward and frees `.grad`: report the
        global norm the engine computes in its step (NaN where the step was skipped)."""
        if self.zero_stage < 2:
            return None
        self._norms[optimizer] = torch.full((), float("nan"))
        return self._norms[optimizer]

    def step(self, optimizer: str, opt: torch.optim.Optimizer, ok: torch.Tensor) -> None:
        engine = self.engines[optimizer]
        norm = self._norms.pop(optimizer, None)
        if bool(ok):  # host read of the all-reduced flag: the engine's step is a host decision
            engine.step()
            if norm is not None and engine.get_global_grad_norm() is not None:
                norm.fill_(float(engine.get_global_grad_norm()))
            return
        # every rank skips: drop the accumulated gradients and leave weights and optimizer state as they were.
        # ZeRO keeps gradients of its own (stage 2 reduces them into partitions during backward): clear them as
        # its step does on a loss-scale overflow (stage_1_and_2.py, DeepSpeedZeroOptimizer.step).
        zopt = engine.optimizer
        if self.zero_stage > 0:
            zopt.zero_grad(set_to_none=True)
            getattr(zopt, "_release_preflattened_grad_buffers", lambda: None)()
            for attr in ("averaged_gradients", "all_grad_tensors"):
                held = getattr(zopt, attr, None)
                if isinstance(held, dict):
                    for k in held:
                        held[k] = None
                elif isinstance(held, list):
                    held[:] = [None] * len(held)
        engine.zero_grad()

    def optimizer_states(self, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, dict]:
        return {}  # in each engine's checkpoint (ZeRO: one partition per rank)

    def load_optimizer_states(self, optimizers, states, path) -> None:
        pass  # load_extra

    def save_extra(self, root, step: int) -> dict[str, Path]:
        """Every rank writes its part of each engine's checkpoint into one staging folder."""
        staging = Path(root) / f".deepspeed-{step:09d}"
        if self.is_main:
            if staging.exists():  # left by a crash while saving this step before
                shutil.rmtree(staging)
            staging.mkdir(parents=True)
        self.barrier()
        for name, engine in self.engines.items():
            engine.save_checkpoint(str(staging / name), tag=TAG, client_state={}, save_latest=False)
        self.barrier()  # every rank's partition is on disk before rank 0 moves the folder
        return {"deepspeed": staging}

    def load_extra(self, path) -> None:
        from gandist.train import checkpoint as ckpt

        path = Path(path)
        files = ckpt.manifest_files(path, "deepspeed/")
        if not files:
            raise CheckpointError(
                f"checkpoint '{path}' holds no DeepSpeed engine state (it was written by another strategy); "
                "resume it with that train.strategy, or start a new run with --out elsewhere"
            )
        ckpt.verify_checkpoint(path, files)  # sha256 of every engine file before DeepSpeed unpickles it
        written = len([f for f in files if "zero_pp_rank_" in f])  # ZeRO >= 1: one partition file per rank
        if (written > 0) != (self.zero_stage > 0):
            raise CheckpointError(
                f"checkpoint '{path}' was written under ZeRO stage {'1 or 2' if written else '0'}, this run uses "
                f"stage {self.zero_stage}; resume with the train.deepspeed_config it was written with (its config.yaml)"
            )
        if written:
            per_engine = written // max(len(self.engines), 1)
            if per_engine != self.world_size:
                raise CheckpointError(
                    f"checkpoint '{path}' was written by {per_engine} DeepSpeed rank(s) under ZeRO, this run has "
                    f"{self.world_size}; resume with {per_engine} ranks (ZeRO partitions the optimizer state)"
                )
        for name, engine in self.engines.items():
            folder = path / "deepspeed" / name
            if not folder.is_dir():
                raise CheckpointError(f"checkpoint '{path}' has no DeepSpeed state for engine {name}")
            loaded, _ = engine.load_checkpoint(str(folder), tag=TAG, load_optimizer_states=True,
                                               load_lr_scheduler_states=False)  # fmt: skip
            if loaded is None:
                raise CheckpointError(
                    f"checkpoint '{path}': DeepSpeed could not load engine {name} from {folder}"
                )

    def describe(self) -> str:
        return f"{super().describe()}, ZeRO stage {self.zero_stage} ({Path(self.source).name or '?'})"


@register(STRATEGIES, "deepspeed")
def _deepspeed(device: torch.device, env: DistEnv, backend: str, sync_batchnorm: bool) -> DeepSpeedStrategy:
    _rendezvous_defaults(env, backend, device)
    return DeepSpeedStrategy(device, env, backend, sync_batchnorm)
