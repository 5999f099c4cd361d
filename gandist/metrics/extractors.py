"""Feature extractors for FID, IS, KID, precision/recall and nearest neighbours.

| name | for | features | class probabilities | resize |
|---|---|---|---|---|
| `inception` | RGB/grey images | 2048-d pool3 of the TF-ported Inception-v3 (torch-fidelity) | 1008-way logits_unbiased | TF1 bilinear to 299x299 |
| `vgg16` | RGB/grey images: precision and recall (`vgg.py`) | 4096-d fc2 (after ReLU) of torchvision's VGG-16 | - | area to 224x224 |
| `digits` | digits runs | 128-d penultimate layer of a small CNN gandist trains on scikit-learn's digits | 10-way | bilinear to 16x16 |
| `digits` on stacked digits | stacked digits | the three channels' 128-d features, side by side (`stacked.py`) | 1000 modes | bilinear to 16x16 |
| `points` | 2-D data | the points themselves | - | - |
| any `nn.Module` | anything | whatever it returns | - | none |

FID is only comparable with the same extractor, resize filter and sample count: every result records
all three. The Inception and VGG-16 weights are read from a local file or the torch hub cache and never
downloaded at run time; without them the error names the file and where to put it.

A metric may be defined on other features than the evaluation's (`MetricEntry.features`: precision and
recall on VGG-16): it reads them in place of an ImageNet network's, while an extractor made for the data
(`for_data`: the digits classifier, the 2-D points) or given as a module serves every metric.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from gandist.errors import UserError

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid / torchmetrics name, same weights


def cache_dir() -> Path:
    return Path(os.environ.get("GANDIST_CACHE", Path.home() / ".cache" / "gandist"))


class Extractor:
    """Maps a batch of samples to features (and, for classifiers, logits).

    `extract` is what the evaluation pipeline calls: features stay on the extractor's device in
    float32, the pipeline accumulates them in float64. `__call__` is the convenience form: float64
    features and class probabilities on the CPU."""

    name: str = ""
    key: str = ""  # its name in `build_extractor` ('' for a module given by the caller: every metric reads it)
    for_data: bool = False  # made for the data (digits classifier, points): metrics defined on other features read it
    resize: str = "none"
    dim: int = 0
    has_probs: bool = False
    classes: int = 0  # width of the logits when has_probs
    device: torch.device = torch.device("cpu")
    cpu_batch: int = 0  # the extraction batch on the CPU when none is asked for (0: the pipeline's default)

    @torch.no_grad()
    def extract(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: a batch in the training format ([-1, 1] images or points) or uint8 images [N, C, H, W]
        -> (features [N, D] float32, logits [N, K] float32 or None), on the extractor's device."""
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (features [N, D] float64, class probabilities [N, K] float64 or None), on the CPU."""
        f, logits = self.extract(x)
        probs = torch.softmax(logits.double(), dim=1).cpu() if logits is not None else None
        return f.double().cpu(), probs

    def describe(self) -> dict:
        return {"extractor": self.name, "resize": self.resize, "feature_dim": self.dim}


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 images [0, 255] -> float [-1, 1] (the training format); float input passes through."""
    return x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x


class PointsExtractor(Extractor):
    name, key, for_data, resize, dim = "points", "points", True, "none", 2

    def extract(self, x):
        return x.reshape(len(x), -1).float(), None


class ModuleExtractor(Extractor):
    """Any nn.Module mapping a batch to features [N, D]."""

    def __init__(self, module: nn.Module, name: str | None = None) -> None:
        self.module = module.eval()
        self.name = name or f"module:{type(module).__name__}"
        param = next(iter(module.parameters()), None)
        self.device = param.device if param is not None else torch.device("cpu")

    @torch.no_grad()
    def extract(self, x):
        f = self.module(to_unit_range(x).to(self.device)).reshape(len(x), -1)
        self.dim = f.shape[1]
        return f.float(), None


# ---------------------------------------------------------------------------------------------------
# Digits classifier


class DigitsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        f = self.body(x)
        return f, self.head(f)


DIGITS_VERSION = 1  # bump when the network or its training changes; the cache key follows


