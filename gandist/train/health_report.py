"""`gandist health RUN_DIR`: a one-page picture of a run's health and a plain-text summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gandist.errors import UserError
from gandist.train.coverage_alarm import DIAGNOSES  # health.py's, with coverage_collapse registered

COLORS = {
    "vanishing_gradients": "tab:red",
    "oscillation": "tab:orange",
    "mode_collapse": "tab:purple",
    "coverage_collapse": "tab:pink",
    "non_finite": "black",
}


def read_log(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise UserError(f"'{run_dir}' has no log.jsonl; give a run directory written by gandist train")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ticks = [r for r in records if "g_loss" in r]
    events = [r for r in records if r.get("event") == "health"]
    return ticks, events


def intervals(events: list[dict[str, Any]], last_step: int) -> list[tuple[str, int, int | None]]:
    """(diagnosis, start step, clear step or None while still active at the end)."""
    open_: dict[str, int] = {}
    out = []
    for e in events:
        if e["state"] == "start":
            open_[e["diagnosis"]] = e["step"]
        elif e["diagnosis"] in open_:
            out.append((e["diagnosis"], open_.pop(e["diagnosis"]), e["step"]))
    out += [(name, start, None) for name, start in open_.items()]
    return sorted(out, key=lambda x: x[1])


def summary_text(run_dir: Path, ticks, events) -> str:
    last = ticks[-1]["step"] if ticks else 0
    spans = intervals(events, last)
    lines = [f"health of {run_dir} ({last} generator steps)"]
    if not spans:
        lines.append("healthy: no diagnosis was raised")
    # The remedies each start event logged: filtered against the run's settings when it was raised.
    remedies = {(e["diagnosis"], e["step"]): e.get("remedies", []) for e in events if e["state"] == "start"}
    for name, start, end in spans:
        d = DIAGNOSES[name]
        status = f"steps {start}-{end}" if end is not None else f"since step {start}, still active at the end"
        lines.append(f"- {name}: {d.message} ({status})")
        for remedy in remedies.get((name, start), []):
            lines.append(f"    * {remedy}")
    if ticks and "diversity" in ticks[-1]:
        lines.append(
            f"final sample diversity: {ticks[-1]['diversity']:.2f} x the data's; "
            f"near-duplicate rate {ticks[-1]['dup_rate']:.2f} (data {ticks[-1]['dup_rate_real']:.2f})"
        )
    return "\n".join(lines)


def plot(run_dir: Path, ticks, events, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in ticks]
    last = steps[-1] if steps else 0
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), dpi=100, sharex=True)
    (a, b), (c, d) = axes

    def series(key):
        return [r.get(key, float("nan")) for r in ticks]

    a.plot(steps, series("d_loss"), label="D loss")
    a.plot(steps, series("g_loss"), label="G loss")
    a.set_title("losses")
    if any("d_acc" in r for r in ticks):
        b.plot(steps, series("d_real"), label="D(x)")
        b.plot(steps, series("d_fake"), label="D(G(z))")
        b.plot(steps, series("d_acc"), label="D accuracy", linestyle="--")
        b.set_title("discriminator outputs")
    else:
        b.plot(steps, series("critic_gap"), label="E[D(x)] - E[D(G(z))]")
        b.set_title("critic gap")
    c.semilogy(steps, series("g_grad_norm"), label="||grad G||")
    c.semilogy(steps, series("d_grad_norm"), label="||grad D||")
    c.set_title("gradient norms")
    d.plot(steps, series("diversity"), label="sample / data diversity")
    d.plot(steps, series("dup_rate"), label="near-duplicate rate")
    d.axhline(1.0, color="gray", linewidth=0.8)
    d.set_title("sample diversity (fixed latents)")
    for name, start, end in intervals(events, last):
        for ax in axes.flat:
            ax.axvspan(start, end if end is not None else last, color=COLORS[name], alpha=0.12)
        a.annotate(
            name,
            (start, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            color=COLORS[name],
            va="top",
            rotation=90,
        )
    for ax in axes.flat:
        ax.legend(fontsize=7)
    c.set_xlabel("generator step")
    d.set_xlabel("generator step")
    fig.suptitle(f"health: {Path(run_dir).name}")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def report(run_dir: str | Path) -> tuple[str, Path]:
    run_dir = Path(run_dir)
    ticks, events = read_log(run_dir)
    text = summary_text(run_dir, ticks, events)
    png = plot(run_dir, ticks, events, run_dir / "health.png")
    return text, png
