"""Precision and recall on VGG-16 fc2 features (Kynkaanniemi et al. 2019): the extractor against a float64
recomputation written out here, the metric against the paper's definition in float64 numpy, which metric
reads which features, the one-line error without weights, and `gandist eval` on folders of PNGs.

The VGG-16 weights are a stand-in the test writes (seeded random values in torchvision's layout), so the
loading code is the one a user's `vgg16-397923af.pth` goes through."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TensorSource
from PIL import Image

from gandist.cli import main
from gandist.metrics.entries import PR_K, feature_plan
from gandist.metrics.evaluate import evaluate_sources
from gandist.metrics.extractors import Extractor, ModuleExtractor
from gandist.metrics.standin import calibration_images, make_standin_vgg16
from gandist.metrics.vgg import VGG16Extractor

# float32 extractor against the float64 recomputation: each of the 15 weight layers (13 convs, fc1, fc2) is
# a sum of up to 25088 float32 products (fc1's fan-in), whose rounding error grows as sqrt(terms) times
# the unit roundoff 2^-24 relative to the layer's scale; the bound below adds the layers up. It holds
# for the max error over all features relative to the largest feature (elementwise relative errors are
# unbounded where a ReLU output is near 0). Measured with the stand-in weights: 2.4e-6 at 37 px.
FC2_LAYERS, FC1_FAN_IN = 15, 512 * 7 * 7
FC2_REL_TOL = FC2_LAYERS * math.sqrt(FC1_FAN_IN) * 2.0**-24  # 1.4e-4
# VGG-16, configuration D of Simonyan & Zisserman: conv widths, "M" a 2x2 max-pooling
VGG16_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")  # fmt: skip
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's ImageNet weights


@pytest.fixture(scope="module")
def vgg_weights(tmp_path_factory):
    return make_standin_vgg16(tmp_path_factory.mktemp("vgg") / "vgg16-397923af.pth")


def area_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """[n_out, n_in] float64: output pixel i is the mean of input pixels floor(i n_in / n_out) ..
    ceil((i + 1) n_in / n_out) - 1 (area resizing as adaptive average pooling defines it)."""
    a = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        a[i, lo:hi] = 1.0 / (hi - lo)
    return a


def fc2_float64(x: torch.Tensor, sd: dict[str, torch.Tensor]) -> torch.Tensor:
    """uint8 images [N, 3, H, W] -> VGG-16 fc2 after its ReLU [N, 4096], float64, from torchvision's state
    dict `sd`: [0, 1], area resize to 224x224, ImageNet mean/std, the 13 convs (3x3, padding 1, ReLU) with
    2x2 max-pooling, flatten, fc1, ReLU, fc2, ReLU (dropout off, as in evaluation)."""
    h = x.double() / 255
    ah, aw = area_matrix(h.shape[2], 224), area_matrix(h.shape[3], 224)
    h = torch.einsum("ih,nchw,jw->ncij", ah, h, aw)
    h = (h - torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)  # fmt: skip
    idx = 0
    for v in VGG16_D:
        if v == "M":
            h, idx = F.max_pool2d(h, 2), idx + 1
            continue
        w, b = sd[f"features.{idx}.weight"].double(), sd[f"features.{idx}.bias"].double()
        h, idx = F.conv2d(h, w, b, padding=1).clamp_min(0), idx + 2
    assert h.shape[1:] == (512, 7, 7), h.shape
    h = h.flatten(1)
    for i in (0, 3):  # fc1, fc2: rows in chunks, so no float64 copy of fc1's 25088x4096 matrix is held
        w, b = sd[f"classifier.{i}.weight"], sd[f"classifier.{i}.bias"].double()
        h = torch.cat([h @ w[j : j + 512].double().T for j in range(0, len(w), 512)], 1) + b
        h = h.clamp_min(0)
    return h


@pytest.mark.slow
def test_fc2_features_equal_a_float64_recomputation_from_torchvisions_module(vgg_weights):
    import torchvision

    net = torchvision.models.vgg16(weights=None)
    net.load_state_dict(torch.load(vgg_weights, weights_only=True))  # the torchvision module's own weights
    sd = net.state_dict()
    ex = VGG16Extractor(vgg_weights)
    assert ex.describe()["resize"] == "area-224" and ex.dim == 4096
    # enlarged (37 px, odd: windows of 6 and 7 rows) and shrunk (250 px: windows of 2 pixels)
    for x in (calibration_images(2, 37, seed=1), calibration_images(1, 250, seed=2)):
        got, want = ex(x)[0], fc2_float64(x, sd)
        rel = float((got - want).abs().max() / want.abs().max())
        assert got.shape == (len(x), 4096) and rel <= FC2_REL_TOL, f"{rel:.3g} > {FC2_REL_TOL:.3g}"
        assert (want == 0).any() and (want > 0).double().mean() > 0.1  # after a ReLU, not degenerate


def precision_recall_float64(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Kynkaanniemi et al. 2019, written out: a set's manifold is the union of balls around its samples of
    radius the distance to the k-th nearest other sample of the set; precision is the share of fakes in the
    reals' manifold, recall the share of reals in the fakes'."""

    def dists(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    def radii(a):
        return np.sort(dists(a, a), axis=1)[:, k]  # column 0 is the sample itself

    precision = (dists(fake, real) <= radii(real)[None, :]).any(1).mean()
    recall = (dists(real, fake) <= radii(fake)[None, :]).any(1).mean()
    return float(precision), float(recall)


class Recorded(VGG16Extractor):
    """The VGG-16 extractor, keeping every batch it saw and the features it gave."""

    def __init__(self, *a, **k) -> None:
        super().__init__(*a, **k)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def extract(self, x):
        f, logits = super().extract(x)
        self.seen.append((x.clone(), f.double().cpu()))
        return f, logits


class PixelMeans(Extractor):
    """Stands for the Inception network (same key) with cheap features: each channel's mean pixel."""

    name, key, resize, dim = "pixel-means", "inception", "none", 3

    def extract(self, x):
        return x.float().mean((2, 3)), None


def test_pr_reads_vgg16_features_and_equals_the_papers_definition_on_them(vgg_weights):
    real = calibration_images(6, 20, seed=3)
    g = torch.Generator().manual_seed(4)
    near = (real[:3].float() + torch.randn(3, 3, 20, 20, generator=g) * 6).clamp(0, 255).to(torch.uint8)
    far = calibration_images(3, 20, seed=5).flip(1)  # other images, colours swapped
    fake = torch.cat([near, far])
    vgg = Recorded(vgg_weights)
    res = evaluate_sources(TensorSource(fake), TensorSource(real), ["kid", "pr"], PixelMeans(),
                           build=lambda key: {"vgg16": vgg}[key])  # fmt: skip
    # KID read the evaluation's extractor, precision and recall VGG-16: fakes first, then reals, once each
    assert res["extractor"] == "pixel-means" and "kid" in res
    assert res["pr_features"] == "vgg16-fc2" and res["pr_extractor"]["weights"] == str(vgg_weights)
    inputs = torch.cat([x for x, _ in vgg.seen])
    assert torch.equal(inputs, torch.cat([fake, real]))
    feats = torch.cat([f for _, f in vgg.seen]).numpy()
    precision, recall = precision_recall_float64(feats[len(fake) :], feats[: len(fake)], PR_K)
    assert 0 < precision < 1 or 0 < recall < 1, (precision, recall)  # a case where the definition can fail
    assert (res["precision"], res["recall"]) == (precision, recall)


def test_which_metric_reads_which_features():
    assert feature_plan(["fid", "pr", "kid"], "inception", "images") == {"inception": ["fid", "kid"],
                                                                         "vgg16": ["pr"]}  # fmt: skip
    assert feature_plan(["pr"], "inception", "images") == {"inception": [], "vgg16": ["pr"]}
    assert feature_plan(["pr", "pr_inception"], "inception", "images") == {"inception": ["pr_inception"],
                                                                           "vgg16": ["pr"]}  # fmt: skip
    # the data's own features: the digits classifier, the points; a module given by the caller serves all
    assert feature_plan(["pr", "fid"], "digits", "images") == {"digits": ["pr", "fid"]}
    assert feature_plan(["pr_inception"], "digits", "images") == {"digits": [], "inception": ["pr_inception"]}
    assert feature_plan(["pr", "modes"], "points", "points") == {"points": ["pr", "modes"]}
    assert feature_plan(["pr"], ModuleExtractor(torch.nn.Flatten()), "images") == {"": ["pr"]}


def _folder(path, x: torch.Tensor):
    path.mkdir(parents=True)
    for i, im in enumerate(x):
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(path / f"{i:03d}.png")
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    return _folder(root / "fake", calibration_images(4, 24, seed=6)), _folder(root / "real",
                                                                                calibration_images(5, 24, seed=7))  # fmt: skip


def _one_error_line(capsys, argv):
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


def test_missing_vgg16_weights_is_one_line_naming_file_and_flag(folders, tmp_path, monkeypatch, capsys):
    fake, real = folders
    monkeypatch.delenv("GANDIST_VGG16_WEIGHTS", raising=False)
    monkeypatch.setenv("GANDIST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    argv = ["eval", str(fake), "--data", str(real), "--metrics", "pr", "--workers", "0"]
    line = _one_error_line(capsys, argv)
    assert "vgg16-397923af.pth" in line and "never downloads" in line, line
    assert str(tmp_path / "cache" / "vgg16-397923af.pth") in line and str(tmp_path / "hub") in line, line
    assert "--vgg16" in line and "GANDIST_VGG16_WEIGHTS" in line, line
    line = _one_error_line(capsys, [*argv, "--vgg16", str(tmp_path / "nope.pth")])
    assert "nope.pth" in line and "--vgg16" in line, line


def test_eval_of_image_folders_reports_pr_on_vgg16_features(folders, vgg_weights, tmp_path, capsys):
    fake, real = folders
    out = tmp_path / "pr.jsonl"
    # no Inception weights anywhere: pr alone reads VGG-16 only
    assert main(["eval", str(fake), "--data", str(real), "--metrics", "pr", "--vgg16", str(vgg_weights),
                 "--workers", "0", "--out", str(out)]) == 0  # fmt: skip
    res = json.loads(out.read_text().splitlines()[-1])
    assert res["pr_features"] == res["extractor"] == "vgg16-fc2" and res["resize"] == "area-224"
    assert res["weights"] == str(vgg_weights) and (res["n_fake"], res["n_real"]) == (4, 5)
    assert res["precision"] * 4 == round(res["precision"] * 4)  # shares of 4 fakes and 5 reals
    assert res["recall"] * 5 == round(res["recall"] * 5)
