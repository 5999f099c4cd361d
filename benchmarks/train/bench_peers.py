"""gandist's training step beside a peer implementation's, on the same CPU, in one process.

    python benchmarks/train/bench_peers.py --peer-path stylegan=/path/to/style-based-gan-pytorch --pairs 12

The peer's network classes are imported from the folder the user gives (`--peer-path FAMILY=DIR`; never
downloaded); the peer's step is its training script's step transcribed here call for call (a training script
is a loop over a DataLoader on CUDA, not a function one can call per step), on the peer's own modules,
losses and optimizers. Both sides train equal networks (parameter counts printed and recorded) on one fixed
batch at the same settings; each pair runs one block of `--block` steps of each side, alternating which
goes first, after `--warmup` steps of each, so slow drifts of a loaded machine hit both sides alike. The
result is the distribution of per-pair ratios gandist / peer (median, min, max; below 1 = gandist faster)
and, with `--profile`, torch.profiler op counts per step (mul, sum, fill_, ...) of each side.

Families and peers (settings of issue 31: 32 px, width 64, batch 16, non-saturating loss + R1 gamma 10
every step, style mixing 0.9, 2 threads):

| family | peer | peer files used |
|---|---|---|
| stylegan | rosinality/style-based-gan-pytorch | model.py (StyledConvBlock, ConvBlock, EqualConv2d, ...); train.py's r1 step |
| pggan | facebookresearch/pytorch_GAN_zoo | not wired yet: the family is skipped with its reason |
| cyclegan | junyanz/pytorch-CycleGAN-and-pix2pix | not wired yet: the family is skipped with its reason |

A family whose peer folder is not given or lacks the files is skipped with the reason in the result.
Writes `results/peers-<device>-<date>[-tag].{json,csv,md}` with provenance.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

RES, WIDTH, BATCH, GAMMA, MIXING, LR = 32, 64, 16, 10.0, 0.9, 1e-3  # issue 31's settings
PROFILED_OPS = (
    "aten::mul",
    "aten::sum",
    "aten::fill_",
    "aten::add",
    "aten::native_batch_norm",
    "aten::convolution",
)


class Skip(Exception):
    """A family that cannot run here, with the reason."""


def _import_peer(folder: Path, module: str, files: tuple[str, ...]):
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise Skip(f"peer source not found: {', '.join(str(folder / f) for f in missing)}")
    spec = importlib.util.spec_from_file_location(f"peer_{module}", folder / f"{module}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _params(m) -> int:
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------------------------------------------
# gandist


def _gandist_config(family: str, extra: list[str]):
    from gandist.config import load_config

    if family != "stylegan":
        raise Skip(f"no gandist side for {family} in this harness")
    return load_config(None, [
        "name=peers", "model.name=stylegan", f"model.z_dim={WIDTH}", f"model.w_dim={WIDTH}",
        f"model.mapping_width={WIDTH}", f"model.fmap_max={WIDTH}", f"model.style_mixing={MIXING}",
        "loss.name=nonsaturating", f"loss.r1_gamma={GAMMA}", "loss.reg_interval=1", f"optim.lr_g={LR}",
        f"optim.lr_d={LR}", "optim.beta1=0.0", "optim.beta2=0.99", "data.name=procedural", f"data.resolution={RES}",
        f"data.batch_size={BATCH}", "data.size=64", "train.progress=false", "health.enabled=false",
        "train.steps=1000000", *extra,
    ])  # fmt: skip


class GandistSide:
    def __init__(self, family: str, extra: list[str]) -> None:
        from gandist.data.base import Batch
        from gandist.strategies import strategy_from_config
        from gandist.train.loop import Trainer

        cfg = _gandist_config(family, extra)
        self.trainer = Trainer(cfg, Path(tempfile.mkdtemp()), strategy_from_config(cfg.train), log_enabled=False)
        fixed = self.trainer.data.peek(BATCH).to(self.trainer.device)
        self.trainer.data.next_batch = lambda n: Batch(fixed[:n])  # one fixed batch, as the peer's
        self.params = {k: _params(v) for k, v in self.trainer.nets.items() if k in ("G", "D")}

    def step(self) -> None:
        self.trainer.train_step()


# ---------------------------------------------------------------------------------------------------
# rosinality/style-based-gan-pytorch


class RosinalityStyleGAN:
    """The peer's StyledGenerator / Discriminator narrowed to width 64 at 32 px from its own blocks (its
    classes hard-code 512 channels and 1024 px), and train.py's `--loss r1 --mixing` step with n_critic 1."""

    def __init__(self, folder: Path) -> None:
        import torch
        from torch import nn, optim

        m = _import_peer(folder, "model", ("model.py",))
        self.m, self.torch = m, torch
        w, steps = WIDTH, 3  # 4 -> 8 -> 16 -> 32: the peer's `step` 3

        class Generator(m.Generator):  # the peer's forward, narrower progression
            def __init__(self) -> None:
                nn.Module.__init__(self)
                blocks = [m.StyledConvBlock(w, w, 3, 1, style_dim=w, initial=True)]
                blocks += [m.StyledConvBlock(w, w, 3, 1, style_dim=w, upsample=True) for _ in range(steps)]
                self.progression = nn.ModuleList(blocks)
                self.to_rgb = nn.ModuleList(m.EqualConv2d(w, 3, 1) for _ in range(steps + 1))

        class StyledGenerator(m.StyledGenerator):
            def __init__(self) -> None:
                nn.Module.__init__(self)
                self.generator = Generator()
                layers = [m.PixelNorm()]
                for _ in range(8):
                    layers += [m.EqualLinear(w, w), nn.LeakyReLU(0.2)]
                self.style = nn.Sequential(*layers)

        class Discriminator(m.Discriminator):
            def __init__(self) -> None:
                nn.Module.__init__(self)
                blocks = [m.ConvBlock(w, w, 3, 1, downsample=True) for _ in range(steps)]
                self.progression = nn.ModuleList(blocks + [m.ConvBlock(w + 1, w, 3, 1, 4, 0)])
                self.from_rgb = nn.ModuleList(m.EqualConv2d(3, w, 1) for _ in range(steps + 1))
                self.n_layer = len(self.progression)
                self.linear = m.EqualLinear(w, 1)

        torch.manual_seed(0)
        self.G, self.D, self.G_running = StyledGenerator(), Discriminator(), StyledGenerator()
        self.G_running.train(False)
        self.step_index = steps
        self.g_opt = optim.Adam(self.G.generator.parameters(), lr=LR, betas=(0.0, 0.99))
        self.g_opt.add_param_group({"params": self.G.style.parameters(), "lr": LR * 0.01, "mult": 0.01})
        self.d_opt = optim.Adam(self.D.parameters(), lr=LR, betas=(0.0, 0.99))
        self._accumulate(0)
        self.real = torch.randn(BATCH, 3, RES, RES).tanh()
        self.params = {"G": _params(self.G), "D": _params(self.D)}
        self.rng = random.Random(0)

    @staticmethod
    def _requires_grad(model, flag: bool) -> None:
        for p in model.parameters():
            p.requires_grad = flag

    def _accumulate(self, decay: float = 0.999) -> None:
        # train.py's accumulate(); `add_(1 - decay, t)` is the removed positional-alpha form of add_(t, alpha=)
        par1, par2 = dict(self.G_running.named_parameters()), dict(self.G.named_parameters())
        for k in par1:
            par1[k].data.mul_(decay).add_(par2[k].data, alpha=1 - decay)

    def step(self) -> None:
        torch, F, D, G, s = self.torch, self.torch.nn.functional, self.D, self.G, self.step_index
        from torch.autograd import grad

        self._requires_grad(G, False)
        self._requires_grad(D, True)
        D.zero_grad()
        real_image = self.real.clone()
        real_image.requires_grad = True
        real_predict = F.softplus(-D(real_image, step=s, alpha=-1)).mean()
        real_predict.backward(retain_graph=True)
        grad_real = grad(outputs=real_predict.sum(), inputs=real_image, create_graph=True)[0]
        grad_penalty = GAMMA / 2 * (grad_real.view(grad_real.size(0), -1).norm(2, dim=1) ** 2).mean()
        grad_penalty.backward()
        grad_loss_val = grad_penalty.item()
        if self.rng.random() < MIXING:
            gen_in11, gen_in12, gen_in21, gen_in22 = torch.randn(4, BATCH, WIDTH).chunk(4, 0)
            gen_in1 = [gen_in11.squeeze(0), gen_in12.squeeze(0)]
            gen_in2 = [gen_in21.squeeze(0), gen_in22.squeeze(0)]
        else:
            gen_in1, gen_in2 = torch.randn(2, BATCH, WIDTH).chunk(2, 0)
            gen_in1, gen_in2 = gen_in1.squeeze(0), gen_in2.squeeze(0)
        fake_image = G(gen_in1, step=s, alpha=-1)
        fake_predict = F.softplus(D(fake_image, step=s, alpha=-1)).mean()
        fake_predict.backward()
        disc_loss_val = (real_predict + fake_predict).item()
        self.d_opt.step()
        G.zero_grad()
        self._requires_grad(G, True)
        self._requires_grad(D, False)
        predict = D(G(gen_in2, step=s, alpha=-1), step=s, alpha=-1)
        loss = F.softplus(-predict).mean()
        gen_loss_val = loss.item()
        loss.backward()
        self.g_opt.step()
        self._accumulate()
        self._requires_grad(G, False)
        self._requires_grad(D, True)
        self.last = (grad_loss_val, disc_loss_val, gen_loss_val)


