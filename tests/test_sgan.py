"""The semi-supervised GAN (Odena 2016; Salimans et al. 2016, Sec. 5): its loss against the formula in
float64, the labelled/unlabelled digits the data layer serves, exact resume, class-conditional sampling,
`gandist eval`'s classifier accuracy, bad input, and the learning result (SGAN beats the same D trained on
the labelled digits alone)."""

import json

import pytest
import torch
from conftest import make_trainer

from gandist.cli import main
from gandist.config import load_config
from gandist.data import build_dataset
from gandist.data.digits import load_digits_tensor, split_indices
from gandist.errors import DataError
from gandist.families.sgan.objective import (
    accuracy,
    log_p_fake,
    log_p_real,
    supervised_loss,
    unsupervised_loss,
    with_fake_logit,
)
from gandist.train import checkpoint as ckpt

K = 10


def _reference_losses(full: torch.Tensor, labels: torch.Tensor, n_real: int):
    """The textbook K + 1 softmax in float64: probabilities first, logs last (no log-sum-exp tricks)."""
    p = torch.exp(full) / torch.exp(full).sum(1, keepdim=True)
    p_fake = p[:, K]
    real, fake = slice(0, n_real), slice(n_real, None)
    unsup = -torch.log(1 - p_fake[real]).mean() - torch.log(p_fake[fake]).mean()
    lab = labels >= 0
    p_class = p[:, :K] / (1 - p_fake[:, None])  # p(y | x, y < K + 1)
    sup = -torch.log(p_class[real][lab, labels[lab]]).mean()
    return sup, unsup


