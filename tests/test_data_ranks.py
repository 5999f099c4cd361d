"""Every registered data source is exact across ranks: rank r's share of a global batch is the matching slice
of one process's batch, bit for bit, with or without micro-batches, and a source restored from a checkpoint's
state continues the same stream. The reference is the one-process source itself (a batch drawn whole).

The parametrisation is the registry: a new source without a case here fails `test_every_source_has_a_case`.
(DALI is not in the registry: its pipelines shard files per rank, and a checkpoint of it resumes only on as
many ranks as wrote it; tests/test_dali.py covers it.)
"""

from __future__ import annotations

import struct

import pytest
import torch
from PIL import Image

from gandist.config import make_section
from gandist.data.base import DATASETS, Batch, load_sources

load_sources()

GLOBAL = 8  # samples per global batch; 2 ranks take 4 each (unpaired data comes in pairs: 2 pairs a rank)
WORLD = 2


def _folder(root, count: int, salt: int) -> str:
    root.mkdir(parents=True)
    g = torch.Generator().manual_seed(salt)
    for i in range(count):  # distinct, asymmetric images, so a wrong order or a wrong flip shows
        pixels = torch.randint(0, 256, (8, 8, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(root / f"{i:03d}.png")
    return str(root)


def _idx(root, count: int, salt: int) -> str:
    """MNIST's IDX pair of 8x8 training digits (labels i % 10, so every class is there)."""
    root.mkdir(parents=True)
    g = torch.Generator().manual_seed(salt)
    pixels = torch.randint(0, 256, (count, 8, 8), generator=g, dtype=torch.uint8).numpy().tobytes()
    (root / "train-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, count, 8, 8) + pixels)
    (root / "train-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, count) + bytes(i % 10 for i in range(count)))
    return str(root)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("data_ranks")
    _folder(root / "unpaired" / "trainA", 5, 1)
    _folder(root / "unpaired" / "trainB", 7, 2)
    return {"folder": _folder(root / "folder", 6, 3), "unpaired": str(root / "unpaired"),
            "mnist": _idx(root / "mnist", 13, 4)}  # fmt: skip


# each registered source with its flips on (where it has them) and odd dataset sizes, so the epochs wrap
# inside a batch; digits also semi-supervised, with a labelled front (5) that straddles the two ranks' shares
CASES = {
    "ring": {},
    "grid": {},
    "digits": {"resolution": 8, "mirror": True},
    "digits_semi": {"name": "digits", "resolution": 8, "mirror": True, "holdout": 97, "labels_per_class": 1,
                    "labelled_batch": 5},  # fmt: skip
    "procedural": {"resolution": 8, "mirror": True, "size": 5},
    "folder": {"resolution": 8, "mirror": True},
    # CycleGAN's jitter: every window and flip a function of the global position (8 -> 9 px resized, 4 or 8 px
    # crops at moving offsets), and main's un-jittered load
    "unpaired": {"resolution": 8, "mirror": True, "preprocess": "resize_and_crop"},
    "unpaired_crop": {"name": "unpaired", "resolution": 4, "mirror": True, "preprocess": "crop"},
    "unpaired_none": {"name": "unpaired", "resolution": 8, "mirror": True, "preprocess": "none"},
    "shapes": {"resolution": 8, "mirror": True, "count": 3, "preprocess": "resize_and_crop", "load_size": 12},
    "stacked_digits": {"resolution": 16},
    # MNIST's reader on 13 generated 8x8 IDX digits, every one labelled or semi-supervised as digits
    "mnist": {"resolution": 8, "mirror": True},
    "mnist_semi": {"name": "mnist", "resolution": 8, "mirror": True, "labels_per_class": 1, "labelled_batch": 5},
}


def _source(case: str, folders, seed: int = 5, rank: int = 0, world: int = 1):
    kw = dict(CASES[case])
    name = kw.pop("name", case)
    if name in folders:
        kw["path"] = folders[name]
    src = DATASETS[name](make_section("data", name=name, batch_size=GLOBAL, **kw), seed)
    if world > 1:
        src.shard(rank, world)
    return src


def _cat(parts: list[Batch]) -> Batch:
    cat = lambda ts: None if ts[0] is None else torch.cat(ts)  # noqa: E731
    return Batch(cat([p.x for p in parts]), cat([p.labels for p in parts]), cat([p.domain for p in parts]))


def _assert_same(a: Batch, b: Batch, what: str) -> None:
    assert torch.equal(a.x, b.x), f"{what}: samples differ"
    for field in ("labels", "domain"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None) and (x is None or torch.equal(x, y)), f"{what}: {field} differ"


def test_every_source_has_a_case():
    named = {kw.get("name", case) for case, kw in CASES.items()}
    assert named == set(DATASETS), f"sources without a case here: {sorted(set(DATASETS) - named)}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_rank_shares_concatenate_to_the_one_process_batch(case, folders):
    one = _source(case, folders)
    ranks = [_source(case, folders, rank=r, world=WORLD) for r in range(WORLD)]
    micro = [_source(case, folders, rank=r, world=WORLD) for r in range(WORLD)]
    for step in range(3):  # the third global batch wraps the 5- and 6-image epochs
        whole = one.next_batch(GLOBAL)
        _assert_same(_cat([r.next_batch(GLOBAL // WORLD) for r in ranks]), whole, f"{case} batch {step}")
        # micro-batches of 2: chunk m of rank r is samples [m W 2 + r 2, ...) of the global batch (the loop's rule)
        chunks = [[r.next_batch(2) for _ in range(GLOBAL // WORLD // 2)] for r in micro]
        _assert_same(_cat([chunks[r][m] for m in range(len(chunks[0])) for r in range(WORLD)]), whole,
                     f"{case} micro-batches {step}")  # fmt: skip
        states = [r.state_dict() for r in (one, *ranks, *micro)]
        assert all(s == states[0] for s in states), f"{case}: the position is not global: {states}"
    if case in ("digits_semi", "mnist_semi"):  # the labelled front really straddles the shares: 4 on rank 0, 1 on rank 1
        assert whole.labels[:5].ge(0).all() and whole.labels[5:].eq(-1).all()


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_rank_restored_from_state_continues_its_stream(case, folders):
    straight = _source(case, folders, rank=1, world=WORLD)
    for _ in range(2):
        straight.next_batch(GLOBAL // WORLD)
    state = straight.state_dict()
    want = straight.next_batch(GLOBAL // WORLD)
    resumed = _source(case, folders, rank=1, world=WORLD)
    resumed.load_state_dict(state)
    _assert_same(resumed.next_batch(GLOBAL // WORLD), want, f"{case} resumed")
    # the state is global: one process continues with the whole batch whose second half rank 1 drew
    single = _source(case, folders)
    single.load_state_dict(state)
    _assert_same(_cat([single.next_batch(GLOBAL)]).split(GLOBAL // WORLD)[1], want, f"{case} resumed on 1 rank")