def _peer_side(family: str, folder: Path | None):
    if folder is None:
        raise Skip(f"no --peer-path {family}=DIR given (the peer's source is never downloaded)")
    if family == "stylegan":
        return RosinalityStyleGAN(folder)
    raise Skip(f"the {family} peer is not wired into this harness yet")


# ---------------------------------------------------------------------------------------------------
# Measurement


def _block(side, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        side.step()
    return (time.perf_counter() - t0) / steps


def _op_counts(side, steps: int) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            side.step()
    events = {e.key: e for e in prof.key_averages()}
    total = sum(e.self_cpu_time_total for e in events.values()) or 1.0
    out = {}
    for op in PROFILED_OPS:
        e = events.get(op)
        out[f"{op}_calls"] = e.count / steps if e else 0.0
        out[f"{op}_self_pct"] = 100.0 * e.self_cpu_time_total / total if e else 0.0
    return out


def _summary(family: str, folder: Path | None, args, ours, peer, pairs: list[dict]) -> dict:
    ratios = [p["ratio"] for p in pairs]
    return {
        "family": family, "peer_path": str(folder), "pairs": len(pairs), "block_steps": args.block,
        "gandist_params_G": ours.params["G"], "gandist_params_D": ours.params["D"],
        "peer_params_G": peer.params["G"], "peer_params_D": peer.params["D"],
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "gandist_median_s": statistics.median(p["gandist_s"] for p in pairs),
        "peer_median_s": statistics.median(p["peer_s"] for p in pairs), "per_pair": pairs,
    }  # fmt: skip


def run_family(family: str, folder: Path | None, args, done: list[dict]) -> dict:
    """Warm-up, then `args.pairs` interleaved pairs; the result files are rewritten after every pair (with
    `done`, the families finished before), so a run stopped early keeps what it measured."""
    peer = _peer_side(family, folder)  # first: a family without its peer skips before gandist builds
    ours = GandistSide(family, args.set)
    print(f"[{family}] parameters: gandist G {ours.params['G']:,} D {ours.params['D']:,}; "
          f"peer G {peer.params['G']:,} D {peer.params['D']:,}", flush=True)  # fmt: skip
    for _ in range(args.warmup):
        ours.step()
        peer.step()
    pairs = []
    for i in range(args.pairs):
        if i % 2 == 0:
            a, b = _block(ours, args.block), _block(peer, args.block)
        else:
            b, a = _block(peer, args.block), _block(ours, args.block)
        pairs.append({"pair": i, "gandist_s": a, "peer_s": b, "ratio": a / b})
        print(
            f"[{family}] pair {i}: gandist {a:.3f} s/step, peer {b:.3f} s/step, ratio {a / b:.3f}", flush=True
        )
        _write([*done, _summary(family, folder, args, ours, peer, pairs)], args)
    row = _summary(family, folder, args, ours, peer, pairs)
    if args.profile:
        row["profile_gandist"] = _op_counts(ours, args.profile)
        row["profile_peer"] = _op_counts(peer, args.profile)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", default="stylegan,pggan,cyclegan")
    p.add_argument("--peer-path", action="append", default=[], metavar="FAMILY=DIR")
    p.add_argument("--pairs", type=int, default=12)
    p.add_argument("--block", type=int, default=2, help="steps per side per pair")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", type=int, default=0, help="also count ops over this many steps per side")
    p.add_argument("--set", action="append", default=[], help="extra gandist config keys (key=value)")
    p.add_argument("--tag", default="")
    p.add_argument("--out", default=str(HERE.parent / "results"))
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    paths = dict(kv.split("=", 1) for kv in args.peer_path)
    rows = []
    for family in args.family.split(","):
        folder = Path(paths[family]).expanduser() if family in paths else None
        try:
            rows.append(run_family(family, folder, args, rows))
        except Skip as e:
            print(f"[{family}] skipped: {e}", flush=True)
            rows.append({"family": family, "skipped": str(e)})
    _write(rows, args)
    return rows


def _write(rows: list[dict], args) -> None:
    from provenance import provenance

    prov = provenance()
    device = prov["device"].split(":")[0].replace(" ", "")
    stem = Path(args.out) / f"peers-{device}-{prov['date'][:10]}{'-' + args.tag if args.tag else ''}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({"provenance": prov, "rows": rows}, indent=1))
    flat = [
        {k: v for k, v in r.items() if k not in ("per_pair", "profile_gandist", "profile_peer")} for r in rows
    ]
    keys = sorted({k for r in flat for k in r})
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(flat)
    lines = [
        f"# gandist vs peers, training steps side by side ({prov['device']})", "",
        f"`{prov['command']}` at {prov['commit']}, {prov['date']}, torch {prov['torch']}. Interleaved blocks of "
        f"{args.block} steps per side in one process; ratio = gandist / peer seconds per step (below 1: gandist "
        f"faster). {RES} px, width {WIDTH}, batch {BATCH}, non-saturating + R1 {GAMMA:g} every step, style mixing "
        f"{MIXING}, {args.threads} threads.", "",
        "| family | pairs | params G (gandist / peer) | params D (gandist / peer) | gandist s/step | peer s/step "
        "| ratio median | min | max |", "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['family']} | skipped: {r['skipped']} | | | | | | | |")
            continue
        lines.append(
            f"| {r['family']} | {r['pairs']} | {r['gandist_params_G']:,} / {r['peer_params_G']:,} | "
            f"{r['gandist_params_D']:,} / {r['peer_params_D']:,} | {r['gandist_median_s']:.3f} | "
            f"{r['peer_median_s']:.3f} | {r['ratio_median']:.3f} | {r['ratio_min']:.3f} | {r['ratio_max']:.3f} |"
        )
    for r in rows:
        if "profile_gandist" in r:
            lines += ["", f"Op counts per step ({r['family']}, torch.profiler): calls (share of self CPU time)", "",
                      "| op | gandist | peer |", "|---|---|---|"]  # fmt: skip
            for op in PROFILED_OPS:
                g, q = r["profile_gandist"], r["profile_peer"]
                lines.append(f"| {op} | {g[op + '_calls']:.0f} ({g[op + '_self_pct']:.1f} %) | "
                             f"{q[op + '_calls']:.0f} ({q[op + '_self_pct']:.1f} %) |")  # fmt: skip
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.json/.csv/.md")


if __name__ == "__main__":
    main()
