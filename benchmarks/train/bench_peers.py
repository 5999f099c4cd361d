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

Families, peers and settings (issue 31's StyleGAN settings; each family's paper settings otherwise; 2 threads):

| family | peer | peer files used | settings |
|---|---|---|---|
| stylegan | rosinality/style-based-gan-pytorch | model.py (StyledConvBlock, ConvBlock, EqualConv2d, ...); train.py's r1 step | 32 px, width 64, batch 16, non-saturating + R1 gamma 10 every step, style mixing 0.9 |
| pggan | facebookresearch/pytorch_GAN_zoo | models/networks/progressive_conv_net.py (GNet, DNet) and what it imports, models/utils/utils.py (finiteCheck); base_GAN.py's optimizeParameters | 32 px (stable, no fade), width 64, batch 16, WGAN-GP lambda 10 + drift 0.001, minibatch stddev 4, one D step, Adam 1e-3 (0, 0.99), G EMA 0.999 |
| cyclegan | junyanz/pytorch-CycleGAN-and-pix2pix | models/networks.py (ResnetGenerator, NLayerDiscriminator, GANLoss), util/image_pool.py; cycle_gan_model.py's optimize_parameters | 64 px, 1 image per domain (the paper's batch), ngf = ndf = 64, 6 residual blocks, 3-layer PatchGAN, instance norm without running stats, LSGAN, cycle 10, identity 0.5, pools of 50, Adam 2e-4 (0.5, 0.999) |

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

RES, WIDTH, BATCH, GAMMA, MIXING, LR = 32, 64, 16, 10.0, 0.9, 1e-3  # issue 31's StyleGAN settings
PG_LAMBDA, PG_DRIFT, PG_MBSTD = 10.0, 0.001, 4  # PGGAN (Karras et al. 2018, Appendix A.1)
CG_RES, CG_BLOCKS, CG_LAYERS, CG_LR, CG_POOL = 64, 6, 3, 2e-4, 50  # CycleGAN (Zhu et al. 2017, Sec. 4, 7.2)
CG_CYCLE, CG_IDENTITY = 10.0, 0.5
SETTINGS = {
    "stylegan": f"{RES} px, width {WIDTH}, batch {BATCH}, non-saturating + R1 {GAMMA:g} every step, style mixing "
    f"{MIXING}, Adam {LR:g} (0, 0.99)",
    "pggan": f"{RES} px (stable), width {WIDTH}, batch {BATCH}, WGAN-GP lambda {PG_LAMBDA:g} + drift {PG_DRIFT}, "
    f"minibatch stddev {PG_MBSTD}, one D step, Adam {LR:g} (0, 0.99), G EMA 0.999",
    "cyclegan": f"{CG_RES} px, 1 image per domain, ngf = ndf = {WIDTH}, {CG_BLOCKS} residual blocks, "
    f"{CG_LAYERS}-layer PatchGAN, LSGAN, cycle {CG_CYCLE:g}, identity {CG_IDENTITY}, pools of {CG_POOL}, "
    f"Adam {CG_LR:g} (0.5, 0.999)",
}
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


def _import_peer(folder: Path, module: str):
    """`folder/module.py` as a module of its own (its files checked by `_peer_class` first)."""
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

    common = ["name=peers", "train.progress=false", "health.enabled=false", "train.steps=1000000"]
    if family == "stylegan":
        keys = [
            "model.name=stylegan", f"model.z_dim={WIDTH}", f"model.w_dim={WIDTH}", f"model.mapping_width={WIDTH}",
            f"model.fmap_max={WIDTH}", f"model.style_mixing={MIXING}", "loss.name=nonsaturating",
            f"loss.r1_gamma={GAMMA}", "loss.reg_interval=1", f"optim.lr_g={LR}", f"optim.lr_d={LR}",
            "optim.beta1=0.0", "optim.beta2=0.99", "data.name=procedural", f"data.resolution={RES}",
            f"data.batch_size={BATCH}", "data.size=64",
        ]  # fmt: skip
    elif family == "pggan":
        keys = [
            "model.name=pggan", f"model.z_dim={WIDTH}", f"model.fmap_base={WIDTH * 16}", f"model.fmap_max={WIDTH}",
            f"model.mbstd_group={PG_MBSTD}", "loss.name=wgan-gp", f"loss.gp_weight={PG_LAMBDA}",
            f"loss.drift={PG_DRIFT}", "train.d_steps=1", "train.ema_beta=0.999", f"optim.lr_g={LR}",
            f"optim.lr_d={LR}", "optim.beta1=0.0", "optim.beta2=0.99", "data.name=procedural",
            f"data.resolution={RES}", f"data.batch_size={BATCH}", "data.size=64",
        ]  # fmt: skip
    elif family == "cyclegan":
        keys = [
            "model.name=cyclegan", f"model.g_width={WIDTH}", f"model.d_width={WIDTH}", f"model.blocks={CG_BLOCKS}",
            f"model.d_layers={CG_LAYERS}", "loss.name=lsgan", f"loss.cycle={CG_CYCLE}",
            f"loss.identity={CG_IDENTITY}", f"loss.pool={CG_POOL}", f"optim.lr_g={CG_LR}", f"optim.lr_d={CG_LR}",
            "optim.beta1=0.5", "optim.beta2=0.999", "optim.decay=none", "data.name=shapes",
            f"data.resolution={CG_RES}", "data.batch_size=2", "data.count=8", "data.preprocess=none",
            "data.mirror=false",
        ]  # fmt: skip
    else:
        raise Skip(f"no gandist side for {family} in this harness")
    return load_config(None, [*common, *keys, *extra])


