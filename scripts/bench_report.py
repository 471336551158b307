#!/usr/bin/env python3
"""bench_report: merge the raw runs of scripts/bench into one report.

Reads every Google-Benchmark-shaped JSON file of a run (rill_compare, rill_micro, the Go
programs; several repetitions each) and the per-run CPU samples that scripts/bench recorded,
and writes, next to each other:

  <out>.json  machine, load, every raw row of every repetition, and per name the median
  <out>.md    median figure per name, grouped by workload and config, and rill/peer ratios
  <out>.png   per workload, one bar per implementation and layout (its best config), log-scale ns/item

Names are <workload>/<impl>/<config>.  The config's canonical tokens, cap<C>, workers<W>,
ordered|unordered and the layout (fused, peritem, batch<B>, auto), say which rows are
comparable; a row without one of them (the sequential loop, tbb_pipeline's tokens<T>, the
unbounded tbb_flow graphs) is comparable whatever that token's value.  Rows of impl `rill` or `rill_*` are rill's.  cost_sweep's configs also name
a cell (linear3_cost10us, parmap_sleep1ms, few8_cost1ms, heavytail, trickle_linear3, ...),
which is part of the match; its section of the report has, per cell and worker count, rill
with no hints, rill's best hand layout (`rill_tuned`), the ideal (computed here from the
cell and the sequential loop of the same run: see cost_sweep_ideal), each peer's best, and
for the trickle cells p50/p99 latency.

Standard library only.  Usage (scripts/bench passes all of these):
  bench_report.py --raw DIR --runs RUNS.tsv --out PREFIX [--reps N] [--quick 0|1] ...
"""

import argparse
import glob
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

WORKLOAD_ORDER = ["linear_trivial", "linear_heavy", "fan_out_fan_in", "heavy_tail", "backpressure",
                  "cost_sweep", "micro"]
IMPL_ORDER = ["rill", "go", "boost_fiber", "tbb_flow", "tbb_pipeline", "std_threads", "sequential"]
IMPL_COLOR = {
    "rill": 0xD62728, "go": 0x17BECF, "boost_fiber": 0x2CA02C, "tbb_flow": 0x1F77B4,
    "tbb_pipeline": 0x393B79, "std_threads": 0x7F7F7F, "sequential": 0x000000,
}
EXTRA_COUNTERS = ["peak_in_flight", "peak_rss_delta_kib", "bytes_per_goroutine", "p50_us", "p99_us",
                  "max_us"]
BUSY_LIMIT = 0.10  # others' share of all cores above which the machine "did not deliver"
STEAL_LIMIT = 0.05  # the hypervisor's share of the cores above which a repetition is marked
TIME_UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def is_rill(impl):
    return impl == "rill" or impl.startswith("rill_")


def split_name(name, kind):
    """Returns (full name, workload, impl, config) without Google Benchmark's suffixes."""
    # Google Benchmark's own suffixes go; its named arguments stay, as tokens the config
    # matches ("workers:2" -> "workers2", "cap:64" -> "cap64"): dropping them merged the 1-
    # and 2-worker rows of a micro benchmark into one.
    parts = []
    for p in name.split("/"):
        if p in ("real_time", "manual_time", "process_time"):
            continue
        if ":" in p:
            key, _, value = p.partition(":")
            if key in ("iterations", "repeats", "min_time", "threads"):
                continue
            p = key + value
        parts.append(p)
    if kind == "rill_micro" and not (len(parts) >= 3 and parts[0] == "micro"):
        parts = ["micro", "rill", "/".join(parts)]
    while len(parts) < 3:
        parts.append("-")
    return "/".join(parts), parts[0], parts[1], "/".join(parts[2:])


# cost_sweep's cell words: a shape (linear3, parmap, few8, heavytail, trickle) and a cost
# (cost1ns ... cost1ms, sleep1ms); the cell is those words of a config, in order, '_'-joined.
CELL_SHAPE_RE = re.compile(r"linear\d+|parmap|few\d+|heavytail|trickle")
CELL_COST_RE = re.compile(r"(cost|sleep)\d+(ns|us|ms)")


# The layout words of a row (work.hpp, "Layouts"): how its items move. Rows compare only
# with rows of the same layout; a row without one (the sequential loop) with every layout.
LAYOUT_RE = re.compile(r"fused|peritem|batch\d+|auto")
LAYOUT_ORDER = ["fused", "peritem", "batch", "auto"]


def config_key(config):
    """The canonical tokens of a config: {'cap': '64', 'workers': '2', 'order': 'ordered',
    'layout': 'batch21'}, and cost_sweep's cell: {'cell': 'linear3_cost10us', 'workers': '2'}
    (a cell's layouts are rill's hand layouts, its variants: cost_sweep compares bests)."""
    key = {}
    cell = []
    layout = None
    for token in re.split(r"[_/]", config):
        m = re.fullmatch(r"(cap|workers)(\d+)", token)
        if m:
            key[m.group(1)] = m.group(2)
        elif token in ("ordered", "unordered"):
            key["order"] = token
        elif CELL_SHAPE_RE.fullmatch(token) or CELL_COST_RE.fullmatch(token):
            cell.append(token)
        elif LAYOUT_RE.fullmatch(token) and layout is None:
            layout = token
    if cell:
        key["cell"] = "_".join(cell)
    elif layout:
        key["layout"] = layout
    return key


# Workloads whose rill rows are a par_map: its adaptive hand-out is up to half the capacity.
PAR_MAP_WORKLOADS = {"linear_heavy", "fan_out_fan_in", "heavy_tail"}


def layout_label(key, workload=None):
    """A row's layout in words: fused, per item, batch 21, adaptive (batches of 1..21)."""
    layout = key.get("layout")
    if not layout:
        return None
    if layout == "peritem":
        return "per item"
    if layout.startswith("batch"):
        return "batch " + layout[5:]
    if layout == "auto":
        # rill's adaptive links: up to a third of the capacity, at most 64; par_map's
        # hand-out, up to half of it, at most 64 (links.hpp: shape_for, unit_shape_for).
        cap = int(key["cap"]) if "cap" in key else None
        if workload in PAR_MAP_WORKLOADS:
            return f"adaptive (hand-outs of 1..{min(64, max(1, cap // 2)) if cap else 64})"
        return f"adaptive (batches of 1..{min(64, max(1, cap // 3)) if cap else 64})"
    return layout


