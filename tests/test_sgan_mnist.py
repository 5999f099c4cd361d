"""Salimans et al. 2016's semi-supervised MNIST setup (configs/sgan_mnist.yaml; openai/improved-gan,
mnist_svhn_cifar10/train_mnist_feature_matching.py): the networks against the official definitions counted
by hand, weight normalisation and its data-dependent initialisation, the noise of D in training and none in
evaluation, G against a float64 re-derivation, the losses against their code's formulas, their Adam, the MNIST
reader on IDX files written here (plain, gzipped, an image folder with labels.csv) and its one-line errors,
and a few training steps on those files that checkpoint, resume bit for bit and report the test accuracy."""

from __future__ import annotations

import gzip
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_same_state, make_trainer, trainer_state
from PIL import Image

from gandist.cli import main
from gandist.config import ConfigError, load_config, make_section
from gandist.data import build_dataset
from gandist.errors import DataError
from gandist.families.sgan.networks import WeightNormLinear
from gandist.families.sgan.objective import accuracy, log_p_fake, log_p_real, with_fake_logit
from gandist.models import build_networks
from gandist.objectives.base import Phase, PhaseContext
from gandist.train import checkpoint as ckpt
from gandist.train.optim import AdamEpsInsideSqrt

K = 10


def _nets(**kw):
    cfg = make_section("model", "sgan", arch="salimans_mnist", z_dim=100, **kw)
    return build_networks(cfg, (1, 28, 28), "images")


# ---------------------------------------------------------------------------------------------------
# The networks against the official definitions


def test_networks_have_the_official_parameters_counted_by_hand():
    nets = _nets()
    G, D = nets["G"], nets["D"]
    # D: nn.DenseLayer theta [in, out] and b [out] everywhere; weight_scale [out] trainable on the output layer
    # only (train_scale=True), a fixed scale elsewhere (set by the data-dependent init, then constant)
    dims = [784, 1000, 500, 250, 250, 250, 10]
    trained = [(o, i) for i, o in zip(dims, dims[1:])] + [(o,) for o in dims[1:]] + [(10,)]
    got = [tuple(p.shape) for p in D.parameters()]
    assert sorted(got) == sorted(trained)
    assert sum(p.numel() for p in D.parameters()) == 784 * 1000 + 1000 * 500 + 500 * 250 + 250 * 250 + 250 * 250 + \
        250 * 10 + (1000 + 500 + 250 + 250 + 250 + 10) + 10 == 1_538_770  # fmt: skip
    assert sorted(tuple(b.shape) for b in D.buffers()) == sorted((o,) for o in dims[1:-1])  # 2250 fixed scales
    # G: LL.DenseLayer W (no bias: nn.batch_norm removes it) + the batch norm's b (g=None: no scale), twice;
    # the output DenseLayer's W and b plus l2normalize's trainable W_scale
    g_count = 100 * 500 + 500 + 500 * 500 + 500 + 500 * 784 + 784 + 784
    assert sum(p.numel() for p in G.parameters()) == g_count == 694_568
    assert sorted(tuple(p.shape) for p in G.parameters()) == sorted(
        [(500, 100), (500,), (500, 500), (500,), (784, 500), (784,), (784,)]
    )
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    logits, features = D.eval()(x, with_features=True)
    assert logits.shape == (3, K) and features.shape == (3, 250)  # implicit fake class: K logits
    assert G(torch.randn(4, 100)).shape == (4, 1, 28, 28)