class GandistSide:
    def __init__(self, family: str, extra: list[str]) -> None:
        from gandist.data.base import Batch
        from gandist.strategies import strategy_from_config
        from gandist.train.loop import Trainer

        cfg = _gandist_config(family, extra)
        strategy = strategy_from_config(cfg.train)
        self.trainer = Trainer(cfg, Path(tempfile.mkdtemp()), strategy, log_enabled=False)
        fixed = self.trainer.data.peek(cfg.data.batch_size).to(self.trainer.device)
        self.trainer.data.next_batch = lambda n: Batch(fixed[:n])  # one fixed batch, as the peer's
        g, d = (("G_AB", "G_BA"), ("D_A", "D_B")) if family == "cyclegan" else (("G",), ("D",))
        nets = self.trainer.nets
        self.params = {k: sum(_params(nets[n]) for n in names) for k, names in (("G", g), ("D", d))}
        self.batch = fixed  # the peer trains on these images too, where its family reads images

    def step(self) -> None:
        self.trainer.train_step()


# ---------------------------------------------------------------------------------------------------
# rosinality/style-based-gan-pytorch


class RosinalityStyleGAN:
    """The peer's StyledGenerator / Discriminator narrowed to width 64 at 32 px from its own blocks (its
    classes hard-code 512 channels and 1024 px), and train.py's `--loss r1 --mixing` step with n_critic 1."""

    FILES = ("model.py",)

    def __init__(self, folder: Path, real=None) -> None:  # trains on its own batch, as before
        import torch
        from torch import nn, optim

        m = _import_peer(folder, "model")
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


def _import_peer_package(folder: Path, alias: str):
    """The peer's `models` package under another name (its relative imports intact, its __init__ not run, so
    nothing beyond the files used is imported)."""
    import types

    pkg = types.ModuleType(alias)
    pkg.__path__ = [str(folder / "models")]
    sys.modules[alias] = pkg
    return pkg