@torch.enable_grad()  # callers may hold no_grad (the health monitor's probe)
def train_digits_classifier(seed: int = 0, epochs: int = 30, progress: bool = False) -> tuple[DigitsNet, float]:
    """Train on 1500 of scikit-learn's digits (16 px, [-1, 1]); returns the net and held-out accuracy.
    `progress`: a bar of the epochs on a terminal's stderr (none when stderr is a file or a pipe)."""
    from tqdm import tqdm

    from gandist.data.digits import load_digits_tensor

    x, y = load_digits_tensor(16)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1234))
    tr, te = perm[:1500], perm[1500:]
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = DigitsNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    bar = tqdm(range(epochs), desc="digits classifier", unit="epoch", file=sys.stderr, leave=False,
               disable=None if progress else True)  # fmt: skip
    for _ in bar:
        order = tr[torch.randperm(len(tr), generator=g)]
        for i in range(0, len(order), 64):
            b = order[i : i + 64]
            # small random shifts make the classifier robust to generator samples that are off-centre
            xb = torch.roll(x[b], shifts=tuple(torch.randint(-1, 2, (2,), generator=g).tolist()), dims=(2, 3))
            loss = F.cross_entropy(net(xb)[1], y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(x[te])[1].argmax(1) == y[te]).float().mean())
    return net, acc


class DigitsExtractor(Extractor):
    name, resize, dim, has_probs, classes = f"digits-cnn-v{DIGITS_VERSION}", "bilinear-16", 128, True, 10
    key, for_data = "digits", True

    def __init__(self, device: torch.device | str = "cpu") -> None:
        from safetensors.torch import load_file, save_file

        path = cache_dir() / f"digits_classifier_v{DIGITS_VERSION}.safetensors"
        meta = path.with_suffix(".json")
        self.net = DigitsNet()
        if path.is_file() and meta.is_file():
            self.net.load_state_dict(load_file(str(path)))
            self.accuracy = json.loads(meta.read_text())["heldout_accuracy"]
        else:  # once per machine: about a minute on a quiet CPU, 6 on a loaded one; said, not silent
            print(f"[gandist] training the digits classifier once (a minute or more on a CPU); it is cached "
                  f"at {path}", file=sys.stderr, flush=True)  # fmt: skip
            t0 = time.perf_counter()
            net, self.accuracy = train_digits_classifier(progress=True)
            print(f"[gandist] digits classifier trained in {time.perf_counter() - t0:.0f} s, held-out accuracy "
                  f"{self.accuracy:.3f}", file=sys.stderr, flush=True)  # fmt: skip
            path.parent.mkdir(parents=True, exist_ok=True)
            # written whole under a name of this process, then renamed: runs that train it side by side
            # (parallel evaluations, test workers) never read or write a half-written file
            tmp, tmp_meta = (p.with_name(f"{p.name}.{os.getpid()}.tmp") for p in (path, meta))
            save_file(net.state_dict(), str(tmp))
            tmp_meta.write_text(json.dumps({"heldout_accuracy": self.accuracy, "version": DIGITS_VERSION}))
            tmp.replace(path)
            tmp_meta.replace(meta)
            self.net = net
        self.net = self.net.eval().to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def extract(self, x):
        if x.dim() != 4 or x.shape[1] != 1:
            raise UserError(
                f"the digits extractor expects greyscale images [N, 1, H, W], got {list(x.shape)}"
            )
        x = to_unit_range(x.to(self.device)).float()
        if x.shape[-1] != 16:
            x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
        f, logits = self.net(x)
        return f.float(), logits.float()

    def describe(self) -> dict:
        return {**super().describe(), "heldout_accuracy": self.accuracy}


# ---------------------------------------------------------------------------------------------------
# Inception-v3 (the TF port FID and IS are defined with)


def inception_candidates(explicit: str | Path | None = None) -> list[Path]:
    out = []
    if explicit:
        out.append(Path(explicit))
    if os.environ.get("GANDIST_INCEPTION_WEIGHTS"):
        out.append(Path(os.environ["GANDIST_INCEPTION_WEIGHTS"]))
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    out += [cache_dir() / INCEPTION_FILE, hub / INCEPTION_FILE, hub / PYTORCH_FID_FILE]
    return out