def test_weight_norm_is_the_official_formula_and_the_init_normalises_every_layer():
    g = torch.Generator().manual_seed(0)
    layer = WeightNormLinear(7, 5, train_scale=True)
    with torch.no_grad():
        layer.scale.copy_(torch.rand(5, generator=g) + 0.5)
        layer.bias.copy_(torch.randn(5, generator=g))
    x = torch.randn(9, 7, generator=g, dtype=torch.float64)
    theta = layer.direction.detach().double().T  # their [in, out]
    want = x @ (theta * (layer.scale.detach().double() / theta.square().sum(0).sqrt())) + layer.bias.detach().double()
    torch.testing.assert_close(layer.double()(x), want, rtol=1e-12, atol=1e-12)

    D = _nets()["D"]
    x = torch.rand(500, 1, 28, 28) * 2 - 1
    torch.manual_seed(3)
    D.data_init(x)
    pre = []
    hooks = [m.register_forward_hook(lambda m, i, o: pre.append(o)) for m in [*D.hidden, D.head]]
    torch.manual_seed(3)  # the same noise as the init pass: every layer's pre-activations now standardised
    D.train()(x)
    for h in hooks:
        h.remove()
    for i, a in enumerate(pre):
        torch.testing.assert_close(a.mean(0), torch.zeros(a.shape[1]), rtol=0, atol=2e-5, msg=f"layer {i} mean")
        torch.testing.assert_close(a.std(0, unbiased=False), torch.ones(a.shape[1]), rtol=0, atol=2e-5,
                                   msg=f"layer {i} std")  # fmt: skip
    for layer in [*D.hidden, D.head]:  # each row of W has norm s
        torch.testing.assert_close(layer.weight().norm(dim=1), layer.scale, rtol=1e-5, atol=0)


def test_d_noise_in_training_none_in_evaluation():
    D = _nets()["D"]
    x = torch.rand(4000, 1, 28, 28) * 2 - 1
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((i[0], o))) for m in [*D.hidden, D.head]]

    def layer_inputs(train: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        seen.clear()
        _, features = D.train(train)(x, with_features=True)
        outs = [o for _, o in seen]
        # what each dense layer would read without noise: pixels in [0, 1], then the ReLU of the layer below
        clean = [(x.flatten(1) + 1) / 2] + [F.relu(o) for o in outs[:-1]]
        return [i - c for (i, _), c in zip(seen, clean)], features

    noise, features = layer_inputs(True)
    for i, (n, std) in enumerate(zip(noise, [0.3, 0.5, 0.5, 0.5, 0.5, 0.5])):  # 0.3 on pixels, 0.5 on each later input
        # 4000 x width >= 1e6 draws: the sample std's relative standard error is under 0.1%, the bound 1%
        assert abs(n.std().item() / std - 1) < 0.01 and abs(n.mean().item()) < 0.01, (i, n.std().item())
    torch.testing.assert_close(features, F.relu(seen[-2][1]))  # their layers[-3]: the last ReLU, before its noise
    noise, features = layer_inputs(False)
    assert all(torch.equal(n, torch.zeros_like(n)) for n in noise)  # deterministic=True: no noise at all
    assert torch.equal(D(x[:5]), D(x[:5]))
    for h in hooks:
        h.remove()


def test_d_output_is_z_over_z_plus_1_with_an_implicit_fake_logit():
    D = _nets()["D"].eval().double()
    logits = D(torch.rand(6, 1, 28, 28, dtype=torch.float64) * 2 - 1)
    full = with_fake_logit(logits, K)
    assert full.shape == (6, K + 1) and torch.equal(full[:, K], torch.zeros(6, dtype=torch.float64))
    z = logits.exp().sum(1)  # Z = sum_k exp l_k; D(x) = Z / (Z + 1), p(fake) = 1 / (Z + 1)
    torch.testing.assert_close(log_p_real(logits, K).exp(), z / (z + 1), rtol=1e-12, atol=0)
    torch.testing.assert_close(log_p_fake(logits, K).exp(), 1 / (z + 1), rtol=1e-12, atol=0)


def test_g_is_the_official_generator_in_float64():
    G = _nets()["G"].double().train()
    z = torch.randn(16, 100, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for bn in (G.body[1], G.body[4]):
            bn.bias.normal_()
        G.out.scale.uniform_(0.5, 2)
        G.out.bias.normal_()
    u = torch.special.ndtr(z)  # their uniform noise
    assert 0 < u.min() and u.max() < 1
    h = u
    for dense, bn in ((G.body[0], G.body[1]), (G.body[3], G.body[4])):
        a = h @ dense.weight.detach().T
        a = (a - a.mean(0)) / (a.var(0, unbiased=False) + 1e-6).sqrt() + bn.bias.detach()
        h = torch.log1p(torch.exp(a))  # softplus
    w = G.out.direction.detach().T  # their W [in, out], l2normalize over the inputs with 1e-6 inside the root
    w = w * (G.out.scale.detach() / (1e-6 + w.square().sum(0)).sqrt())
    pixels = torch.sigmoid(h @ w + G.out.bias.detach())  # their output in [0, 1]
    torch.testing.assert_close(G(z), (2 * pixels - 1).view(16, 1, 28, 28), rtol=1e-12, atol=1e-12)


def test_salimans_arch_fixes_its_widths():
    with pytest.raises(ConfigError, match=r"model.d_width=512 is not used by model.arch=salimans_mnist"):
        load_config("sgan_mnist", ["model.d_width=512"])


# ---------------------------------------------------------------------------------------------------
# Their Adam


def test_adam_with_epsilon_inside_the_root_is_theirs():
    g = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5, 3, generator=g))
    opt = AdamEpsInsideSqrt([p], lr=0.003, betas=(0.5, 0.999), eps=1e-8)
    ref = p.detach().double().clone()
    m, v = torch.zeros(5, 3, dtype=torch.float64), torch.zeros(5, 3, dtype=torch.float64)
    for t in range(1, 6):
        grad = torch.randn(5, 3, generator=g) * 10.0 ** -t  # down to 1e-5: where eps inside the root matters
        p.grad = grad.clone()
        opt.step()
        gd = grad.double()  # nn.adam_updates: v_t, mg_t, v_hat, mg_hat, g_t = v_hat / sqrt(mg_hat + 1e-8)
        m, v = 0.5 * m + 0.5 * gd, 0.999 * v + 0.001 * gd**2
        ref = ref - 0.003 * (m / (1 - 0.5**t)) / (v / (1 - 0.999**t) + 1e-8).sqrt()
    torch.testing.assert_close(p.detach().double(), ref, rtol=1e-6, atol=1e-9)
    with pytest.raises(ConfigError, match="optim.eps_inside_sqrt is an Adam setting"):
        load_config("sgan_mnist", ["optim.name=rmsprop"])


