"""Data loading: images/s of the DALI pipeline vs the torch DataLoader (PIL decode), same prepared JPEG
dataset of generated images, same number of workers/threads, at 256^2 and 1024^2.

    python benchmarks/data/bench_loaders.py [--workers 2] [--repeats 5] [--out benchmarks/results]

On a machine without a GPU DALI runs its CPU pipeline (device_id=None); with one, DALI decodes with
nvJPEG (device="mixed") and the torch loader's batches are copied to the GPU, as training would.
Arms alternate (ABBA) so load drifts hit both; ratios are against the torch loader of the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from provenance import provenance  # noqa: E402

SETS = {256: (512, 32), 1024: (96, 8)}  # resolution: (images, batch)


def make_dataset(root: Path, res: int, count: int) -> Path:
    """Procedural images written as PNG, then `gandist prepare`d to JPEG q95 at `res`."""
    from PIL import Image

    from gandist.config import make_section
    from gandist.data import build_dataset
    from gandist.data.prepare import Options, prepare

    src = root / f"src{res}"
    src.mkdir(parents=True)
    proc = build_dataset(make_section("data", name="procedural", resolution=res, size=count), 0)
    for i in range(count):
        img = ((proc.image(i) + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
        Image.fromarray(img).save(src / f"{i:05d}.png", compress_level=1)
    dst = root / f"ds{res}"
    prepare(src, dst, Options(res, "jpeg", 95), progress=False)
    return dst


def rate(loader: str, path: Path, res: int, batch: int, workers: int, batches: int, device) -> float:
    from gandist.config import make_section
    from gandist.data import build_dataset

    cfg = make_section("data", name="folder", path=str(path), resolution=res, batch_size=batch, loader=loader,
                     num_workers=workers, dali_threads=workers, mirror=True)  # fmt: skip
    src = build_dataset(cfg, seed=0)
    for _ in range(3):  # warm-up: workers start, pipeline builds, caches fill
        src.sample(batch).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(batches):
        src.sample(batch).to(device, non_blocking=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batches * batch / (time.perf_counter() - t0)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batches", type=int, default=12)
    p.add_argument("--res", nargs="+", type=int, default=list(SETS))
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--smoke", action="store_true", help="a tiny 32^2 set: checks the harness on CPU")
    args = p.parse_args(argv)
    if args.smoke:
        SETS[32] = (16, 4)
        args.res, args.repeats, args.batches = [32], 2, 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    prov = provenance()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for res in args.res:
            count, batch = SETS[res]
            path = make_dataset(Path(d), res, count)
            got: dict[str, list[float]] = {"torch": [], "dali": []}
            for i in range(args.repeats):
                order = ("torch", "dali") if i % 2 == 0 else ("dali", "torch")
                for loader in order:
                    got[loader].append(rate(loader, path, res, batch, args.workers, args.batches, device))
            row = {"resolution": res, "batch": batch, "images": count, "workers": args.workers,
                   "decode": "mixed (nvJPEG)" if device.type == "cuda" else "cpu"}  # fmt: skip
            for loader, xs in got.items():
                q = statistics.quantiles(xs, n=5)
                row[f"{loader}_img_per_s"] = {
                    "median": statistics.median(xs),
                    "p20": q[0],
                    "p80": q[3],
                    "raw": xs,
                }
            row["dali_over_torch"] = row["dali_img_per_s"]["median"] / row["torch_img_per_s"]["median"]
            rows.append(row)
            print(f"{res}^2: torch {row['torch_img_per_s']['median']:.0f} img/s, DALI {row['dali_img_per_s']['median']:.0f} "
                  f"img/s ({row['dali_over_torch']:.2f}x), {args.workers} workers, {row['decode']} decode", flush=True)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "smoke" if args.smoke else prov["device"].split(":")[0].replace(" ", "_")
    path = out / f"loaders-{tag}-{prov['date'][:10]}.json"
    path.write_text(json.dumps({"provenance": prov, "rows": rows}, indent=1))
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
