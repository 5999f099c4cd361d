"""Using a trained generator: samples, latent interpolation (lerp/slerp) and latent vector arithmetic
(Radford et al. 2016, Sec. 6.3); for style-based generators (StyleGAN) also truncation, noise modes,
interpolation in W and style-mixing grids (Karras et al. 2019, Fig. 3)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gandist.config import Config
from gandist.errors import UserError
from gandist.load import load_network


@dataclass
class LoadedGenerator:
    G: nn.Module
    cfg: Config
    kind: str  # "images" | "points"
    step: int
    path: Path
    options: dict = field(default_factory=dict)  # style-based G only: truncation_psi/_cutoff, noise_mode

    @property
    def style_based(self) -> bool:
        """A generator with a mapping network to W and a synthesis network fed styles per layer."""
        return hasattr(self.G, "mapping") and hasattr(self.G, "synthesis")

    def family(self) -> str:
        return getattr(self.cfg.model, "name", "?")

    def set_style_options(
        self, truncation_psi: float = 1.0, truncation_cutoff: int | None = None, noise_mode: str | None = None
    ) -> None:
        """Truncation (psi, cutoff layer) and noise mode of every later call; a one-line UserError for a
        generator that has no styles or a cutoff past its layers."""
        asked = truncation_psi != 1.0 or truncation_cutoff is not None or noise_mode is not None
        if not asked:
            return
        if not self.style_based:
            raise UserError(
                f"truncation and noise modes need a style-based generator (model.name=stylegan); "
                f"'{self.path}' holds a {self.family()} generator"
            )
        try:
            self.G.check_truncation(truncation_psi, truncation_cutoff)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        self.options = {"truncation_psi": truncation_psi, "truncation_cutoff": truncation_cutoff}
        if noise_mode is not None:
            self.options["noise_mode"] = noise_mode

    def latents(self, seeds: list[int]) -> torch.Tensor:
        """One latent per seed: z_s ~ N(0, I) from a generator seeded with s (reproducible across tools)."""
        z_dim = self.cfg.model.z_dim
        return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])

    @torch.no_grad()
    def __call__(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is not None:  # a class-conditional G (semi-supervised GAN)
            return self.G(z, labels, **self.options)
        return self.G(z, **self.options)

    def check_class(self, cls: int) -> None:
        """A one-line UserError unless this G is class-conditional with a class `cls`."""
        if not getattr(self.G, "conditional", False):
            raise UserError(
                f"--class needs a class-conditional generator (model.name=sgan with model.conditional=true); "
                f"'{self.path}' holds a {self.family()} generator{' without classes' if type(self.cfg.model).has_classes else ''}"
            )
        if not 0 <= cls < self.G.classes:
            raise UserError(f"--class {cls}: this generator draws classes 0-{self.G.classes - 1}; pick one of them")

    @torch.no_grad()
    def ws(self, z: torch.Tensor) -> torch.Tensor:
        """Style-based G: per-layer styles [N, layers, w_dim] of z, truncated as set."""
        return self.ws_of_w(self.G.mapping(z))

    @torch.no_grad()
    def ws_of_w(self, w: torch.Tensor) -> torch.Tensor:
        """Style-based G: w [N, w_dim] -> per-layer styles, truncated as set."""
        ws = self.G.broadcast(w)
        return self.G.truncate(
            ws, self.options.get("truncation_psi", 1.0), self.options.get("truncation_cutoff")
        )

    @torch.no_grad()
    def synthesize(self, ws: torch.Tensor) -> torch.Tensor:
        mode = self.options.get("noise_mode") or self.G.sample_noise
        return self.G.synthesis(ws, mode)


def load_generator(path: str | Path, which: str = "G_ema") -> LoadedGenerator:
    """Load the EMA generator (or 'G') from a checkpoint folder or run directory. Reads and verifies
    only the weights and state.json: a damaged optimizer or RNG state does not stop sampling."""
    if which not in ("G", "G_ema"):
        raise ValueError(f"which={which!r}: 'G' or 'G_ema'")
    def refuse(cfg: Config, p: Path) -> None:
        if type(cfg.model).translates:  # generators between domains, none from latents
            raise UserError(
                f"checkpoint '{p}' holds a {cfg.model.name} model, which translates images and draws none from "
                f"latents; use gandist translate {p} --direction AtoB IN OUT"
            )

    loaded = load_network(path, which, refuse)
    return LoadedGenerator(loaded.net, loaded.cfg, loaded.kind, loaded.step, loaded.path)


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


def sample(gen: LoadedGenerator, n: int, seed: int, cls: int | None = None) -> torch.Tensor:
    """n samples from latents of `seed`; `cls`: all of that class (a class-conditional G)."""
    z = torch.randn(n, gen.cfg.model.z_dim, generator=torch.Generator().manual_seed(seed))
    if cls is not None:
        gen.check_class(cls)
    out = []
    for chunk in z.split(256):
        labels = None if cls is None else torch.full((len(chunk),), cls, dtype=torch.long)
        out.append(gen(chunk, labels))
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
    if gen.style_based:  # StyleGAN: also linear in W, as the paper's perceptual path length (Sec. 4.2)
        with torch.no_grad():
            w = gen.G.mapping(z)
        out["wlerp"] = torch.cat(
            [gen.synthesize(gen.ws_of_w(lerp(w[i], w[i + 1], t))) for i in range(len(seeds) - 1)]
        )
    return out


# ---------------------------------------------------------------------------------------------------
# Style mixing (Karras et al. 2019, Sec. 3.1, Fig. 3)

# Fig. 3: styles of the coarse (4^2 - 8^2), middle (16^2 - 32^2) and fine (64^2 - 1024^2) resolutions;
# layers 2k and 2k + 1 of the synthesis network work at 4 * 2^k px.
STYLE_RANGES = {"coarse": (4, 8), "middle": (16, 32), "fine": (64, 1024)}


def _layers_of(resolutions: tuple[int, int]) -> range:
    lo, hi = (int(math.log2(r)) - 2 for r in resolutions)
    return range(2 * lo, 2 * hi + 2)


def style_layers(spec: str, active: int, resolution: int) -> list[int]:
    """The synthesis layers `spec` names among the `active` ones of a G at `resolution` px:
    coarse | middle | fine (Fig. 3), or a-b (layer indices, both included, from 0)."""
    names = ", ".join(f"{k} {_layers_of(v).start}-{_layers_of(v).stop - 1}" for k, v in STYLE_RANGES.items())
    if spec in STYLE_RANGES:
        wanted = _layers_of(STYLE_RANGES[spec])
    else:
        lo, sep, hi = spec.partition("-")
        try:
            a, b = int(lo), int(hi)
        except ValueError:
            a = b = -1
        if not sep or a < 0 or b < a:
            raise UserError(
                f"--styles '{spec}': use coarse, middle, fine or a layer range a-b like 0-3 ({names})"
            )
        wanted = range(a, b + 1)
        if b >= active:  # a number past the end is a mistake, not a wish for "as many as there are"
            raise UserError(
                f"--styles '{spec}' goes past the last layer of this generator: it has layers 0-{active - 1} at "
                f"{resolution}x{resolution}; use a range within 0-{active - 1}"
            )
    layers = [i for i in wanted if i < active]
    if not layers:
        raise UserError(
            f"--styles '{spec}' names no layer of this generator: it has layers 0-{active - 1} at "
            f"{resolution}x{resolution} ({names})"
        )
    return layers


def style_mix_grid(
    gen: LoadedGenerator, rows: list[int], cols: list[int], styles: str
) -> tuple[torch.Tensor, int]:
    """Fig. 3's grid as NVlabs' style_mixing.py draws it: the column seeds' images across the top, the row
    seeds' images down the left, and in cell (r, c) the image whose styles come from row seed r except the
    layers `styles` names, which come from column seed c. Returns the images (the top-left corner blank) and
    the row length."""
    if not gen.style_based:
        raise UserError(
            f"style-mix needs a style-based generator (model.name=stylegan); '{gen.path}' holds a "
            f"{gen.family()} generator"
        )
    G = gen.G
    layers = style_layers(styles, G.active_layers, G.resolution)
    w_rows, w_cols = gen.ws(gen.latents(rows)), gen.ws(gen.latents(cols))
    top = gen.synthesize(w_cols)
    blank = torch.full((1, *top.shape[1:]), -1.0)
    pictures = [blank, top]
    for i in range(len(rows)):
        mixed = w_rows[i : i + 1].repeat(len(cols), 1, 1)
        mixed[:, layers] = w_cols[:, layers]
        pictures += [gen.synthesize(w_rows[i : i + 1]), gen.synthesize(mixed)]
    return torch.cat(pictures), len(cols) + 1


def vector_arithmetic(
    gen: LoadedGenerator, u: list[int], v: list[int], w: list[int], variations: int = 8, noise: float = 0.25
) -> tuple[torch.Tensor, int]:
    """DCGAN Sec. 6.3: mean(z_u) - mean(z_v) + mean(z_w). Returns the picture rows as one batch —
    the u, v and w samples with their mean-latent image at the row's end, then the result and
    variations (result + noise * N(0, I), the paper uses 0.25) — and the row length."""
    if gen.kind != "images":
        raise UserError(
            f"arithmetic draws rows of images; '{gen.path}' generates 2-D points (use gandist generate for a scatter)"
        )
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