# ---------------------------------------------------------------------------------------------------
# IDX files written here


def write_idx(root: Path, part: str, images: np.ndarray, labels: np.ndarray, gz: bool = False,
              image_magic: int = 0x803, label_count: int | None = None) -> None:  # fmt: skip
    """MNIST's two IDX files of `part` ('train' or 't10k'): big-endian magic, dimensions, then the bytes."""
    n, rows, cols = images.shape
    blobs = {
        f"{part}-images-idx3-ubyte": struct.pack(">IIII", image_magic, n, rows, cols)
        + images.astype(np.uint8).tobytes(),
        f"{part}-labels-idx1-ubyte": struct.pack(">II", 0x801, len(labels) if label_count is None else label_count)
        + labels.astype(np.uint8).tobytes(),
    }
    for name, blob in blobs.items():
        (root / (name + ".gz" if gz else name)).write_bytes(gzip.compress(blob) if gz else blob)


def fake_mnist(root: Path, n_train: int = 60, n_test: int = 20, side: int = 28, seed: int = 0, gz: bool = False):
    """Random digits with labels i % 10 in MNIST's IDX layout; returns the four arrays."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sets = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
        y = (np.arange(n) * 7 + seed) % 10  # every class, in no particular order
        write_idx(root, part, x, y, gz=gz)
        sets[part] = (x, y)
    return sets


def _mnist(root, **kw):
    return make_section("data", name="mnist", path=str(root), **kw)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_are_read_as_written(tmp_path, gz):
    sets = fake_mnist(tmp_path / "mnist", gz=gz)
    src = build_dataset(_mnist(tmp_path / "mnist"), 0)
    x, y = sets["train"]
    assert src.size == 60 and src.shape == (1, 28, 28)
    # pixel v is served as 2 v / 255 - 1; every training digit labelled
    torch.testing.assert_close(src.images, torch.from_numpy(x).double().div(255).mul(2).sub(1)[:, None].float())
    assert src.labels.tolist() == y.tolist() and src.labelled is None
    tx, ty = src.heldout()  # the t10k files: the held-out set, never in training
    assert tx.shape == (20, 1, 28, 28) and ty.tolist() == sets["t10k"][1].tolist()
    torch.testing.assert_close(tx, torch.from_numpy(sets["t10k"][0]).float().div(255).mul(2).sub(1)[:, None])
    batch = src.next_batch(7)
    assert batch.x.shape == (7, 1, 28, 28) and batch.labels.ge(0).all()


def test_image_folders_with_labels_csv(tmp_path):
    rng = np.random.default_rng(2)
    want = {}
    for part, n in (("train", 12), ("test", 5)):
        folder = tmp_path / "mnist" / part
        folder.mkdir(parents=True)
        lines = ["file,label"]
        pixels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for i in range(n):
            Image.fromarray(pixels[i]).save(folder / f"{i:05d}.png")
            lines.append(f"{i:05d}.png,{(i * 3) % 10}")
        (folder / "labels.csv").write_text("\n".join(lines) + "\n")
        want[part] = (pixels, [(i * 3) % 10 for i in range(n)])
    src = build_dataset(_mnist(tmp_path / "mnist"), 0)
    torch.testing.assert_close(src.images, torch.from_numpy(want["train"][0]).float().div(255).mul(2).sub(1)[:, None])
    assert src.labels.tolist() == want["train"][1] and src.heldout()[1].tolist() == want["test"][1]
    # the images and labels.csv must be one set, as the IDX pair's counts: one line each way
    train = tmp_path / "mnist" / "train"
    Image.fromarray(want["train"][0][0]).save(train / "extra.png")
    with pytest.raises(DataError, match=r"holds 1 image\(s\) that .*labels.csv' gives no label \(extra.png\), "
                                        r"against 12 labelled; label them in labels.csv or move them out"):  # fmt: skip
        build_dataset(_mnist(tmp_path / "mnist"), 0)
    (train / "extra.png").unlink()
    (train / "00003.png").unlink()
    with pytest.raises(DataError, match=r"labels.csv' line 5 names '.*00003.png', which does not exist"):
        build_dataset(_mnist(tmp_path / "mnist"), 0)


def test_labelled_subset_and_label_file(tmp_path):
    fake_mnist(tmp_path / "mnist")
    src = build_dataset(_mnist(tmp_path / "mnist", labels_per_class=2, labelled_batch=4), 3)
    assert torch.bincount(src.labelled_classes, minlength=K).tolist() == [2] * K
    assert src.labels[src.labelled].tolist() == src.labelled_classes.tolist()
    b = src.next_batch(8)
    assert b.labels[:4].ge(0).all() and b.labels[4:].eq(-1).all()
    f = tmp_path / "labels.csv"
    f.write_text("0,0\n59,3\n")  # indices into the 60 training digits
    src = build_dataset(_mnist(tmp_path / "mnist", label_file=str(f), labelled_batch=2), 0)
    assert src.labelled.tolist() == [0, 59] and src.labelled_classes.tolist() == [0, 3]


def _train_error(tmp_path, capsys, root) -> str:
    argv = ["train", "sgan_mnist", "--out", str(tmp_path / "run"), "--set", f"data.path={root}", "--no-progress"]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_bad_mnist_files_are_one_line_naming_the_fix(tmp_path, capsys):
    root = tmp_path / "mnist"
    assert "does not exist" in _train_error(tmp_path, capsys, root)
    root.mkdir()
    line = _train_error(tmp_path, capsys, root)
    assert "holds no train-images-idx3-ubyte" in line and "never downloads MNIST" in line
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (30, 28, 28)), np.arange(30) % 10
    write_idx(root, "train", x, y, label_count=29)  # the header announces 29 labels, 30 follow
    assert "the file is truncated or damaged" in _train_error(tmp_path, capsys, root)
    write_idx(root, "train", x, y[:29])  # 30 images, 29 labels
    line = _train_error(tmp_path, capsys, root)
    assert "holds 30 images but" in line and "holds 29 labels" in line and "copy both again" in line
    write_idx(root, "train", x, y, image_magic=0x801)  # the labels' magic number on the image file
    line = _train_error(tmp_path, capsys, root)
    assert "magic number 0x00000801 (2049), not 0x00000803 (2051) of IDX images" in line
    write_idx(root, "train", x, y + 5)  # labels up to 14
    assert "label 10, outside the 10 classes 0-9" in _train_error(tmp_path, capsys, root)
    write_idx(root, "train", x[:, :20, :20], y)
    assert "are 20x20 px but data.resolution=28; set data.resolution=20" in _train_error(tmp_path, capsys, root)
    with pytest.raises(ConfigError, match=r"data.name=mnist needs data.path="):
        load_config(None, ["model.name=sgan", "data.name=mnist"])


# ---------------------------------------------------------------------------------------------------
# The objective against their code's losses


def _tiny(root, *extra):
    return load_config("sgan_mnist", [f"data.path={root}", "data.batch_size=20", "data.labelled_batch=10",
        "data.labels_per_class=1", "train.steps=4", "train.ckpt_every=2", "train.log_every=1",
        "train.sample_every=2", "train.sample_n=4", "train.progress=false", *extra])  # fmt: skip


def _lse(x):
    return x.exp().sum(1).log()


def test_losses_are_their_code_with_unlabelled_reals(tmp_path):
    """loss_lab + loss_unl of train_mnist_feature_matching.py, and loss_gen, in float64 on the same logits:
    noise off, so the reference can recompute D on the very rows and fakes the objective saw."""
    fake_mnist(tmp_path / "mnist")
    cfg = _tiny(tmp_path / "mnist", "model.d_input_noise=0", "model.d_hidden_noise=0")
    t = make_trainer(cfg, tmp_path / "run", log_enabled=False)
    obj, D, G = t.objective, t.nets["D"], t.nets["G"]
    batch = t.data.next_batch(20)
    fakes_drawn = []
    hook = G.register_forward_hook(lambda m, i, o: fakes_drawn.append(o.detach()))

    def ctx(seed):
        return PhaseContext(0, 1.0, torch.Generator().manual_seed(seed), torch.device("cpu"), 100, 20)

    loss = obj.accumulate(Phase("Dmain", "D", ("D",)), batch, ctx(7)).loss
    (fake,) = fakes_drawn
    assert fake.shape[0] == 10  # one fake per unlabelled row, as their 100 per 100
    with torch.no_grad():
        lab, unl, out_fake = (D(v).double() for v in (batch.x[:10], batch.x[10:], fake))
    y = batch.labels[:10]
    assert y.ge(0).all() and batch.labels[10:].eq(-1).all()
    loss_lab = -lab[torch.arange(10), y].mean() + _lse(lab).mean()
    loss_unl = -0.5 * _lse(unl).mean() + 0.5 * F.softplus(_lse(unl)).mean() + 0.5 * F.softplus(_lse(out_fake)).mean()
    torch.testing.assert_close(loss.double(), loss_lab + 1.0 * loss_unl, rtol=1e-5, atol=1e-6)  # their weight 1

    fakes_drawn.clear()
    loss = obj.accumulate(Phase("Gmain", "G", ("G",)), batch, ctx(8)).loss
    (fake,) = fakes_drawn
    hook.remove()
    with torch.no_grad():  # mom_real over x_unl only, mom_gen over the fakes: their layers[-3]
        mom_real = D(batch.x[10:], with_features=True)[1].double().mean(0)
        mom_gen = D(fake, with_features=True)[1].double().mean(0)
    torch.testing.assert_close(loss.double(), (mom_gen - mom_real).square().mean(), rtol=1e-5, atol=1e-9)


def test_unlabelled_reals_need_whole_fake_counts():
    with pytest.raises(ConfigError, match=r"micro-batches and rank shares must be multiples of 2"):
        load_config("sgan_mnist", ["train.micro_batch=25"])


# ---------------------------------------------------------------------------------------------------
# A few steps on IDX files: checkpoint, bit-exact resume, the test accuracy


@pytest.mark.parametrize("extra", [(), ("train.micro_batch=10",)])
def test_tiny_mnist_run_resumes_bit_exactly_and_reports_the_test_accuracy(tmp_path, extra):
    fake_mnist(tmp_path / "mnist")
    full = make_trainer(_tiny(tmp_path / "mnist", *extra), tmp_path / "full")
    full.train(progress=False)
    assert set(full.ema) == {"D_ema"}  # their averaged D; no G average (their code keeps none)
    half = make_trainer(_tiny(tmp_path / "mnist", "train.steps=2", *extra), tmp_path / "half")
    half.train(progress=False)
    resumed = make_trainer(_tiny(tmp_path / "mnist", *extra), tmp_path / "half")
    resumed.load(ckpt.latest_checkpoint(tmp_path / "half" / "checkpoints"))
    assert resumed.data.labelled_position == half.data.labelled_position > 0
    resumed.train(progress=False)
    assert_same_state(trainer_state(full), trainer_state(resumed))
    assert full.data.state_dict() == resumed.data.state_dict()
    if extra:
        return
    # the average moved at 0.9999 per step: D_ema is D's initial weights plus 1e-4 of each step's change
    d, avg = full.nets["D"].hidden[0].direction, full.ema["D_ema"].shadow.hidden[0].direction
    assert not torch.equal(d, avg)
    out = tmp_path / "m.jsonl"
    assert main(["eval", str(tmp_path / "full"), "--metrics", "accuracy", "--out", str(out)]) == 0
    res = json.loads(out.read_text().splitlines()[-1])["classifier"]
    x, y = full.data.heldout()
    acc = accuracy(full.ema["D_ema"].shadow, x, y, K)
    assert res == {"accuracy": acc, "errors": 20 - round(acc * 20), "heldout": 20, "labelled": 10, "network": "D_ema"}
    assert math.isfinite(acc)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_ranks_equal_one_process(tmp_path):
    """sgan_mnist on 2 gloo ranks against one process with the same global batch of 20: rank 0 takes the 10
    labelled rows, rank 1 the 10 unlabelled ones; each rank draws 5 fakes (its expected unlabelled count), and the
    unlabelled rows' mean features are summed over ranks. The data-dependent init runs before the ranks' streams
    part. D's noise is off (each rank draws its own, as their code would)."""
    from conftest import max_rel_diff
    from test_ddp import REL_TOL, final_tensors, run_one, torchrun

    fake_mnist(tmp_path / "mnist")
    sets = [f"data.path={tmp_path / 'mnist'}", "data.batch_size=20", "data.labelled_batch=10", "data.labels_per_class=1",
            "train.steps=2", "model.d_input_noise=0", "model.d_hidden_noise=0", "train.sample_every=1000"]  # fmt: skip
    run_one("sgan_mnist", tmp_path / "one", sets)
    torchrun("sgan_mnist", tmp_path / "two", sets)
    nets = lambda t: {k: v for k, v in t.items() if not k.startswith("objective.")}  # noqa: E731
    one, two = nets(final_tensors(tmp_path / "one")), nets(final_tensors(tmp_path / "two"))
    assert any(k.startswith("D_ema.") for k in one)
    rel, name = max_rel_diff(one, two)
    print(f"sgan_mnist: max relative difference {rel:.3g} ({name})")
    assert rel <= REL_TOL, f"2 ranks differ from 1 process by {rel:.3g} relative in {name}"


def test_the_averaged_d_moves_at_their_decay_per_step(tmp_path):
    """openai/improved-gan's test-time D: every step the average moves 1e-4 of the way to D's new weights
    (loss.d_average 0.9999), starting at D's initial weights; checked over one step in float64."""
    fake_mnist(tmp_path / "mnist")
    t = make_trainer(_tiny(tmp_path / "mnist", "train.steps=1"), tmp_path / "run")
    before = {k: v.detach().double().clone() for k, v in t.nets["D"].named_parameters()}
    t.train(progress=False)
    after = dict(t.nets["D"].named_parameters())
    avg = dict(t.ema["D_ema"].shadow.named_parameters())
    moved = 0
    for k, d0 in before.items():
        want = 0.9999 * d0 + 1e-4 * after[k].detach().double()
        torch.testing.assert_close(avg[k].double(), want, rtol=2e-6, atol=1e-7)
        moved += not torch.equal(after[k].detach().double(), d0)
    assert moved > 0  # the step changed D, so the check is not of a copy against itself
