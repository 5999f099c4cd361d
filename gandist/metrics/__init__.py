"""Evaluation metrics, exact to their published definitions. All accept numpy arrays or torch tensors.

| function | definition |
|---|---|
| `frechet_distance(mu1, sigma1, mu2, sigma2)` | FID, Heusel et al. 2017 |
| `inception_score(probs, splits)` | Salimans et al. 2016 |
| `kernel_inception_distance(f1, f2, subsets, subset_size)` | unbiased MMD^2, cubic kernel, Bińkowski et al. 2018 |
| `precision_recall(real, fake, k)` | Kynkäänniemi et al. 2019 |
| `mode_coverage(samples, dataset)` | VEEGAN / PacGAN 2-D protocol |
| `parzen_log_likelihood(samples, test, sigma)` | Gaussian Parzen window, Goodfellow et al. 2014 |
| `nearest_indices`, `nearest_neighbours_figure` | memorisation check, pixel and feature space |
"""

from gandist.metrics.fid import feature_stats, frechet_distance, load_stats, save_stats  # noqa: F401
from gandist.metrics.isc import inception_score  # noqa: F401
from gandist.metrics.kid import kernel_inception_distance  # noqa: F401
from gandist.metrics.modes import mode_coverage  # noqa: F401
from gandist.metrics.neighbours import nearest_indices, nearest_neighbours_figure  # noqa: F401
from gandist.metrics.parzen import parzen_log_likelihood  # noqa: F401
from gandist.metrics.precision_recall import precision_recall  # noqa: F401
