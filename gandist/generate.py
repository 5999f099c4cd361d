"""Using a trained generator: samples, latent interpolation (lerp/slerp) and latent vector arithmetic
(Radford et al. 2016, Sec. 6.3)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gandist.config import Config, config_from_yaml_text
from gandist.errors import CheckpointError, UserError
from gandist.models import build_networks
from gandist.train import checkpoint as ckpt


@dataclass
class LoadedGenerator:
    G: nn.Module
    cfg: Config
    kind: str  # "images" | "points"
    step: int
    path: Path

    def latents(self, seeds: list[int]) -> torch.Tensor:
        """One latent per seed: z_s ~ N(0, I) from a generator seeded with s (reproducible across tools)."""
        z_dim = self.cfg.model.z_dim
        return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])

    @torch.no_grad()
    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.G(z)


def load_generator(path: str | Path, which: str = "G_ema") -> LoadedGenerator:
    """Load the EMA generator (or 'G') from a checkpoint folder or run directory. Reads and verifies
    only the weights and state.json: a damaged optimizer or RNG state does not stop sampling."""
    if which not in ("G", "G_ema"):
        raise ValueError(f"which={which!r}: 'G' or 'G_ema'")
    p = ckpt.resolve_checkpoint(path, files=ckpt.READER_FILES)
    data = ckpt.read_weights(p)
    state = data["state"]
    try:
        cfg = config_from_yaml_text(state["config"])
        shape, kind, step = tuple(state["data_shape"]), state["data_kind"], int(state["step"])
    except KeyError as exc:
        raise CheckpointError(
            f"checkpoint '{p}': state.json lacks {exc} (not a gandist checkpoint?)"
        ) from None
    except UserError as exc:  # a config this version no longer accepts
        raise CheckpointError(f"checkpoint '{p}': its config cannot be used ({exc})") from None
    G = build_networks(cfg.model, shape, kind)["G"]
    prefix = f"{which}."
    weights = {k[len(prefix) :]: v for k, v in data["tensors"].items() if k.startswith(prefix)}
    if not weights:
        raise CheckpointError(f"checkpoint '{p}': models.safetensors holds no {which} weights")
    try:
        G.load_state_dict(weights)
    except RuntimeError as exc:  # names or shapes differ from what the config builds
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint '{p}': {which} weights do not fit its config ({first})") from None
    stage = state.get("stage")
    if stage and hasattr(G, "set_growth"):  # a growing G samples at the resolution its run reached
        G.set_growth(int(stage["resolution"]), float(stage["alpha"]))
    return LoadedGenerator(G.eval(), cfg, kind, step, p)


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (White 2016): follows the great circle between a and b, interpolating the
    norm linearly, which keeps Gaussian latents at typical radius. a, b: [D]; t: [T, 1] -> [T, D]."""
    na, nb = a.norm(), b.norm()
    ua, ub = a / na, b / nb
    omega = torch.arccos((ua * ub).sum().clamp(-1.0, 1.0))
    if omega.abs() < 1e-6:  # parallel: slerp degenerates to lerp
        return lerp(a, b, t)
    so = torch.sin(omega)
    direction = (torch.sin((1 - t) * omega) / so) * ua + (torch.sin(t * omega) / so) * ub
    return direction * lerp(na, nb, t)


def sample(gen: LoadedGenerator, n: int, seed: int) -> torch.Tensor:
    z = torch.randn(n, gen.cfg.model.z_dim, generator=torch.Generator().manual_seed(seed))
    out = []
    for chunk in z.split(256):
        out.append(gen(chunk))
    return torch.cat(out)


def write_samples(gen: LoadedGenerator, samples: torch.Tensor, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        np.savez_compressed(out, samples=samples.numpy(), step=gen.step)
    elif out.suffix == ".png":
        from gandist.viz import save_grid, save_scatter

        if gen.kind == "points":
            from gandist.data import DATASETS

            modes = getattr(DATASETS.get(gen.cfg.data.name), "modes", None)
            save_scatter(samples, out, modes=modes, title=f"{len(samples)} samples, step {gen.step}")
        else:
            save_grid(samples, out)
    else:
        raise UserError(f"--out '{out}': use a .png (picture) or .npz (raw samples) file name")
    return out


def interpolation_strips(gen: LoadedGenerator, seeds: list[int], steps: int) -> dict[str, torch.Tensor]:
    """For consecutive seed pairs, `steps` samples along lerp and slerp paths: {'lerp': [P*T, ...], 'slerp': ...}."""
    if len(seeds) < 2:
        raise UserError("interpolation needs at least two seeds, e.g. --seeds 1,2")
    z = gen.latents(seeds)
    t = torch.linspace(0, 1, steps)[:, None]
    out = {}
    for name, fn in (("lerp", lerp), ("slerp", slerp)):
        rows = [gen(fn(z[i], z[i + 1], t)) for i in range(len(seeds) - 1)]
        out[name] = torch.cat(rows)
    return out


def vector_arithmetic(
    gen: LoadedGenerator, u: list[int], v: list[int], w: list[int], variations: int = 8, noise: float = 0.25
) -> tuple[torch.Tensor, int]:
    """DCGAN Sec. 6.3: mean(z_u) - mean(z_v) + mean(z_w). Returns the picture rows as one batch —
    the u, v and w samples with their mean-latent image at the row's end, then the result and
    variations (result + noise * N(0, I), the paper uses 0.25) — and the row length."""
    groups = [gen.latents(s) for s in (u, v, w)]
    means = [g.mean(dim=0, keepdim=True) for g in groups]
    result = means[0] - means[1] + means[2]
    eps = torch.randn(variations - 1, result.shape[1], generator=torch.Generator().manual_seed(0)) * noise
    row_len = max(max(len(u), len(v), len(w)) + 1, variations)
    rows = []
    for g, m in zip(groups, means):
        imgs = gen(torch.cat([g, m]))
        rows.append(_pad_row(imgs, row_len))
    rows.append(_pad_row(gen(torch.cat([result, result + eps])), row_len))
    return torch.cat(rows), row_len


def _pad_row(imgs: torch.Tensor, n: int) -> torch.Tensor:
    if len(imgs) >= n:
        return imgs[:n]
    pad = torch.full((n - len(imgs), *imgs.shape[1:]), -1.0)
    return torch.cat([imgs[:-1], pad, imgs[-1:]])  # the mean image stays in the last column