class ZooPGGAN:
    """facebookresearch/pytorch_GAN_zoo's GNet / DNet grown to 32 px at width 64 (its ProgressiveGAN.getNetG /
    getNetD with depthScale0 and every added scale 64, the WGAN-GP criterion's linear output, minibatch stddev on,
    alpha 0: the stable phase), and base_GAN.optimizeParameters with lambdaGP 10 and epsilonD 0.001."""

    FILES = ("models/networks/progressive_conv_net.py", "models/networks/custom_layers.py",
             "models/networks/mini_batch_stddev_module.py", "models/utils/utils.py")  # fmt: skip

    def __init__(self, folder: Path, real) -> None:
        import copy
        import importlib

        import torch
        from torch import optim

        _import_peer_package(folder, "peer_gan_zoo")
        nets = importlib.import_module("peer_gan_zoo.networks.progressive_conv_net")
        self.finite_check = importlib.import_module("peer_gan_zoo.utils.utils").finiteCheck
        self.torch = torch
        torch.manual_seed(0)
        self.G = nets.GNet(WIDTH, WIDTH, generationActivation=None, dimOutput=3)
        self.D = nets.DNet(WIDTH, sizeDecisionLayer=1, miniBatchNormalization=True, dimInput=3)
        for _ in range(3):  # 4 -> 8 -> 16 -> 32
            self.G.addScale(WIDTH)
            self.D.addScale(WIDTH)
        self.G.setNewAlpha(0.0)
        self.D.setNewAlpha(0.0)
        self.avgG = copy.deepcopy(self.G)  # buildAvG
        for p in self.avgG.parameters():
            p.requires_grad = False
        trainable = lambda net: filter(lambda p: p.requires_grad, net.parameters())  # noqa: E731
        # getOptimizerD / getOptimizerG: betas=[0, 0.99], which today's torch takes only as floats
        self.d_opt = optim.Adam(trainable(self.D), betas=[0.0, 0.99], lr=LR)
        self.g_opt = optim.Adam(trainable(self.G), betas=[0.0, 0.99], lr=LR)
        self.real = real
        self.params = {"G": _params(self.G), "D": _params(self.D)}

    def _gradient_penalty(self, real, fake) -> float:
        # gradient_losses.WGANGPGradientPenalty(input, fake, discriminator, weight, backward=True)
        torch = self.torch
        batch = real.size(0)
        alpha = torch.rand(batch, 1)
        alpha = alpha.expand(batch, int(real.nelement() / batch)).contiguous().view(real.size())
        interpolates = torch.autograd.Variable(alpha * real + ((1 - alpha) * fake), requires_grad=True)
        decision = self.D(interpolates, False)[:, 0].sum()
        gradients = torch.autograd.grad(outputs=decision, inputs=interpolates, create_graph=True,
                                        retain_graph=True)[0].view(batch, -1)  # fmt: skip
        gradients = (gradients * gradients).sum(dim=1).sqrt()
        penalty = ((gradients - 1.0) ** 2).mean() * PG_LAMBDA
        penalty.backward(retain_graph=True)
        return penalty.item()

    def step(self) -> None:
        torch, G, D = self.torch, self.G, self.D
        losses = {}
        real = self.real
        n = real.size()[0]
        self.d_opt.zero_grad()
        pred_real = D(real, False)
        loss_d = -pred_real[:, 0].sum()  # WGANGP.getCriterion(pred, True)
        losses["lossD_real"] = loss_d.item()
        fake = G(torch.randn(n, WIDTH)).detach()
        pred_fake = D(fake, False)
        loss_d_fake = pred_fake[:, 0].sum()
        losses["lossD_fake"] = loss_d_fake.item()
        loss_d += loss_d_fake
        losses["lossD_Grad"] = self._gradient_penalty(real, fake)
        loss_eps = (pred_real[:, 0] ** 2).sum() * PG_DRIFT
        loss_d += loss_eps
        losses["lossD_Epsilon"] = loss_eps.item()
        loss_d.backward(retain_graph=True)
        self.finite_check(D.parameters())
        self.d_opt.step()
        self.g_opt.zero_grad()
        self.d_opt.zero_grad()
        fake = G(torch.randn(n, WIDTH))
        pred_fake, _features = D(fake, True)
        loss_g = -pred_fake[:, 0].sum()
        losses["lossG_fake"] = loss_g.item()
        loss_g.backward(retain_graph=True)
        self.finite_check(G.parameters())
        self.g_opt.step()
        # the peer's add_(0.001, p.data) is the removed positional-alpha form of add_(p.data, alpha=0.001)
        for p, avg_p in zip(G.parameters(), self.avgG.parameters()):
            avg_p.mul_(0.999).add_(p.data, alpha=0.001)
        self.last = losses


