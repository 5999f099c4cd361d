"""Fréchet distance between Gaussians fitted to features (FID, Heusel et al. 2017).

d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg

from gandist.metrics._util import as_numpy


def feature_stats(feats: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, N-1) covariance of features [N, D] in float64."""
    f = as_numpy(feats, "features", ndim=2)
    if len(f) < 2:
        raise ValueError("feature_stats needs at least 2 samples")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6) -> float:
    mu1, mu2 = np.atleast_1d(as_numpy(mu1, "mu1")), np.atleast_1d(as_numpy(mu2, "mu2"))
    s1, s2 = np.atleast_2d(as_numpy(sigma1, "sigma1")), np.atleast_2d(as_numpy(sigma2, "sigma2"))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise ValueError(
            f"frechet_distance: shapes do not match: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}"
        )
    diff = mu1 - mu2
    with np.errstate(all="ignore"):
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        # Near-singular product (e.g. fewer samples than dimensions): regularise both with eps * I.
        offset = np.eye(len(s1)) * eps
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(covmean.imag))
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(
                f"frechet_distance: matrix square root has a large imaginary part ({imag:.3g}); "
                "the covariances are ill-conditioned: use more samples"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def save_stats(path: str | Path, mu: np.ndarray, sigma: np.ndarray, **meta: Any) -> Path:
    """Cache reference statistics as .npz with what produced them (extractor, resize, count, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, mu=mu, sigma=sigma, **{f"meta_{k}": np.asarray(str(v)) for k, v in meta.items()})
    tmp.replace(path)
    return path


def load_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    with np.load(path, allow_pickle=False) as z:
        meta = {k[5:]: str(z[k]) for k in z.files if k.startswith("meta_")}
        return z["mu"], z["sigma"], meta