def layout_rank(key):
    layout = key.get("layout") or ""
    for k, word in enumerate(LAYOUT_ORDER):
        if layout.startswith(word):
            return (k, int(layout[5:]) if word == "batch" else 0)
    return (len(LAYOUT_ORDER), 0)


def compatible(a, b):
    return all(a[k] == b[k] for k in a.keys() & b.keys())


def key_label(key, workload=None):
    # A cost_sweep cell groups by cell and workers (a peer's channel capacity is its variant).
    parts = [key.get("cell"), layout_label(key, workload),
             f"cap{key['cap']}" if "cap" in key and "cell" not in key else None,
             f"workers{key['workers']}" if "workers" in key else None, key.get("order")]
    parts = [p for p in parts if p]
    return " ".join(parts) if parts else "(any)"


def key_sort(key):
    if "cell" in key:
        return (cell_rank(key["cell"]), (), int(key.get("workers", -1)), -1, "")
    return ((), layout_rank(key), int(key.get("cap", -1)), int(key.get("workers", -1)),
            key.get("order", ""))


# ---- cost_sweep: cells, the ideal, time formatting -------------------------------------------

CS_SHAPES = ["linear", "parmap", "few", "heavytail", "trickle"]
CS_COSTS = ["cost1ns", "cost100ns", "cost10us", "cost1ms", "sleep1ms"]
CS_PEERS = ["go", "tbb_flow", "tbb_pipeline", "boost_fiber"]
UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6}


def parse_cell(cell):
    """{'shape': 'linear'|'parmap'|'few'|'heavytail'|'trickle', 'stages': 3, 'n': 8,
    'cost': 'cost10us', 'cost_ns': 1e4, 'sleep': bool, 'sub': 'linear'|'parmap'} of a cell."""
    out = {"shape": None, "stages": 1, "n": None, "cost": None, "cost_ns": None, "sleep": False}
    for word in (cell or "").split("_"):
        m = re.fullmatch(r"linear(\d+)", word)
        if m:
            if out["shape"] == "trickle":
                out["sub"], out["stages"] = "linear", int(m.group(1))
            else:
                out["shape"], out["stages"] = "linear", int(m.group(1))
            continue
        m = re.fullmatch(r"few(\d+)", word)
        if m:
            out["shape"], out["n"] = "few", int(m.group(1))
            continue
        if word == "parmap" and out["shape"] == "trickle":
            out["sub"] = "parmap"
            continue
        if word in ("parmap", "heavytail", "trickle"):
            out["shape"] = word
            continue
        m = re.fullmatch(r"(cost|sleep)(\d+)(ns|us|ms)", word)
        if m:
            out["cost"] = word
            out["cost_ns"] = int(m.group(2)) * UNIT_NS[m.group(3)]
            out["sleep"] = m.group(1) == "sleep"
    return out


def cell_rank(cell):
    if not cell:
        return ()
    c = parse_cell(cell)
    shape = CS_SHAPES.index(c["shape"]) if c["shape"] in CS_SHAPES else len(CS_SHAPES)
    cost = CS_COSTS.index(c["cost"]) if c["cost"] in CS_COSTS else -1
    return (shape, c.get("sub") or "", c["n"] or 0, cost, cell)