def describe_file(path: Path) -> str:
    """What a file looks like from its size and first bytes, for an error about a file that is not what it
    should be (a torch.load error on junk says things like '(174812789)')."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    amount = f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size} bytes"
    if not head:
        return "an empty file"
    kinds = [(b"PK\x03\x04", "a zip archive"), (b"\x1f\x8b", "a gzip file"), (b"\x80", "a pickle"),
             (b"\x89HDF", "an HDF5 (Keras) file"), (b"\x08", "a protobuf (TensorFlow?) file")]  # fmt: skip
    for magic, kind in kinds:
        if head.startswith(magic):
            return f"{kind} of {amount}"
    text = head.decode("utf-8", "replace")
    if text.lstrip().lower().startswith(("<!doctype", "<html", "<?xml")):
        return f"an HTML/XML page of {amount} (a failed download?)"
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        return f"a text file of {amount} starting {text.splitlines()[0][:30]!r}"
    return f"binary data of {amount} of an unknown kind"


def find_inception_weights(explicit: str | Path | None = None) -> Path:
    candidates = inception_candidates(explicit)
    if explicit and not Path(explicit).is_file():
        raise UserError(f"Inception weights '{explicit}' not found")
    for p in candidates:
        if p.is_file():
            return p
    raise UserError(
        f"FID/IS/KID on images need the TF-ported Inception-v3 weights ({INCEPTION_FILE}, 91 MB), and this "
        f"machine has none; gandist never downloads at run time. Fetch {INCEPTION_URL} where there is internet "
        f"and put it at {cache_dir() / INCEPTION_FILE} (or {candidates[-2]}), or point --inception / "
        "GANDIST_INCEPTION_WEIGHTS at it. For digits runs use --extractor digits."
    )


def fold_batch_norm(net: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm that follows a bias-free conv (torch-fidelity's BasicConv2d: conv,
    BN with eps 0.001, ReLU) into the conv: w' = w * g / sqrt(v + eps), b' = b - m * g / sqrt(v + eps).
    The same fp32 arithmetic in another order: features move by ~4e-7 relative (max over a batch)."""
    for m in net.modules():
        conv, bn = getattr(m, "conv", None), getattr(m, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and conv.bias is None:
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight = nn.Parameter(conv.weight * scale[:, None, None, None], requires_grad=False)
            conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale, requires_grad=False)
            m.bn = nn.Identity()
    return net


class _NoTF32:
    """TF32 off for the extractor's convolutions and matmuls (FID is defined in fp32), restored after."""

    def __enter__(self):
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