@pytest.mark.parametrize("explicit", [False, True])
def test_sgan_losses_match_the_k_plus_1_softmax_formula_in_float64(explicit):
    g = torch.Generator().manual_seed(5)
    n_real, n_fake = 13, 7
    logits = torch.randn(n_real + n_fake, K + explicit, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(K, (n_real,), generator=g)
    labels[::3] = -1  # unlabelled rows are left out of the supervised term
    full = with_fake_logit(logits, K)
    assert full.shape == (n_real + n_fake, K + 1)
    if not explicit:  # the implicit fake class is a logit of exactly 0 (Salimans et al. Sec. 5)
        assert torch.equal(full[:, K], torch.zeros(n_real + n_fake, dtype=torch.float64))
    sup_ref, unsup_ref = _reference_losses(full, labels, n_real)
    real, fake = logits[:n_real], logits[n_real:]
    torch.testing.assert_close(supervised_loss(real, labels, K), sup_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(unsupervised_loss(real, fake, K), unsup_ref, rtol=1e-12, atol=1e-12)


def test_k_plus_1_softmax_identities():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(9, K, generator=g, dtype=torch.float64) * 3
    z = torch.exp(logits).sum(1)
    # implicit fake logit: D(x) = 1 - p(fake | x) = Z(x) / (Z(x) + 1)
    torch.testing.assert_close(log_p_real(logits, K).exp(), z / (z + 1), rtol=1e-12, atol=0)
    torch.testing.assert_close(log_p_fake(logits, K).exp(), 1 / (z + 1), rtol=1e-12, atol=0)
    # p(real) + p(fake) = 1
    torch.testing.assert_close(log_p_real(logits, K).exp() + log_p_fake(logits, K).exp(),
                               torch.ones(9, dtype=torch.float64))  # fmt: skip
    # K + 1 logits are defined up to a common shift: K explicit logits minus their fake logit are the implicit ones
    explicit = torch.cat([logits, torch.randn(9, 1, generator=g, dtype=torch.float64)], 1)
    shifted = explicit[:, :K] - explicit[:, K:]
    torch.testing.assert_close(log_p_fake(explicit, K), log_p_fake(shifted, K), rtol=1e-12, atol=1e-12)
    # the supervised term is the K-way softmax: it ignores the fake logit entirely
    y = torch.randint(K, (9,), generator=g)
    other = explicit.clone()
    other[:, K] += 5.0
    torch.testing.assert_close(supervised_loss(explicit, y, K), supervised_loss(other, y, K), rtol=0, atol=0)


def test_supervised_term_is_exact_under_micro_batching():
    """The sum over micro-batches of share x (sum / expected labelled count) is the mean over the batch."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(12, K, generator=g, dtype=torch.float64)
    labels = torch.full((12,), -1)
    labels[:4] = torch.randint(K, (4,), generator=g)  # 4 labelled digits in front, as the source serves them
    share = 4 / 12
    whole = supervised_loss(logits, labels, K)
    parts = sum((n / 12) * supervised_loss(lg, lb, K, count=share * n)
                for lg, lb, n in zip(logits.split(6), labels.split(6), (6, 6)))  # fmt: skip
    torch.testing.assert_close(parts, whole, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------------------------
# The data layer: a held-out split, a labelled subset, labelled digits in front of each batch


def _digits(*extra):
    base = ["data.name=digits", "data.resolution=8", "data.batch_size=24", "data.holdout=497",
            "data.labels_per_class=10", "data.labelled_batch=8"]  # fmt: skip
    return load_config(None, [*base, *extra])


def test_labelled_subset_heldout_split_and_batches():
    cfg = _digits()
    src = build_dataset(cfg.data, 3)
    images, labels = load_digits_tensor(8)
    train, held = split_indices(len(images), 497)
    assert len(held) == 497 and len(set(train.tolist()) | set(held.tolist())) == 1797
    assert torch.equal(src.heldout()[0], images[held]) and torch.equal(src.heldout()[1], labels[held])
    assert torch.bincount(src.labelled_classes, minlength=K).tolist() == [10] * K
    assert set(train[src.labelled].tolist()).isdisjoint(held.tolist())
    train_images = {tuple(images[i].flatten().tolist()): int(labels[i]) for i in train.tolist()}
    for _ in range(20):  # 160 labelled draws cycle through the 100 labelled digits
        b = src.next_batch(24)
        assert b.x.shape == (24, 1, 8, 8) and (b.labels[8:] == -1).all()
        for x, y in zip(b.x[:8], b.labels[:8]):  # each labelled digit carries its true class
            assert train_images[tuple(x.flatten().tolist())] == int(y)
        for x in b.x[8:]:  # no held-out digit is ever served
            assert tuple(x.flatten().tolist()) in train_images
    other = build_dataset(cfg.data, 4)  # another seed labels other digits
    assert not torch.equal(other.labelled, src.labelled)


def test_label_file_with_a_class_outside_k_is_one_clear_line(tmp_path, capsys):
    f = tmp_path / "labels.csv"
    f.write_text("# index,class\n0,0\n1,12\n")
    with pytest.raises(DataError, match=r"line 3 names class 12, outside the 10 classes 0-9"):
        build_dataset(_digits("data.labels_per_class=0", f"data.label_file={f}").data, 0)
    argv = ["train", "sgan_digits", "--out", str(tmp_path / "run"), "--set", "data.labels_per_class=0",
            "--set", f"data.label_file={f}", "--set", "train.steps=2", "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert (
        len(err) == 1 and "class 12, outside the 10 classes" in err[0] and "fix or remove the line" in err[0]
    )


def test_a_label_file_names_the_labelled_digits(tmp_path):
    _, labels = load_digits_tensor(8)
    train, _ = split_indices(1797, 497)
    chosen = train[[0, 5, 9]]
    f = tmp_path / "labels.txt"
    f.write_text("".join(f"{int(i)},{int(labels[i])}\n" for i in chosen))
    src = build_dataset(_digits("data.labels_per_class=0", f"data.label_file={f}").data, 0)
    assert src.labelled.tolist() == [0, 5, 9] and src.labelled_classes.tolist() == labels[chosen].tolist()


def test_more_labels_per_class_than_the_data_holds_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(
        DataError, match=r"data.labels_per_class=200 but the training digits hold only \d+ of class"
    ):
        build_dataset(_digits("data.labels_per_class=200").data, 0)
    argv = ["train", "sgan_digits", "--out", str(tmp_path / "run"), "--set", "data.labels_per_class=200",
            "--set", "train.steps=2", "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "use data.labels_per_class<=" in err[0]


# ---------------------------------------------------------------------------------------------------
# Training: exact resume, class-conditional sampling, eval's accuracy


def _tiny(*extra):
    return load_config("sgan_digits", ["model.g_width=16", "model.d_width=16", "model.conditional=true",
        "data.batch_size=12", "data.labelled_batch=4", "train.steps=6", "train.ckpt_every=3",
        "train.log_every=2", "train.sample_every=3", "train.sample_n=10", "train.progress=false",
        "train.ema_kimg=0.01", *extra])  # fmt: skip


@pytest.mark.parametrize(
    "extra", [(), ("loss.name=nonsaturating", "model.fake_logit=explicit", "train.micro_batch=6")]
)
def test_sgan_resumes_bit_exactly(tmp_path, extra, trainer_state):
    full = make_trainer(_tiny(*extra), tmp_path / "full")
    full.train(progress=False)
    half = make_trainer(_tiny("train.steps=3", *extra), tmp_path / "half")
    half.train(progress=False)
    resumed = make_trainer(_tiny(*extra), tmp_path / "half")
    resumed.load(ckpt.latest_checkpoint(tmp_path / "half" / "checkpoints"))
    assert resumed.data.labelled_position == half.data.labelled_position > 0
    resumed.train(progress=False)
    a, b = trainer_state(full), trainer_state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    assert full.data.state_dict() == resumed.data.state_dict()


def test_generate_class_and_eval_accuracy(tmp_path, capsys):
    t = make_trainer(_tiny(), tmp_path / "run")
    t.train(progress=False)
    path = ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints")
    from gandist.generate import load_generator, sample

    gen = load_generator(path)
    z = torch.randn(5, gen.cfg.model.z_dim, generator=torch.Generator().manual_seed(2))
    # --class 7 feeds class 7's one-hot code: the same samples as calling G with labels 7 directly
    torch.testing.assert_close(sample(gen, 5, 2, cls=7), gen.G(z, torch.full((5,), 7)), rtol=0, atol=0)
    assert not torch.equal(sample(gen, 5, 2, cls=7), sample(gen, 5, 2, cls=3))
    assert main(["generate", str(path), "--class", "7", "--n", "4", "--out", str(tmp_path / "s.npz")]) == 0
    assert main(["generate", str(path), "--class", "10", "--out", str(tmp_path / "t.npz")]) == 2
    assert "classes 0-9" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["eval", str(path), "--metrics", "accuracy", "--out", str(tmp_path / "m.jsonl")]) == 0
    res = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[-1])
    x, y = t.data.heldout()
    assert res["classifier"]["accuracy"] == accuracy(t.nets["D"], x, y, K)
    assert res["classifier"]["heldout"] == 497 and res["classifier"]["labelled"] == 100


def test_class_of_an_unconditional_generator_is_one_clear_line(tmp_path, capsys):
    make_trainer(_tiny("model.conditional=false", "train.steps=1"), tmp_path / "run").train(progress=False)
    assert main(["generate", str(tmp_path / "run"), "--class", "7", "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.conditional=true" in err[0]


# ---------------------------------------------------------------------------------------------------
# The learning result


def _heldout_accuracy(mode: str, seed: int, tmp_path) -> float:
    cfg = load_config("sgan_digits", [f"loss.mode={mode}", f"train.seed={seed}", "train.progress=false"])
    t = make_trainer(cfg, tmp_path / f"{mode}{seed}", log_enabled=False)
    t.train(progress=False)
    return accuracy(t.nets["D"], *t.data.heldout(), K)


@pytest.mark.slow
@pytest.mark.learning
def test_semi_supervised_d_beats_the_same_d_on_the_labelled_digits_alone(tmp_path):
    """sgan_digits.yaml, seed 0, 3000 steps (~25 s + ~7 s on one thread). Held-out accuracy on the 497
    test digits with 10 labels per class, measured with `python benchmarks/quality/sgan_digits.py --seeds
    0,1,2`: semi-supervised 0.9155 / 0.9316 / 0.9537 (mean 0.9336, sd 0.0192), supervised alone 0.8732 /
    0.9095 / 0.9095 (mean 0.8974, sd 0.0209); the win per seed +0.042, +0.022, +0.044. Margin: seed 0 must
    win by at least 2 points (measured 4.2)."""
    semi, supervised = _heldout_accuracy("semi", 0, tmp_path), _heldout_accuracy("supervised", 0, tmp_path)
    assert semi >= supervised + 0.02, (semi, supervised)


@pytest.mark.slow
@pytest.mark.learning
def test_a_class_conditional_generator_draws_the_digit_it_is_asked_for(tmp_path):
    """sgan_digits.yaml with model.conditional=true (~26 s): `generate --class k` for k = 0..9, 50 samples each,
    judged by the independent digits classifier of `gandist eval` (a CNN trained on 1500 labelled digits).
    Measured (seed 0): all 500 classified as the class asked for. Margin: 90% overall, 70% for every class
    (chance is 10%)."""
    from gandist.generate import load_generator, sample
    from gandist.metrics.extractors import DigitsExtractor

    cfg = load_config("sgan_digits", ["model.conditional=true", "train.progress=false"])
    make_trainer(cfg, tmp_path / "run").train(progress=False)
    gen = load_generator(tmp_path / "run")
    classifier = DigitsExtractor()
    right = []
    for k in range(K):
        _, logits = classifier.extract(sample(gen, 50, seed=k, cls=k))
        right.append((logits.argmax(1) == k).double().mean().item())
    print("classified as asked, per class:", right)
    assert sum(right) / K > 0.9 and min(right) > 0.7, right


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["data.labels_per_class=0", "data.labelled_batch=0"],
            r"the semi-supervised GAN needs a labelled subset",
        ),
        (["data.labels_per_class=0"], r"data.labelled_batch is set but every digit is labelled"),
        (
            ["data.label_file=x.csv"],
            r"data.labels_per_class and data.label_file both pick the labelled digits",
        ),
        (
            ["data.labelled_batch=96"],
            r"data.labelled_batch=96 must be between 1 and data.batch_size - 1 \(95\)",
        ),
        (["data.name=ring"], r"model.name=sgan needs labelled data, but data.name=ring has no labels"),
        (["model.classes=12"], r"model.classes=12 but data.name=digits has 10 classes; set model.classes=10"),
        (["data.holdout=1797"], r"data.holdout=1797 leaves no training digits"),
        (["data.labels_per_class=0", "data.label_file=/no.csv"], r"data.label_file '/no.csv' does not exist"),
    ],
)
def test_impossible_sgan_configs_fail_with_one_line(overrides, message):
    from gandist.config import ConfigError

    if overrides == ["data.name=ring"]:  # the digits-only keys of the shipped config do not exist for ring
        with pytest.raises(ConfigError, match=message):
            load_config(None, ["model.name=sgan", "data.name=ring"])
        return
    with pytest.raises(ConfigError, match=message):
        load_config("sgan_digits", overrides)