def cost_sweep_ideal(cell, workers, seq_ns, hw):
    """(ideal ns/item, how) for a cell at `workers`, from the sequential loop's ns/item of the
    same cell in the same run (seq_ns: all of an item's work on one thread) and the cores.

    CPU cells: the total work over the usable cores (min(W, cores)), or the slowest stage,
    whichever is larger: linear3 max(seq / cores, seq / 3); parmap and heavytail seq / cores;
    fewN ceil(N / cores) * seq / N (N items of equal cost, in rounds of `cores`).
    Sleep cells (the 1 ms is a sleep, which holds no core): the sleeps alone, nominal:
    linear3 1 ms per item (its slowest stage); parmap 1 ms / W; fewN ceil(N / W) * 1 ms / N.
    trickle: the source's period, 1 ms per item.  None when a CPU cell has no sequential row."""
    c = parse_cell(cell)
    w = max(1, int(workers or 1))
    cores = max(1, min(w, hw or 1))
    if c["shape"] == "trickle":
        return 1e6, "period"
    if c["sleep"]:
        step = c["cost_ns"]
        if c["shape"] == "linear":
            return step, "1 stage's sleep"
        if c["shape"] == "parmap":
            return step / w, "sleep / W"
        if c["shape"] == "few":
            n = c["n"]
            return -(-n // w) * step / n, "ceil(N/W) sleeps / N"
        return None, ""
    if seq_ns is None:
        return None, "no sequential row"
    if c["shape"] == "linear":
        return max(seq_ns / cores, seq_ns / c["stages"]), "max(work/cores, stage)"
    if c["shape"] in ("parmap", "heavytail"):
        return seq_ns / cores, "work/cores"
    if c["shape"] == "few":
        n = c["n"]
        return -(-n // cores) * seq_ns / n, "ceil(N/cores) items / N"
    return None, ""


def fmt_time(ns):
    """A time per item in its unit: 812 ns, 10.3 µs, 1.05 ms."""
    if ns is None:
        return "—"
    for unit, scale in (("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            v = ns / scale
            return f"{v:.3g} {unit}" if v < 1000 else f"{v:,.0f} {unit}"
    return f"{ns:.3g} ns"


def variant_of(config, key):
    """What a config says besides its cell and canonical workers: the layout or variant."""
    words = [w for w in config.split("_")
             if not re.fullmatch(r"workers\d+", w) and not CELL_SHAPE_RE.fullmatch(w)
             and not CELL_COST_RE.fullmatch(w)]
    return "_".join(words) or "—"



def impl_rank(impl):
    if is_rill(impl):
        return (0, impl)
    return (IMPL_ORDER.index(impl) if impl in IMPL_ORDER else len(IMPL_ORDER), impl)


def figure_of(row):
    """(value, figure name, unit) of a raw row; value None for an error row."""
    if row.get("error_occurred"):
        return None, "error", ""
    if "bytes_per_goroutine" in row:
        return float(row["bytes_per_goroutine"]), "bytes_per_goroutine", "B/goroutine"
    if "ns_per_item" in row:
        return float(row["ns_per_item"]), "ns_per_item", "ns/item"
    scale = TIME_UNIT_NS.get(row.get("time_unit", "ns"), 1.0)
    return float(row.get("real_time", 0.0)) * scale, "real_time", "ns/op"


def cpu_fields(line):
    f = [int(x) for x in line.split()[1:]]
    f += [0] * (10 - len(f))
    total = sum(f[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    idle = f[3] + f[4]
    return total, total - idle, f[7]


def read_runs(path, ncores):
    runs = []
    if not path or not os.path.exists(path):
        return runs
    with open(path) as fh:
        for line in fh:
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 11:
                continue
            rep, kind, unit, fname, t0, t1, rc, own0, own1, stat0, stat1 = cols[:11]
            tot0, busy0, steal0 = cpu_fields(stat0)
            tot1, busy1, steal1 = cpu_fields(stat1)
            total = max(1, tot1 - tot0)
            own = int(own1) - int(own0)
            busy = busy1 - busy0
            runs.append({
                "rep": int(rep), "kind": kind, "unit": unit, "file": fname,
                "seconds": float(t1) - float(t0), "exit_code": int(rc),
                "total_ticks": total, "busy_ticks": busy, "own_ticks": own,
                "steal_ticks": steal1 - steal0,
                # Not clipped: a small negative share is the accounting's own noise (the
                # benchmark's ticks and the machine's are read at slightly different moments).
                "others_share": (busy - own) / total,
            })
    return runs


def salvage_json(path):
    """The complete rows of a Google Benchmark JSON file cut short (a process that crashed
    mid-run): {'context': ..., 'benchmarks': [...]}, or None."""
    try:
        with open(path, errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    dec = json.JSONDecoder()
    ctx = {}
    m = re.search(r'"context"\s*:\s*', text)
    if m:
        try:
            ctx, _ = dec.raw_decode(text, m.end())
        except json.JSONDecodeError:
            ctx = {}
    m = re.search(r'"benchmarks"\s*:\s*\[', text)
    if not m:
        return None
    rows, i = [], m.end()
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        try:
            obj, i = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            break
        if isinstance(obj, dict):
            rows.append(obj)
    return {"context": ctx, "benchmarks": rows} if rows else None


def load_rows(raw_dir, runs):
    by_file = {r["file"]: r for r in runs}
    rows, contexts, problems = [], {}, []
    for path in sorted(glob.glob(os.path.join(raw_dir, "*.json"))):
        fname = os.path.basename(path)
        m = re.fullmatch(r"(\d+)__([a-z_]+)__(.+)\.json", fname)
        rep, kind = (int(m.group(1)), m.group(2)) if m else (0, "compare")
        run = by_file.get(fname, {})
        try:
            with open(path) as fh:
                data = json.load(fh)
        except (OSError, json.JSONDecodeError) as e:
            data = salvage_json(path)
            problems.append(f"{fname}: no valid JSON ({e.__class__.__name__}); "
                            f"exit code {run.get('exit_code', '?')}"
                            + (f"; kept the {len(data['benchmarks'])} rows it completed"
                               if data else ""))
            if not data:
                continue
        if run.get("exit_code"):
            problems.append(f"{fname}: exit code {run['exit_code']}")
        ctx = data.get("context", {})
        contexts.setdefault(kind, ctx)
        for b in data.get("benchmarks", []):
            if b.get("run_type") == "aggregate":
                continue
            full, workload, impl, config = split_name(b.get("name", "?"), kind)
            value, figure, unit = figure_of(b)
            rows.append({
                "name": full, "workload": workload, "impl": impl, "config": config,
                "rep": rep, "source": kind, "value": value, "figure": figure, "unit": unit,
                "others_share": run.get("others_share"), "raw": b,
            })
            if value is None:
                problems.append(f"{full} (rep {rep}): {b.get('error_message', 'error')}")
    return rows, contexts, problems


def summarize(rows):
    names = {}
    for r in rows:
        names.setdefault(r["name"], []).append(r)
    out = []
    for name, rs in names.items():
        vals = [r["value"] for r in rs if r["value"] is not None]
        first = rs[0]
        s = {
            "name": name, "workload": first["workload"], "impl": first["impl"],
            "config": first["config"], "key": config_key(first["config"]),
            "figure": next((r["figure"] for r in rs if r["value"] is not None), "error"),
            "unit": next((r["unit"] for r in rs if r["value"] is not None), ""),
            "reps": len(vals), "errors": len(rs) - len(vals), "values": vals,
            "median": statistics.median(vals) if vals else None,
            "min": min(vals) if vals else None, "max": max(vals) if vals else None,
            "others_max": max((r["others_share"] or 0.0) for r in rs),
        }
        for c in EXTRA_COUNTERS:
            cv = [float(r["raw"][c]) for r in rs if c in r["raw"] and r["value"] is not None]
            if cv and c != "bytes_per_goroutine":
                s[c] = statistics.median(cv)
        out.append(s)
    return out


def fmt_num(v):
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def ordered_workloads(summary):
    seen = {s["workload"] for s in summary}
    return [w for w in WORKLOAD_ORDER if w in seen] + sorted(seen - set(WORKLOAD_ORDER))


def machine_info(args):
    info = {"host": socket.gethostname(), "cores": os.cpu_count(), "kernel": platform.release()}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal"):
                    info["mem_total_kib"] = int(line.split()[1])
                    break
    except OSError:
        pass

    def first_line(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            return None

    info["cxx"] = first_line(["g++", "--version"])
    info["go"] = first_line(["go", "version"])
    info["git_commit"] = args.commit or first_line(["git", "rev-parse", "HEAD"])
    dirty = None if args.commit else first_line(["git", "status", "--porcelain",
                                                 "--untracked-files=no"])
    info["git_dirty"] = bool(dirty)
    return info


def load_summary(runs, ncores):
    total = sum(r["total_ticks"] for r in runs)
    if not total:
        return {"others_share": None, "delivered": None}
    busy = sum(r["busy_ticks"] for r in runs)
    own = sum(r["own_ticks"] for r in runs)
    steal = sum(r["steal_ticks"] for r in runs)
    others = (busy - own) / total
    # Per repetition: others' share and steal, marked when either passes its limit.
    per_rep = {}
    for r in runs:
        t = per_rep.setdefault(r["rep"], {"total": 0, "busy": 0, "own": 0, "steal": 0})
        t["total"] += r["total_ticks"]
        t["busy"] += r["busy_ticks"]
        t["own"] += r["own_ticks"]
        t["steal"] += r["steal_ticks"]
    reps = []
    for rep in sorted(per_rep):
        t = per_rep[rep]
        tot = max(1, t["total"])
        o, st = (t["busy"] - t["own"]) / tot, t["steal"] / tot
        reps.append({"rep": rep, "others_share": o, "steal_share": st,
                     "marked": o > BUSY_LIMIT or st > STEAL_LIMIT})
    return {
        "per_rep": reps,
        "samples": len(runs),
        "others_share": others,
        "others_cores": others * ncores,
        "others_share_max_run": max(r["others_share"] for r in runs),
        "steal_share": steal / total,
        "own_share": own / total,
        "delivered": others <= BUSY_LIMIT,
        "verdict": "ok" if others <= BUSY_LIMIT else "machine did not deliver its cores",
    }


def cost_sweep_cells(rows, hw):
    """Per (cell, workers) of cost_sweep, trickle cells included: rill's no-hints row, its best
    rill_tuned row, each peer's best row, the sequential row, and the ideal."""
    groups = {}
    for s in rows:
        k = s["key"]
        if "cell" in k and "workers" in k and s["impl"] != "sequential":
            groups.setdefault((k["cell"], k["workers"]), []).append(s)
    seq = {s["key"].get("cell"): s for s in rows
           if s["impl"] == "sequential" and s["median"] and s["figure"] == "ns_per_item"}
    out = []
    for cell, w in sorted(groups, key=lambda g: (cell_rank(g[0]), int(g[1]))):
        ok = [s for s in groups[(cell, w)] if s["median"] and s["figure"] == "ns_per_item"]

        def best(impl):
            cands = [s for s in ok if s["impl"] == impl]
            return min(cands, key=lambda s: s["median"]) if cands else None

        sq = seq.get(cell)
        ideal, how = cost_sweep_ideal(cell, w, sq["median"] if sq else None, hw)
        out.append({"cell": cell, "workers": w, "parsed": parse_cell(cell), "rill": best("rill"),
                    "tuned": best("rill_tuned"), "peers": {p: best(p) for p in CS_PEERS},
                    "seq": sq, "ideal": ideal, "how": how, "rows": groups[(cell, w)]})
    return out


def ratio(a, b):
    return a / b if a and b else None


def verdict(a, b):
    """rill row a against peer row b: a tie when the spreads (min..max over the repetitions)
    of the two overlap, else which is faster."""
    if not a or not b or a.get("min") is None or b.get("min") is None:
        return "—"
    if a["max"] >= b["min"] and b["max"] >= a["min"]:
        return "tie"
    return "rill faster" if a["median"] < b["median"] else "peer faster"


def fmt_ratio(r, limit=None):
    if r is None:
        return "—"
    mark = "" if limit is None else (" ✓" if r <= limit else " ✗")
    return f"{r:.2f}{mark}"


IDEAL_TARGET = 1.15  # rill (no hints) / ideal, in cells of 10 µs and up
TUNED_TARGET = 1.10  # rill (no hints) / rill's best hand layout, in every cell
P99_TARGET_US = 1000.0  # trickle p99 latency


def cost_sweep_markdown(rows, hw):
    cells = cost_sweep_cells(rows, hw)
    L = ["", "### cost_sweep: per cell", "",
         "Time per item (median).  *ideal*: the cell's work over the usable cores (min(W, "
         f"{hw} cores)), or its slowest stage, whichever is larger, from the sequential loop of "
         "this run (CPU cells); the sleeps alone, nominal 1 ms, for sleep cells (a sleep holds "
         "no core).  *rill*: no hints; *rill tuned*: the best of the cell's hand layouts "
         "(`rill_tuned` rows).  Each peer: its best variant.  Targets: rill/ideal <= "
         f"{IDEAL_TARGET} in cells of 10 µs and up, rill/tuned <= {TUNED_TARGET} in every cell "
         "(✓/✗).", "",
         "| cell | W | ideal | rill | rill tuned (layout) | go | tbb_flow | tbb_pipeline | "
         "boost_fiber | sequential | rill/ideal | rill/tuned | rill/best peer |",
         "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        p = c["parsed"]
        if p["shape"] == "trickle":
            continue
        rill, tuned = c["rill"], c["tuned"]
        rv = rill["median"] if rill else None
        peers = [b for b in c["peers"].values() if b]
        best_peer = min(peers, key=lambda s: s["median"]) if peers else None
        big = (p["cost_ns"] or 0) >= 1e4 or p["shape"] in ("heavytail",)
        tuned_text = (f"{fmt_time(tuned['median'])} ({variant_of(tuned['config'], tuned['key'])})"
                      if tuned else "—")
        line = (f"| {c['cell']} | {c['workers']} | {fmt_time(c['ideal'])} | "
                f"**{fmt_time(rv)}** | {tuned_text} |")
        for peer in CS_PEERS:
            b = c["peers"][peer]
            line += f" {fmt_time(b['median']) if b else '—'} |"
        line += (f" {fmt_time(c['seq']['median']) if c['seq'] else '—'} |"
                 f" {fmt_ratio(ratio(rv, c['ideal']), IDEAL_TARGET if big else None)} |"
                 f" {fmt_ratio(ratio(rv, tuned['median'] if tuned else None), TUNED_TARGET)} |"
                 f" {fmt_ratio(ratio(rv, best_peer['median'] if best_peer else None))}"
                 f"{' (' + best_peer['impl'] + ', ' + verdict(rill, best_peer) + ')' if best_peer and rv else ''} |")
        L.append(line)
    trickle = [c for c in cells if c["parsed"]["shape"] == "trickle"]
    if trickle:
        L += ["", "### cost_sweep: trickle latency", "",
              "A source that sleeps 1 ms, then emits an item stamped with the time; latency = "
              "when the sink gets it - that stamp, over every item (µs, median of the "
              f"repetitions' percentiles).  Target: p99 <= {P99_TARGET_US:.0f} µs for rill, "
              "through 3 unfused stages (`rill_tuned` `split`: `.fuse = false`, nothing else) "
              "and through a par_map (`rill`, no hints).", "",
              "| cell | W | implementation | layout / variant | p50 µs | p99 µs | max µs | "
              "time/item | reps |",
              "|---|---:|---|---|---:|---:|---:|---:|---:|"]
        seq_rows = {s["key"].get("cell"): s for s in rows if s["impl"] == "sequential"}
        for c in trickle:
            rs = sorted(c["rows"], key=lambda s: (impl_rank(s["impl"]), s["config"]))
            if c["cell"] in seq_rows:
                rs.append(seq_rows[c["cell"]])
            for s in rs:
                p99 = s.get("p99_us")
                mark = ""
                if is_rill(s["impl"]) and p99 is not None:
                    mark = " ✓" if p99 <= P99_TARGET_US else " ✗"
                impl = f"**{s['impl']}**" if is_rill(s["impl"]) else s["impl"]
                L.append(f"| {c['cell']} | {c['workers']} | {impl} | "
                         f"{variant_of(s['config'], s['key'])} | {fmt_num(s.get('p50_us'))} | "
                         f"{fmt_num(p99)}{mark} | {fmt_num(s.get('max_us'))} | "
                         f"{fmt_time(s['median'])} | {s['reps']}"
                         f"{' (' + str(s['errors']) + ' failed)' if s['errors'] else ''} |")
    return L


def write_markdown(path, meta, summary, problems):
    L = []
    m, ld = meta["machine"], meta["load"]
    title_mode = "quick" if meta["quick"] else "full"
    L.append(f"# rill side by side: {meta['date']} on {m['host']} ({title_mode} run)")
    L.append("")
    L.append(f"- machine: {m.get('cpu_model', '?')}, {m['cores']} cores, "
             f"{m.get('mem_total_kib', 0) / 1048576:.1f} GiB, Linux {m['kernel']}")
    L.append(f"- compilers: {m.get('cxx') or '?'}; {m.get('go') or '?'}")
    L.append(f"- commit {str(m.get('git_commit') or '?')[:12]}"
             f"{' (with uncommitted changes)' if m.get('git_dirty') else ''}; "
             f"{meta['reps']} repetitions, interleaved; medians below"
             + (f"; filter `{meta['filter']}`" if meta.get("filter") else ""))
    L.append(f"- work loop: {meta.get('work_iters')} iterations per ~1 µs item (C++), "
             f"{meta.get('go_work_iters')} (Go)")
    if not meta["rill_built"]:
        L.append("- **rill was not built** (the top level did not build): peers only")
    if ld.get("others_share") is not None:
        flag = "" if ld["delivered"] else " — **machine did not deliver its cores**"
        L.append(f"- load: other processes used {100 * ld['others_share']:.1f}% of the cores on "
                 f"average ({ld['others_cores']:.2f} of {m['cores']}; worst run "
                 f"{100 * ld['others_share_max_run']:.0f}%), steal {100 * ld['steal_share']:.1f}%"
                 f"{flag}")
    L.append(f"- total time {meta.get('elapsed_s', '?')} s")
    if ld.get("per_rep"):
        L.append("- per repetition, others' share / steal (⚠: above "
                 f"{100 * BUSY_LIMIT:.0f}% / {100 * STEAL_LIMIT:.0f}%): " + ", ".join(
                     f"{r['rep']}: {100 * r['others_share']:.1f}% / {100 * r['steal_share']:.1f}%"
                     + (" ⚠" if r["marked"] else "") for r in ld["per_rep"]))
    L.append("")
    L.append("Figures: ns/item (wall time / items) unless the column says otherwise; "
             "spread = (max − min) / median over the repetitions; others = the largest share "
             "of the cores other processes took during one of its runs.  A config's canonical "
             "tokens (layout, cap, workers, ordered) group the rows; `(any)` rows have none of "
             "them and compare with every group.  Layouts (benchmarks/compare/common/work.hpp): "
             "`fused` (no channel: nested calls in one thread of control), `per item` (one item "
             "per channel operation), `batch B` (B items per operation, by hand or pinned), "
             "`adaptive` (rill's links with no hints).  rill/peer ratios compare rows of the "
             "same layout; the *best* tables compare each side's fastest row, layout named.")
    for workload in ordered_workloads(summary):
        rows = [s for s in summary if s["workload"] == workload]
        rows.sort(key=lambda s: (key_sort(s["key"]), impl_rank(s["impl"]), s["median"] or 0))
        extras = [c for c in ("peak_in_flight", "peak_rss_delta_kib", "p50_us", "p99_us")
                  if any(c in s for s in rows)]
        L.append("")
        L.append(f"## {workload}")
        L.append("")
        head = "| group | implementation | config | median | unit | spread | reps |"
        sep = "|---|---|---|---:|---|---:|---:|"
        for c in extras:
            head += {"peak_in_flight": " peak in flight |", "peak_rss_delta_kib": " peak RSS Δ (MiB) |",
                     "p50_us": " p50 µs |", "p99_us": " p99 µs |"}[c]
            sep += "---:|"
        head += " others |"
        sep += "---:|"
        L += [head, sep]
        for s in rows:
            spread = ((s["max"] - s["min"]) / s["median"] * 100) if s["median"] else None
            impl = f"**{s['impl']}**" if is_rill(s["impl"]) else s["impl"]
            spread_text = "—" if spread is None else f"{spread:.0f}%"
            reps_text = str(s["reps"]) + (f" ({s['errors']} failed)" if s["errors"] else "")
            line = (f"| {key_label(s['key'], workload)} | {impl} | `{s['config']}` | "
                    f"{fmt_num(s['median'])} "
                    f"| {s['unit'] or 'error'} | {spread_text} | {reps_text} |")
            for c in extras:
                v = s.get(c)
                if c == "peak_rss_delta_kib" and v is not None:
                    v = v / 1024
                line += f" {fmt_num(v)} |"
            line += f" {100 * s['others_max']:.0f}% |"
            L.append(line)
        # rill / peer ratios: for each rill row and each peer, the peer's best compatible row.
        rill_rows = [s for s in rows if is_rill(s["impl"]) and s["median"] and
                     s["figure"] == "ns_per_item"]
        if workload == "micro":
            continue
        if workload == "cost_sweep":
            L += cost_sweep_markdown(rows, meta.get("hw") or m["cores"] or 1)
            continue
        L.append("")
        if not rill_rows:
            L.append("No rill rows for this workload (its rill.cpp is not built yet).")
            continue
        L.append(f"### {workload}: rill / peer (below 1: rill is faster)")
        L.append("")
        L.append("*verdict*: a tie when the two rows' spreads (min..max over the repetitions) "
                 "overlap; otherwise the faster one.")
        L.append("")
        L.append("| rill | peer | peer's best comparable config | rill ns/item | peer ns/item | "
                 "rill/peer | verdict |")
        L.append("|---|---|---|---:|---:|---:|---|")
        peers = sorted({s["impl"] for s in rows if not is_rill(s["impl"])}, key=impl_rank)
        for r in rill_rows:
            for p in peers:
                line = peer_ratio_row(r, p, rows, r["key"])
                if line:
                    L.append("| " + line)
        L += best_of_threads_markdown(workload, rows, rill_rows, peers)
    L.append("")
    L += layout_matrix_markdown(summary)
    if problems:
        L.append("")
        L.append("## Problems")
        L.append("")
        for p in problems[:200]:
            L.append(f"- {p}")
    with open(path, "w") as fh:
        fh.write("\n".join(L) + "\n")


def layout_matrix_markdown(summary):
    """The summary that benchmarks/README.md copies: per workload, a line per rill row of a
    channel workload (its layout, capacity, worker count; rill_chan: the pipeline by hand), and
    per peer its fastest row of the same group: ns/item, and rill/peer with *tie* where the
    two spreads overlap."""
    L = ["## Summary by layout", "",
         "Per workload, one line per rill row (group: layout, capacity, workers); each peer "
         "column is that peer's fastest row of the same group: its ns/item and rill/peer "
         "(below 1: rill is faster; *tie*: the spreads over the repetitions overlap). "
         "`sequential` is the plain loop, in every group.  —: the peer has no such layout."]
    for workload in ordered_workloads(summary):
        if workload in ("micro", "cost_sweep"):
            continue
        rows = [s for s in summary if s["workload"] == workload and s["median"] and
                s["figure"] == "ns_per_item"]
        mine = sorted((s for s in rows if is_rill(s["impl"])),
                      key=lambda s: (key_sort(s["key"]), impl_rank(s["impl"])))
        if not mine:
            continue
        peers = sorted({s["impl"] for s in rows if not is_rill(s["impl"])}, key=impl_rank)
        L += ["", f"### {workload}", "",
              "| group | rill | " + " | ".join(peers) + " |",
              "|---|---:|" + "---:|" * len(peers)]
        for r in mine:
            cells = []
            for p in peers:
                cands = [s for s in rows if s["impl"] == p and compatible(r["key"], s["key"])]
                if not cands:
                    cells.append("—")
                    continue
                best = min(cands, key=lambda s: s["median"])
                tie = verdict(r, best) == "tie"
                cells.append(f"{fmt_num(best['median'])} ({r['median'] / best['median']:.2f}"
                             f"{', tie' if tie else ''})")
            who = "" if r["impl"] == "rill" else f"{r['impl']}: "
            L.append(f"| {who}{key_label(r['key'], workload)} | {fmt_num(r['median'])} | "
                     + " | ".join(cells)
                     + " |")
    return L


def best_of_threads_markdown(workload, rows, rill_rows, peers):
    """Each side at its best: per group of the other tokens (order), rill's fastest row
    against each peer's fastest, whatever layout and worker count each used (a peer that
    loses time to a second thread is compared at one; fused next to channels is labelled)."""
    def group_of(key):
        return {k: v for k, v in key.items() if k not in ("workers", "layout", "cap")}
    groups = []
    for r in rill_rows:
        g = group_of(r["key"])
        if g and g not in groups:
            groups.append(g)
    if not groups:
        groups = [{}]
    L = ["", f"### {workload}: each at its best layout and thread count",
         "",
         "| group | rill's best | peer | peer's best | rill ns/item | peer ns/item | rill/peer "
         "| verdict |",
         "|---|---|---|---|---:|---:|---:|---|"]
    for g in groups:
        mine = [r for r in rill_rows if compatible(g, r["key"])]
        if not mine:
            continue
        r = min(mine, key=lambda s: s["median"])
        for p in peers:
            line = peer_ratio_row(r, p, rows, g)
            if line:
                L.append(f"| {key_label(g)} | " + line)
    return L


def peer_ratio_row(r, p, rows, key):
    """The cells of a rill/peer row, from rill's row r and peer p's fastest row compatible
    with `key` (None when p has none): the rows, their ns/item, the ratio, the verdict."""
    cands = [s for s in rows if s["impl"] == p and s["median"] and
             s["figure"] == "ns_per_item" and compatible(key, s["key"])]
    if not cands:
        return None
    best = min(cands, key=lambda s: s["median"])
    return (f"`{r['impl']}/{r['config']}` | {p} | `{best['config']}` | "
            f"{fmt_num(r['median'])} | {fmt_num(best['median'])} | "
            f"{r['median'] / best['median']:.3g} | {verdict(r, best)} |")


def gp_quote(text):
    return text.replace("\\", "").replace('"', "").replace("'", "")


def bar_panel(g, workload, bars):
    """A panel of one bar per implementation and layout (its best config), log scale."""
    vals = [b["median"] for b in bars]
    lo, hi = min(vals) / 4, max(vals) * 4
    g += ["set style data boxes", "set boxwidth 0.7", "set logscale y",
          "set ylabel 'ns/item (log)'", "unset key",
          f"set title '{workload}'", f"set yrange [{lo:g}:{hi:g}]",
          f"set xrange [-0.6:{len(bars) - 0.4}]",
          "plot '-' using 0:2:3:xtic(1) with boxes lc rgb variable, "
          "'-' using 0:2:($2 >= 100 ? sprintf('%.0f', $2) : sprintf('%.3g', $2)) "
          "with labels offset 0,0.7 font ',8'"]
    for _ in range(2):
        for b in bars:
            label = f"{b['impl']}\\n{b['config']}".replace('"', "")
            color = IMPL_COLOR.get("rill" if is_rill(b["impl"]) else b["impl"], 0x8C564B)
            g.append(f"\"{label}\" {b['median']:.6g} {color}")
        g.append("e")


def cluster_panel(g, title, ylabel, groups, series, log=True, hline=None, ymax=None):
    """A clustered bar panel: one cluster per group (x), one bar per series; `groups` is a list of
    (label, {series: value}); missing values leave a gap."""
    g += ["set style data histogram", "set style histogram cluster gap 1", "set boxwidth 0.9",
          "set datafile missing '?'", "set key top left horizontal font ',8'",
          f"set title '{gp_quote(title)}'", f"set ylabel '{gp_quote(ylabel)}'", "set autoscale y",
          "set xrange [*:*]"]
    vals = [v for _, d in groups for v in d.values() if v]
    if log and vals:
        hi = max(vals) * 2.5 if ymax is None else min(max(vals) * 2.5, ymax)
        g += ["set logscale y", f"set yrange [{min(vals) / 1.6:g}:{hi:g}]"]
    else:
        g.append("unset logscale y")
    plots = []
    for k, (name, color) in enumerate(series):
        xt = ":xtic(1)" if k == 0 else ""
        plots.append(f"'-' using 2{xt} title '{name}' lc rgb '#{color:06X}'")
    if hline is not None:
        plots.append(f"{hline} with lines dt 2 lc rgb '#000000' title 'ideal'")
    g.append("plot " + ", ".join(plots))
    for name, _ in series:
        for label, d in groups:
            v = d.get(name)
            g.append(f"\"{gp_quote(label)}\" {v:.6g}" if v else f"\"{gp_quote(label)}\" ?")
        g.append("e")
    g += ["unset logscale y", "set style data boxes"]


CS_SERIES = [("rill", IMPL_COLOR["rill"]), ("rill tuned", 0xFF9896), ("go", IMPL_COLOR["go"]),
             ("boost_fiber", IMPL_COLOR["boost_fiber"]), ("tbb_flow", IMPL_COLOR["tbb_flow"]),
             ("tbb_pipeline", IMPL_COLOR["tbb_pipeline"])]


def cost_sweep_panels(summary, hw):
    """cost_sweep's two chart panels: time / ideal per cell, and trickle p99 per cell."""
    rows = [s for s in summary if s["workload"] == "cost_sweep"]
    if not rows:
        return []
    cells = cost_sweep_cells(rows, hw)
    ratios, latency = [], []
    for c in cells:
        label = f"{c['cell']} w{c['workers']}"
        picks = {"rill": c["rill"], "rill tuned": c["tuned"], **c["peers"]}
        if c["parsed"]["shape"] == "trickle":
            # Per series the lowest p99 of its rows; rill tuned on trickle_linear3: the split
            # layout (3 unfused stages, the target's case).
            p99 = {}
            for name, impl in (("rill", "rill"), ("rill tuned", "rill_tuned"),
                               *((p, p) for p in CS_PEERS)):
                cands = [s for s in c["rows"] if s["impl"] == impl and s.get("p99_us")]
                split = [s for s in cands if variant_of(s["config"], s["key"]) == "split"]
                if impl == "rill_tuned" and split:
                    cands = split
                if cands:
                    p99[name] = min(s["p99_us"] for s in cands)
            latency.append((label, p99))
        elif c["ideal"]:
            ratios.append((label, {name: pick["median"] / c["ideal"]
                                   for name, pick in picks.items() if pick}))
    panels = []
    if ratios:
        panels.append(("cost_sweep: median time / ideal per cell (1 = ideal; log, cut at 50x: "
                       "the 1 ns cells' ideal is the compiler's vectorized loop); rill tuned and "
                       "peers: their best layout or variant", "time / ideal", ratios, True, 1, 50))
    if latency:
        panels.append(("cost_sweep trickle: p99 latency, µs (rill tuned: 3 unfused stages "
                       "in trickle_linear3, its best layout in trickle_parmap; peers: their best)",
                       "p99 µs (log)", latency, True, None, None))
    return panels


def write_chart(path, meta, summary):
    """One panel per workload, one bar per implementation at its best config (log scale); then
    cost_sweep's panels, full width: time / ideal per cell, and trickle p99 latency."""
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        print("bench_report: gnuplot not found, no chart", file=sys.stderr)
        return False
    panels = []
    for workload in ordered_workloads(summary):
        if workload in ("micro", "cost_sweep"):
            continue
        # A bar per implementation and layout class (fused, per item, batched, adaptive), so
        # that a fused row stands next to the peers' fused forms, not their channels.
        best = {}
        for s in summary:
            if s["workload"] != workload or s["figure"] != "ns_per_item" or not s["median"]:
                continue
            k = (layout_rank(s["key"])[0], impl_rank(s["impl"]))
            if k not in best or s["median"] < best[k]["median"]:
                best[k] = s
        if best:
            panels.append((workload, [best[k] for k in sorted(best)]))
    cs_panels = cost_sweep_panels(summary, meta.get("hw") or meta["machine"]["cores"] or 1)
    if not panels and not cs_panels:
        return False
    cols = 2 if len(panels) > 1 else 1
    nrows = (len(panels) + cols - 1) // cols
    panel_h, cs_h = 560, 620
    width = 760 * 2 if cs_panels else 760 * cols
    height = panel_h * nrows + cs_h * len(cs_panels)
    m = meta["machine"]
    title = (f"rill side by side, {meta['date']}, {m.get('cpu_model', '?')} x{m['cores']}"
             f"{' (quick)' if meta['quick'] else ''}: median ns/item, best config per implementation and layout")
    if meta["load"].get("delivered") is False:
        title += "  [machine did not deliver its cores]"
    g = [f"set terminal pngcairo noenhanced size {width},{height} font 'Sans,9'",
         f"set output '{path}'",
         f"set multiplot title \"{gp_quote(title)}\"",
         "set grid ytics", "set style fill solid 0.85 border -1",
         "set xtics rotate by -35 left nomirror font ',8'", "set format y '%g'",
         "set bmargin 10", "set tmargin 3"]
    top = 1.0 - 30.0 / height  # room for the multiplot title
    ph, ch = panel_h / height, cs_h / height
    for k, (workload, bars) in enumerate(panels):
        r, c = divmod(k, cols)
        g += [f"set origin {c / cols:g},{top - (r + 1) * ph:g}", f"set size {1 / cols:g},{ph:g}"]
        bar_panel(g, workload, bars)
    for k, (ptitle, ylabel, groups, log, hline, ymax) in enumerate(cs_panels):
        y = top - nrows * ph - (k + 1) * ch
        g += [f"set origin 0,{max(0.0, y):g}", f"set size 1,{ch:g}"]
        cluster_panel(g, ptitle, ylabel, groups, CS_SERIES, log=log, hline=hline, ymax=ymax)
    g.append("unset multiplot")
    script = path[:-4] + ".gnuplot"
    with open(script, "w") as fh:
        fh.write("\n".join(g) + "\n")
    try:
        res = subprocess.run([gnuplot, script], capture_output=True, text=True, timeout=60)
    finally:
        os.remove(script)
    if res.returncode != 0:
        print(f"bench_report: gnuplot failed: {res.stderr.strip()}", file=sys.stderr)
        return False
    return True


def hardware_threads(contexts, ncores):
    """The benchmarks' hardware_concurrency (rill_compare's context), else this machine's."""
    try:
        return int(contexts.get("compare", {}).get("hardware_concurrency", ncores))
    except (TypeError, ValueError):
        return ncores


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--raw", required=True, help="folder of raw JSON files NNN__kind__unit.json")
    ap.add_argument("--runs", help="runs.tsv of scripts/bench (CPU samples)")
    ap.add_argument("--out", required=True, help="output prefix: writes PREFIX.{json,md,png}")
    ap.add_argument("--reps", type=int, default=0)
    ap.add_argument("--quick", type=int, default=0)
    ap.add_argument("--filter", default="")
    ap.add_argument("--rill-built", type=int, default=0)
    ap.add_argument("--work-iters", default=None)
    ap.add_argument("--go-work-iters", default=None)
    ap.add_argument("--compare-bin", default=None)
    ap.add_argument("--elapsed", type=int, default=None)
    ap.add_argument("--stderr", default=None, help="the benchmarks' stderr, kept in the JSON")
    ap.add_argument("--date", default=None, help="the run's date (default: now; to redo a report)")
    ap.add_argument("--commit", default=None, help="the run's commit (default: HEAD; to redo one)")
    args = ap.parse_args()

    machine = machine_info(args)
    ncores = machine["cores"] or 1
    runs = read_runs(args.runs, ncores)
    rows, contexts, problems = load_rows(args.raw, runs)
    summary = summarize(rows)
    meta = {
        "date": args.date or time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine,
        "load": load_summary(runs, ncores), "quick": bool(args.quick),
        "reps": args.reps or max((r["rep"] for r in rows), default=0), "filter": args.filter,
        "rill_built": bool(args.rill_built), "work_iters": args.work_iters,
        "go_work_iters": args.go_work_iters, "compare_bin": args.compare_bin,
        "elapsed_s": args.elapsed,
        "hw": hardware_threads(contexts, ncores),
    }
    stderr_text = ""
    if args.stderr and os.path.exists(args.stderr):
        with open(args.stderr, errors="replace") as fh:
            stderr_text = fh.read()[-20000:]
    out = {
        **meta,
        "contexts": contexts,
        "medians": {s["name"]: {k: s[k] for k in s if k not in ("values", "key", "name")}
                    for s in summary},
        "runs": runs,
        "benchmarks": [{k: r[k] for k in ("name", "rep", "source", "value", "figure",
                                           "others_share", "raw")} for r in rows],
        "problems": problems,
        "stderr_tail": stderr_text,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json", "w") as fh:
        json.dump(out, fh, indent=1)
    write_markdown(args.out + ".md", meta, summary, problems)
    chart = write_chart(args.out + ".png", meta, summary)
    ld = meta["load"]
    if ld.get("others_share") is not None and not ld["delivered"]:
        print(f"bench_report: other processes used {100 * ld['others_share']:.0f}% of the cores: "
              "machine did not deliver its cores", file=sys.stderr)
    print(f"bench_report: {len(summary)} names, {len(rows)} rows -> {args.out}.json, .md"
          f"{', .png' if chart else ''}", file=sys.stderr)


if __name__ == "__main__":
    main()