class _BlockedCat(TorchFunctionMode):
    """torch.cat with oneDNN (`to_mkldnn`) tensors among its inputs, which PyTorch has no kernel for:
    through the plain layout (copies only, the values are untouched). Everything else passes through."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.cat and args and any(t.is_mkldnn for t in args[0]):
            parts = [t.to_dense() if t.is_mkldnn else t for t in args[0]]
            out = torch.cat(parts, *args[1:], **kwargs)
            return out.to_mkldnn() if all(t.is_mkldnn for t in args[0]) else out
        return func(*args, **kwargs)


def _blocked_layout_works() -> bool:
    """Whether this PyTorch build runs what the Inception blocks do on oneDNN tensors with the plain
    layout's values: 1x1 and 3x3 convolutions, in-place ReLU, max and average pooling (without the
    padding in the count), and the concatenation through `_BlockedCat`. x86 builds do; anything else
    falls back to the plain layout."""

    def block(x, w1, w3):
        a = F.relu(F.conv2d(x, w1), inplace=True)
        b = F.conv2d(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), w3, None, 1, 1)
        c = F.max_pool2d(x, 3, 1, 1)
        return torch.cat([a, b, c], 1)

    try:
        g = torch.Generator().manual_seed(0)
        x, w1, w3 = (torch.rand(s, generator=g) for s in ((2, 16, 7, 7), (16, 16, 1, 1), (16, 16, 3, 3)))
        with torch.no_grad(), _BlockedCat():
            y = block(x.to_mkldnn(), w1, w3)
            y = y.to_dense() if y.is_mkldnn else y
            return (
                torch.backends.mkldnn.is_available()
                and torch.backends.mkldnn.enabled
                and torch.equal(y, block(x, w1, w3))
            )
    except (RuntimeError, NotImplementedError, TypeError):
        return False


def _to_blocked(module, args):
    return (args[0] if args[0].is_mkldnn else args[0].contiguous().to_mkldnn(),)


def _to_plain(module, args):
    return (args[0].to_dense() if args[0].is_mkldnn else args[0],)


def use_blocked_layout(net: nn.Module, folded: bool) -> nn.Module:
    """Run torch-fidelity's Inception on oneDNN tensors in its blocked layout where that saves work.

    On the CPU PyTorch computes a convolution of a plain (NCHW) tensor with oneDNN in a blocked layout
    (NCHW16c on AVX-512): the input is reordered into it and the output back, at every layer. A tensor
    that is already blocked runs the same kernel on the same values without the reorders, and pooling
    is 3-4x faster on it (max and average pooling give the same values in either layout). A oneDNN
    input also makes PyTorch use oneDNN for every convolution: the plain module does so with more than
    one thread or at batches of 16 and more (torch-fidelity's default batch is 64), but computes its
    1x1 convolutions with its own gemm on one thread below 16 (features ~1.4e-6 relative apart), so
    the blocked module's values do not depend on the thread count or the batch.

    Unfolded (impl `exact`): each Inception block's input is made blocked once for its three or four
    branch convolutions and its pooling (the plain module reorders it for each), as is the input of
    the stem's max-pools; every convolution's output returns to the plain layout for PyTorch's own
    BatchNorm (oneDNN's computes the same function with other roundings). Features equal the plain
    module's bit for bit wherever it uses oneDNN (tested). Folded (impl `fused`): activations stay
    blocked between layers, apart from each concatenation (`_BlockedCat`)."""
    extra = set(net.features_list) - {"2048", "logits_unbiased", "logits"}
    if extra:  # the intermediate taps squeeze a pooled tensor, which oneDNN tensors cannot do
        raise ValueError(f"the blocked layout supports the 2048-d features and logits, not {sorted(extra)}")
    if folded:
        net.Conv2d_1a_3x3.register_forward_pre_hook(_to_blocked)
    else:
        for name, m in net.named_children():
            if name.startswith(("Mixed_", "MaxPool_")):
                m.register_forward_pre_hook(_to_blocked)
        for m in net.modules():
            if isinstance(getattr(m, "bn", None), nn.BatchNorm2d):
                m.bn.register_forward_pre_hook(_to_plain)
    net.AvgPool.register_forward_pre_hook(_to_plain)
    return net


INCEPTION_IMPLS = ("auto", "exact", "fused", "reference")


class InceptionExtractor(Extractor):
    """torch-fidelity's Inception-v3 on 8-bit RGB: pool3 features (2048) and the 1008 unbiased logits.

    impl `reference` runs torch-fidelity's module as it is. `exact` (what `auto` picks) runs the same
    module with every convolution in oneDNN, on the CPU in oneDNN's blocked layout where that saves
    reorders (`use_blocked_layout`): the features equal the module's bit for bit wherever PyTorch uses
    oneDNN for it (more than one thread, or batches of 16 and more, as in torch-fidelity's default batch
    of 64), and do not depend on the thread count or the batch. `fused` also folds each BatchNorm into
    its conv and sums in another order (FID 2.8e-7 from torch-fidelity's on 1000 vs 1000 images, 3.6e-6
    on 12 vs 12, with the stand-in weights). Speeds: `benchmarks/results/fid-cpu-*-impls.md`. All stay
    fp32; on CUDA they run in the plain layout with TF32 switched off around every call (torch-fidelity
    leaves PyTorch's default, TF32 convolutions, so GPU values differ from its GPU values)."""

    name, resize, dim, has_probs, classes = "inception-v3-tf", "tf1-bilinear-299", 2048, True, 1008
    key = "inception"
    # CPU ms per image on 2 cores (impl exact), two measurements: batch 4: 61.2, 8: 66.3 / 61.0, 16:
    # 70.2 / 69.3, 32: 77.6 / 79.3. The larger the batch, the more activations are allocated and freed
    # as fresh memory mappings at every layer, and page faults take the difference (system time 10-20 ms
    # per image at 8, 46 at 32); 250 peaked at 4.3 GB.
    cpu_batch = 8

    def __init__(
        self, weights: str | Path | None = None, device: torch.device | str = "cpu", impl: str = "auto"
    ) -> None:
        from unittest import mock

        import torch_fidelity.feature_extractor_inceptionv3 as fe

        if impl not in INCEPTION_IMPLS:
            raise UserError(f"Inception impl '{impl}' is not known; valid: {', '.join(INCEPTION_IMPLS)}")
        path = find_inception_weights(weights)
        try:
            # weights_only: tensors only, no code is unpickled (torch-fidelity's own loader would unpickle)
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - any unreadable file is the same user problem
            raise UserError(
                f"Inception weights '{path}' is {describe_file(path)}, not the expected PyTorch state dict "
                f"{INCEPTION_FILE} (about 91 MB, from {INCEPTION_URL}); fetch that file again"
            ) from None
        # Build torch-fidelity's architecture, handing it the state dict where it would download.
        with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: state):
            try:
                net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
            except RuntimeError as exc:
                raise UserError(
                    f"Inception weights '{path}' do not match the Inception-v3 architecture ({exc})"
                ) from None
        self.device = torch.device(device)
        self.impl = "exact" if impl == "auto" else impl
        self.layout = "plain"
        if self.impl == "fused":
            net = fold_batch_norm(net)
        if self.impl != "reference" and self.device.type == "cpu" and _blocked_layout_works():
            net, self.layout = use_blocked_layout(net, self.impl == "fused"), "onednn-blocked"
        self.net = net.to(self.device)
        self.weights = str(path)

    @torch.no_grad()
    def extract(self, x):
        x = x.to(self.device, non_blocking=True)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.dtype != torch.uint8:  # the 8-bit images FID is defined on
            x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if self.device.type == "cuda":
            with _NoTF32():
                feats, logits = self.net(x)
        elif self.layout == "onednn-blocked":
            with _BlockedCat():
                feats, logits = self.net(x)
        else:
            feats, logits = self.net(x)
        return feats, logits

    def describe(self) -> dict:
        # `values`: what the features equal bit for bit; cached statistics are keyed on it. The plain
        # module (reference, or exact where the blocked layout is unavailable) has its own: on one thread
        # below a batch of 16 PyTorch runs its 1x1 convs without oneDNN.
        if self.impl == "fused":
            values = "bn-folded"
        else:
            values = "torch-fidelity-onednn" if self.layout == "onednn-blocked" else "torch-fidelity-module"
        return {**super().describe(), "weights": self.weights, "impl": self.impl, "layout": self.layout,
                "values": values}  # fmt: skip


EXTRACTORS = ("auto", "inception", "vgg16", "digits", "points")
FOR_DATA = frozenset(c.key for c in (PointsExtractor, DigitsExtractor))  # names of the extractors made for the data


def extractor_name(name: str, kind: str, data_name: str) -> str:
    """`build_extractor`'s name for `name`: auto is the data source's declared extractor (Inception for a
    folder of fakes), points for 2-D data."""
    from gandist.config import registered

    if name not in EXTRACTORS:
        raise UserError(f"unknown extractor '{name}'; valid: {', '.join(EXTRACTORS)}")
    if name != "auto":
        return name
    return "points" if kind == "points" else getattr(registered("data").get(data_name), "extractor", "inception")


def build_extractor(
    name: str, kind: str, data_name: str, device="cpu", inception: str | None = None, impl: str = "auto",
    vgg16: str | None = None,
) -> Extractor:  # fmt: skip
    from gandist.config import registered

    name = extractor_name(name, kind, data_name)
    section = registered("data").get(data_name)
    if name == "points":
        return PointsExtractor()
    if name == "digits" and getattr(section, "digit_channels", 1) == 3:  # each channel read as a digit
        from gandist.metrics.stacked import StackedDigitsExtractor

        return StackedDigitsExtractor(device)
    if name == "digits":
        return DigitsExtractor(device)
    if name == "vgg16":
        from gandist.metrics.vgg import VGG16Extractor

        return VGG16Extractor(vgg16, device)
    return InceptionExtractor(inception, device, impl)