class JunyanzCycleGAN:
    """junyanz/pytorch-CycleGAN-and-pix2pix's ResnetGenerator / NLayerDiscriminator with instance norm as its
    current get_norm_layer('instance') builds it (no affine, no running stats), GANLoss('lsgan'), ImagePool,
    and CycleGANModel.optimize_parameters (forward, both G with D frozen, then D_A and D_B)."""

    FILES = ("models/networks.py", "util/image_pool.py")

    def __init__(self, folder: Path, real) -> None:
        import functools
        import itertools

        import torch
        from torch import nn

        networks = _import_peer(folder / "models", "networks")
        pool = _import_peer(folder / "util", "image_pool")
        torch.manual_seed(0)
        norm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
        self.G_A, self.G_B = (
            networks.ResnetGenerator(3, 3, WIDTH, norm_layer=norm, use_dropout=False, n_blocks=CG_BLOCKS)
            for _ in range(2)
        )
        self.D_A, self.D_B = (
            networks.NLayerDiscriminator(3, WIDTH, n_layers=CG_LAYERS, norm_layer=norm) for _ in range(2)
        )
        self.gan = networks.GANLoss("lsgan")  # gan_mode='lsgan' (use_lsgan=True in older versions)
        self.l1 = torch.nn.L1Loss()
        self.opt_G = torch.optim.Adam(itertools.chain(self.G_A.parameters(), self.G_B.parameters()), lr=CG_LR,
                                      betas=(0.5, 0.999))  # fmt: skip
        self.opt_D = torch.optim.Adam(itertools.chain(self.D_A.parameters(), self.D_B.parameters()), lr=CG_LR,
                                      betas=(0.5, 0.999))  # fmt: skip
        self.pool_A, self.pool_B = pool.ImagePool(CG_POOL), pool.ImagePool(CG_POOL)
        self.real_A, self.real_B = real[0::2], real[1::2]
        self.params = {"G": _params(self.G_A) + _params(self.G_B), "D": _params(self.D_A) + _params(self.D_B)}

    @staticmethod
    def _requires_grad(nets, flag: bool) -> None:
        for net in nets:
            for p in net.parameters():
                p.requires_grad = flag

    def _backward_d(self, net, real, fake):
        loss_real = self.gan(net(real), True)
        loss_fake = self.gan(net(fake.detach()), False)
        loss = (loss_real + loss_fake) * 0.5
        loss.backward()
        return loss

    def step(self) -> None:
        real_A, real_B = self.real_A, self.real_B
        fake_B = self.G_A(real_A)  # forward()
        rec_A = self.G_B(fake_B)
        fake_A = self.G_B(real_B)
        rec_B = self.G_A(fake_A)
        self._requires_grad([self.D_A, self.D_B], False)
        self.opt_G.zero_grad()
        idt_A = self.G_A(real_B)  # backward_G()
        loss_idt_A = self.l1(idt_A, real_B) * CG_CYCLE * CG_IDENTITY
        idt_B = self.G_B(real_A)
        loss_idt_B = self.l1(idt_B, real_A) * CG_CYCLE * CG_IDENTITY
        loss_G_A = self.gan(self.D_A(fake_B), True)
        loss_G_B = self.gan(self.D_B(fake_A), True)
        loss_cycle_A = self.l1(rec_A, real_A) * CG_CYCLE
        loss_cycle_B = self.l1(rec_B, real_B) * CG_CYCLE
        loss_G = loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B + loss_idt_A + loss_idt_B
        loss_G.backward()
        self.opt_G.step()
        self._requires_grad([self.D_A, self.D_B], True)
        self.opt_D.zero_grad()
        self._backward_d(self.D_A, real_B, self.pool_B.query(fake_B))  # backward_D_A()
        self._backward_d(self.D_B, real_A, self.pool_A.query(fake_A))  # backward_D_B()
        self.opt_D.step()


PEERS = {"stylegan": RosinalityStyleGAN, "pggan": ZooPGGAN, "cyclegan": JunyanzCycleGAN}


def _peer_class(family: str, folder: Path | None):
    """The peer's class once its source files are known to be there (before gandist builds anything)."""
    if folder is None:
        raise Skip(f"no --peer-path {family}=DIR given (the peer's source is never downloaded)")
    if family not in PEERS:
        raise Skip(f"the {family} peer is not wired into this harness")
    missing = [f for f in PEERS[family].FILES if not (folder / f).is_file()]
    if missing:
        raise Skip(f"peer source not found: {', '.join(str(folder / f) for f in missing)}")
    return PEERS[family]


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
        "family": family, "settings": SETTINGS[family], "peer_path": str(folder), "pairs": len(pairs),
        "block_steps": args.block,
        "gandist_params_G": ours.params["G"], "gandist_params_D": ours.params["D"],
        "peer_params_G": peer.params["G"], "peer_params_D": peer.params["D"],
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "gandist_median_s": statistics.median(p["gandist_s"] for p in pairs),
        "peer_median_s": statistics.median(p["peer_s"] for p in pairs), "per_pair": pairs,
    }  # fmt: skip


def run_family(family: str, folder: Path | None, args, done: list[dict]) -> dict:
    """Warm-up, then `args.pairs` interleaved pairs; the result files are rewritten after every pair (with
    `done`, the families finished before), so a run stopped early keeps what it measured."""
    peer_class = _peer_class(family, folder)  # first: a family without its peer skips before gandist builds
    ours = GandistSide(family, args.set)
    peer = peer_class(folder, ours.batch.cpu())
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
        f"faster); {args.threads} threads. Settings per family:", "",
        *(f"- {r['family']}: {SETTINGS[r['family']]}" for r in rows if "skipped" not in r), "",
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
