"""Perceptual path length (Karras et al. 2019, Sec. 4.2), as NVlabs/stylegan's metrics/perceptual_path_length.py.

For n pairs of latents (z0, z1) and t ~ U(0, 1) ("full" sampling; t = 0 for "end"):

    Z space:  l = d(G(slerp(z0, z1, t)), G(slerp(z0, z1, t + eps))) / eps^2
    W space:  l = d(g(lerp(f(z0), f(z1), t)), g(lerp(f(z0), f(z1), t + eps))) / eps^2

with f the mapping and g the synthesis network, d the LPIPS distance on VGG-16, eps = 1e-4, no truncation.
Both images of a pair see the same noise. Images of [-1, 1] are optionally cropped to the face (the
official crop: rows 3/8..7/8, columns 2/8..6/8, for FFHQ-aligned faces) and box-downsampled to 256 px when
larger. The reported value is the mean of the distances between the 1st and 99th percentiles (the
official filter against outliers); the paper uses n = 100,000.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from gandist.errors import UserError
from gandist.rng import stream

PPL_EPSILON = 1e-4  # Karras et al. 2019, Sec. 4.2
PPL_SAMPLES = 100_000  # the paper's count
PPL_MAX_RES = 256  # images above 256 px are box-downsampled to it before LPIPS (the official code)


def _normalise(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of the directions of a and b [N, D] at t [N] (a unit vector, as official)."""
    a, b = _normalise(a), _normalise(b)
    d = (a * b).sum(dim=-1, keepdim=True)
    p = t[:, None] * torch.acos(d.clamp(-1, 1))
    c = _normalise(b - d * a)
    return _normalise(a * torch.cos(p) + c * torch.sin(p))


def face_crop(images: torch.Tensor) -> torch.Tensor:
    """The official PPL crop of FFHQ-aligned faces: [N, C, H, W] -> [N, C, H/2, W/2]."""
    c = images.shape[2] // 8
    return images[:, :, c * 3 : c * 7, c * 2 : c * 6]


