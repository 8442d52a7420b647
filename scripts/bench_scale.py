#!/usr/bin/env python3
"""Assembles the scale table from the tagged projector bench runs of `scripts/bench.sh`.

Reads bench/scale/projector-e{events}-t{tenants}.json (one scenario each) and writes
bench/scale.json and bench/scale.md: every figure at 1x and at 10x along two axes, events
(at each tenant count) and tenants (at each event count), the growth factor and whether the
growth is linear.

"Linear?" for a per-event figure (events/s, CPU-µs per event): total time or CPU grows in
proportion to the events and does not depend on the tenants, i.e. the figure stays within
±25% (a 2-core shared machine is that noisy); outside it, "super-linear" when the per-event
cost grows (time grows faster than the events) and "sub-linear" when it falls (usually start-up
amortised over more events). For a total (rebuild seconds): x8..x12.5 along
the events axis, x0.8..x1.25 along the tenants axis. For memory (peak RSS) the target is
sub-linear: growth below x10.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"

# (label, path into a scenario, kind): kind is "rate" (higher is better, per event), "cost"
# (per event), "total" (seconds for the whole run) or "memory".
FIGURES = [
    ("plain reader, all inputs: events/s", ("plain_reader", "events_per_second"), "rate"),
    ("plain reader, all inputs: CPU-µs/event", ("plain_reader", "cpu_us_per_event"), "cost"),
    ("projector, all inputs: events/s", ("projector", "events_per_second"), "rate"),
    ("projector, all inputs: CPU-µs/event", ("projector", "cpu_us_per_event"), "cost"),
    ("projector, all inputs: rebuild wall s", ("projector", "wall_seconds"), "total"),
    ("projector, all inputs: peak RSS MiB", ("projector", "peak_rss_mib"), "memory"),
    ("apply-only: events/s", ("apply_only", "events_per_second"), "rate"),
    ("apply-only: CPU-µs/event", ("apply_only", "thread_cpu_us_per_event"), "cost"),
    ("decisions: plain reader events/s", ("decisions_only", "plain_reader", "events_per_second"), "rate"),
    ("decisions: plain reader CPU-µs/event", ("decisions_only", "plain_reader", "cpu_us_per_event"), "cost"),
    ("decisions: projector events/s", ("decisions_only", "projector", "events_per_second"), "rate"),
    ("decisions: projector CPU-µs/event", ("decisions_only", "projector", "cpu_us_per_event"), "cost"),
    ("decisions: projector peak RSS MiB", ("decisions_only", "projector", "peak_rss_mib"), "memory"),
    ("decisions: Quix Streams events/s", ("decisions_only", "quix", "events_per_second"), "rate"),
    ("decisions: Quix Streams CPU-µs/event", ("decisions_only", "quix", "cpu_us_per_event"), "cost"),
    ("decisions: Quix Streams peak RSS MiB", ("decisions_only", "quix", "peak_rss_mib"), "memory"),
    ("decisions: contract floor (read, decode, store, publish) events/s", ("decisions_only", "floor", "publish", "events_per_second"), "rate"),
    ("decisions: contract floor CPU-µs/event", ("decisions_only", "floor", "publish", "cpu_us_per_event"), "cost"),
]


def get(d, path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d if isinstance(d, (int, float)) else None


def num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}"


def verdict(kind: str, axis: str, growth: float) -> str:
    if kind in ("rate", "cost"):
        if 0.8 <= growth <= 1.25:
            return "yes"
        worse = growth < 0.8 if kind == "rate" else growth > 1.25
        return "no: super-linear" if worse else "no: sub-linear"
    if kind == "total":
        lo, hi = (8, 12.5) if axis == "events" else (0.8, 1.25)
        if lo <= growth <= hi:
            return "yes"
        return "no: super-linear" if growth > hi else "no: sub-linear"
    return "sub-linear" if growth < 10 else "not sub-linear"


def main() -> int:
    runs = {}
    for p in sorted((BENCH / "scale").glob("projector-e*-t*.json")):
        m = re.fullmatch(r"projector-e(\d+)-t(\d+)\.json", p.name)
        if not m:
            continue
        report = json.loads(p.read_text())
        for sc in report.get("scenarios", []):
            runs[(int(m[1]), int(m[2]))] = {**sc, "conditions": report.get("conditions", "")}
    if not runs:
        print("no bench/scale/projector-e*-t*.json: run AISPM_BENCH_SCALE=1 scripts/bench.sh", file=sys.stderr)
        return 1
    events = sorted({e for e, _ in runs})
    tenants = sorted({t for _, t in runs})
    axes = []
    for t in tenants:
        for lo, hi in zip(events, events[1:]):
            if (lo, t) in runs and (hi, t) in runs:
                axes.append(("events", f"events {lo:,} → {hi:,} at {t} tenants", runs[(lo, t)], runs[(hi, t)], hi / lo))
    for e in events:
        for lo, hi in zip(tenants, tenants[1:]):
            if (e, lo) in runs and (e, hi) in runs:
                axes.append(("tenants", f"tenants {lo} → {hi} at {e:,} events", runs[(e, lo)], runs[(e, hi)], hi / lo))

    out = {"runs": {f"e{e}-t{t}": sc for (e, t), sc in sorted(runs.items())}, "axes": []}
    md = ["### Scale", "",
          "The projector bench at each point (one scenario: 100 entities per tenant, so state grows "
          "with tenants; memory run off). Events/s are records / wall time of each whole process; "
          "CPU is user + sys of the whole process (start-up included, which weighs more at 100k "
          "events). 'Linear?': a per-event figure staying within ±25% means time and CPU grow in "
          "proportion to the events and do not depend on the tenant count; outside that band, "
          "'super-linear' means the per-event cost grows, 'sub-linear' that it falls (mostly "
          "start-up amortised over more events); a total (rebuild s) "
          "should grow x8..x12.5 with 10x events and stay within ±25% with 10x tenants; memory "
          "should grow sub-linearly (below x10). The events axis is 100k → 1M: 10M events takes "
          "too long on this machine for one session.", ""]
    for (e, t), sc in sorted(runs.items()):
        md.append(f"- {e:,} events, {t} tenants, {sc.get('entities')} entities: {sc['conditions']}")
    md.append("")
    for axis, title, a, b, factor in axes:
        rows = []
        md += [f"#### {title}", "", "| figure | 1x | 10x | growth | linear? |", "|---|---:|---:|---:|---|"]
        for label, path, kind in FIGURES:
            x, y = get(a, path), get(b, path)
            if x is None or y is None or x == 0:
                continue
            growth = y / x
            v = verdict(kind, axis, growth)
            rows.append({"figure": label, "at_1x": x, "at_10x": y, "growth": round(growth, 3), "linear": v})
            md.append(f"| {label} | {num(x)} | {num(y)} | x{growth:.2f} | {v} |")
        md.append("")
        out["axes"].append({"axis": axis, "title": title, "factor": factor, "rows": rows})
    (BENCH / "scale.json").write_text(json.dumps(out, indent=2))
    (BENCH / "scale.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print("wrote bench/scale.json and bench/scale.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