def box_downsample(images: torch.Tensor, max_res: int = PPL_MAX_RES) -> torch.Tensor:
    """Mean over factor x factor boxes when the images are larger than max_res (the official reshape-mean)."""
    h = images.shape[2]
    if h <= max_res:
        return images
    f = h // max_res
    n, c, hh, ww = images.shape
    return images.reshape(n, c, hh // f, f, ww // f, f).mean(dim=(3, 5))


def filtered_mean(distances: np.ndarray) -> float:
    """Mean of the distances within [1st percentile (lower), 99th percentile (higher)]."""
    lo = np.percentile(distances, 1, method="lower")
    hi = np.percentile(distances, 99, method="higher")
    return float(distances[(lo <= distances) & (distances <= hi)].mean())


def check_style_generator(G: nn.Module) -> None:
    if not all(hasattr(G, a) for a in ("mapping", "synthesis", "broadcast")):
        raise UserError(
            "perceptual path length interpolates in Z and W: it needs a style-based generator (a mapping and a "
            f"synthesis network); this run's G ({type(G).__name__}) has none"
        )


@torch.no_grad()
def path_lengths(
    G: nn.Module,
    distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    n: int,
    *,
    space: str = "w",
    epsilon: float = PPL_EPSILON,
    sampling: str = "full",
    crop: bool = False,
    batch: int = 16,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """The n scaled distances d / eps^2 (float64), before the percentile filter. Pair i's latents, t and
    noise are functions of (seed, i // batch), so the values do not depend on anything but the seed and batch."""
    check_style_generator(G)
    if space not in ("z", "w"):
        raise UserError(f"ppl space '{space}' unknown; use z (slerp) or w (lerp)")
    if sampling not in ("full", "end"):
        raise UserError(f"ppl sampling '{sampling}' unknown; use full (t ~ U(0, 1)) or end (t = 0)")
    device = torch.device(device)
    dtype = next(G.parameters()).dtype
    out = np.empty(n)
    for k, start in enumerate(range(0, n, batch)):
        m = min(batch, n - start)
        g = stream(seed, "path_length", position=k)
        z = torch.randn(2 * m, G.z_dim, generator=g, dtype=torch.float64)
        t = torch.rand(m, generator=g, dtype=torch.float64) * (1.0 if sampling == "full" else 0.0)
        noise_seed = int(torch.randint(0, 2**62, (), generator=g))
        z0, z1 = z[:m], z[m:]
        if space == "z":
            zt = torch.cat([slerp(z0, z1, t), slerp(z0, z1, t + epsilon)])
            w = G.mapping(zt.to(device, dtype))
        else:
            wz = G.mapping(z.to(device, dtype))
            w0, w1 = wz[:m], wz[m:]
            tt = t.to(device, dtype)[:, None]
            w = torch.cat([torch.lerp(w0, w1, tt), torch.lerp(w0, w1, tt + epsilon)])
        ws = G.broadcast(w)
        images = []
        for half in (ws[:m], ws[m:]):  # the same noise for both ends of every pair
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(noise_seed)
                images.append(G.synthesis(half, "random"))
        if crop:
            images = [face_crop(x) for x in images]
        images = [box_downsample(x) for x in images]
        if images[0].shape[1] == 1:
            images = [x.expand(-1, 3, -1, -1) for x in images]
        d = distance(images[0], images[1]).double() / epsilon**2
        out[start : start + m] = d.cpu().numpy()
        if progress:
            progress(m)
    return out


def perceptual_path_length(G: nn.Module, distance, n: int = PPL_SAMPLES, **kw) -> dict:
    """{'ppl': the filtered mean, 'ppl_unfiltered': the plain mean, and the protocol's settings}."""
    d = path_lengths(G, distance, n, **kw)
    return {"ppl": filtered_mean(d), "ppl_unfiltered": float(d.mean()), "ppl_n": n,
            "ppl_space": kw.get("space", "w"), "ppl_epsilon": kw.get("epsilon", PPL_EPSILON),
            "ppl_sampling": kw.get("sampling", "full"), "ppl_crop": bool(kw.get("crop", False))}  # fmt: skip


def run_command(args) -> dict:
    """`gandist ppl CHECKPOINT`: PPL of the run's G_ema in the asked spaces, with a progress bar."""
    from tqdm import tqdm

    from gandist.generate import load_generator
    from gandist.metrics.vgg import LPIPS_MIN_SIZE, lpips_vgg

    gen = load_generator(args.checkpoint, which="G" if args.raw_g else "G_ema")
    check_style_generator(gen.G)
    side = gen.G.resolution // 2 if args.crop else gen.G.resolution
    if side < LPIPS_MIN_SIZE:  # before any weights are read or any image is drawn
        raise UserError(f"LPIPS on VGG-16 needs images of at least {LPIPS_MIN_SIZE} px; this G draws "
                        f"{gen.G.resolution} px{', cropped to ' + str(side) if args.crop else ''}")  # fmt: skip
    lpips = lpips_vgg(args.vgg16, args.lpips)  # weights checked before any image is drawn
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    G, lpips = gen.G.to(device), lpips.to(device)
    spaces = ("z", "w") if args.space == "both" else (args.space,)
    result = {"checkpoint": str(gen.path), "step": gen.step}
    for space in spaces:
        with tqdm(total=args.n, desc=f"ppl {space}", unit="pair", disable=args.no_progress) as bar:
            r = perceptual_path_length(G, lpips, args.n, space=space, epsilon=args.epsilon,
                                       sampling=args.sampling, crop=args.crop, batch=args.batch,
                                       seed=args.seed, device=device, progress=bar.update)  # fmt: skip
        result.update({f"{k}_{space}": v for k, v in r.items() if k != "ppl_space"})
    return result
