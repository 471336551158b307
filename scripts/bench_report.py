#!/usr/bin/env python3
"""bench_report: merge the raw runs of scripts/bench into one report.

Reads every Google-Benchmark-shaped JSON file of a run (rill_compare, rill_micro, the Go
programs; several repetitions each) and the per-run CPU samples that scripts/bench recorded,
and writes, next to each other:

  <out>.json  machine, load, every raw row of every repetition, and per name the median
  <out>.md    median figure per name, grouped by workload and config, and rill/peer ratios
  <out>.png   per workload, one bar per implementation (its best config), log-scale ns/item

Names are <workload>/<impl>/<config>.  The config's canonical tokens, cap<C>, workers<W> and
ordered|unordered, say which rows are comparable; a row without one of them (the sequential
loop, tbb_pipeline's tokens<T>, the unbounded tbb_flow graphs) is comparable whatever that
token's value.  Rows of impl `rill` or `rill_*` are rill's.

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

WORKLOAD_ORDER = ["linear_trivial", "linear_heavy", "fan_out_fan_in", "backpressure", "micro"]
IMPL_ORDER = ["rill", "go", "boost_fiber", "tbb_flow", "tbb_pipeline", "std_threads", "sequential"]
IMPL_COLOR = {
    "rill": 0xD62728, "go": 0x17BECF, "boost_fiber": 0x2CA02C, "tbb_flow": 0x1F77B4,
    "tbb_pipeline": 0x393B79, "std_threads": 0x7F7F7F, "sequential": 0x000000,
}
EXTRA_COUNTERS = ["peak_in_flight", "peak_rss_delta_kib", "bytes_per_goroutine"]
BUSY_LIMIT = 0.10  # others' share of all cores above which the machine "did not deliver"
TIME_UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def is_rill(impl):
    return impl == "rill" or impl.startswith("rill_")


def split_name(name, kind):
    """Returns (full name, workload, impl, config) without Google Benchmark's suffixes."""
    parts = [p for p in name.split("/")
             if ":" not in p and p not in ("real_time", "manual_time", "process_time")]
    if kind == "rill_micro" and not (len(parts) >= 3 and parts[0] == "micro"):
        parts = ["micro", "rill", "/".join(parts)]
    while len(parts) < 3:
        parts.append("-")
    return "/".join(parts), parts[0], parts[1], "/".join(parts[2:])


def config_key(config):
    """The canonical tokens of a config: {'cap': '64', 'workers': '2', 'order': 'ordered'}."""
    key = {}
    for token in re.split(r"[_/]", config):
        m = re.fullmatch(r"(cap|workers)(\d+)", token)
        if m:
            key[m.group(1)] = m.group(2)
        elif token in ("ordered", "unordered"):
            key["order"] = token
    return key


def compatible(a, b):
    return all(a[k] == b[k] for k in a.keys() & b.keys())


def key_label(key):
    parts = [f"cap{key['cap']}" if "cap" in key else None,
             f"workers{key['workers']}" if "workers" in key else None, key.get("order")]
    parts = [p for p in parts if p]
    return " ".join(parts) if parts else "(any)"


def key_sort(key):
    return (int(key.get("cap", -1)), int(key.get("workers", -1)), key.get("order", ""))


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
                "others_share": max(0.0, (busy - own) / total),
            })
    return runs


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
            problems.append(f"{fname}: no valid JSON ({e.__class__.__name__}); "
                            f"exit code {run.get('exit_code', '?')}")
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
    info["git_commit"] = first_line(["git", "rev-parse", "HEAD"])
    dirty = first_line(["git", "status", "--porcelain", "--untracked-files=no"])
    info["git_dirty"] = bool(dirty)
    return info


def load_summary(runs, ncores):
    total = sum(r["total_ticks"] for r in runs)
    if not total:
        return {"others_share": None, "delivered": None}
    busy = sum(r["busy_ticks"] for r in runs)
    own = sum(r["own_ticks"] for r in runs)
    steal = sum(r["steal_ticks"] for r in runs)
    others = max(0.0, (busy - own) / total)
    return {
        "samples": len(runs),
        "others_share": others,
        "others_cores": others * ncores,
        "others_share_max_run": max(r["others_share"] for r in runs),
        "steal_share": steal / total,
        "own_share": own / total,
        "delivered": others <= BUSY_LIMIT,
        "verdict": "ok" if others <= BUSY_LIMIT else "machine did not deliver its cores",
    }


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
    L.append("")
    L.append("Figures: ns/item (wall time / items) unless the column says otherwise; "
             "spread = (max − min) / median over the repetitions; others = the largest share "
             "of the cores other processes took during one of its runs.  A config's canonical "
             "tokens (cap, workers, ordered) group the rows; `(any)` rows have none of them and "
             "compare with every group.")
    for workload in ordered_workloads(summary):
        rows = [s for s in summary if s["workload"] == workload]
        rows.sort(key=lambda s: (key_sort(s["key"]), impl_rank(s["impl"]), s["median"] or 0))
        extras = [c for c in ("peak_in_flight", "peak_rss_delta_kib") if any(c in s for s in rows)]
        L.append("")
        L.append(f"## {workload}")
        L.append("")
        head = "| group | implementation | config | median | unit | spread | reps |"
        sep = "|---|---|---|---:|---|---:|---:|"
        for c in extras:
            head += " peak in flight |" if c == "peak_in_flight" else " peak RSS Δ (MiB) |"
            sep += "---:|"
        head += " others |"
        sep += "---:|"
        L += [head, sep]
        for s in rows:
            spread = ((s["max"] - s["min"]) / s["median"] * 100) if s["median"] else None
            impl = f"**{s['impl']}**" if is_rill(s["impl"]) else s["impl"]
            spread_text = "—" if spread is None else f"{spread:.0f}%"
            reps_text = str(s["reps"]) + (f" ({s['errors']} failed)" if s["errors"] else "")
            line = (f"| {key_label(s['key'])} | {impl} | `{s['config']}` | {fmt_num(s['median'])} "
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
        L.append("")
        if not rill_rows:
            L.append("No rill rows for this workload (its rill.cpp is not built yet).")
            continue
        L.append(f"### {workload}: rill / peer (below 1: rill is faster)")
        L.append("")
        L.append("| rill | peer | peer's best comparable config | rill ns/item | peer ns/item | rill/peer |")
        L.append("|---|---|---|---:|---:|---:|")
        peers = sorted({s["impl"] for s in rows if not is_rill(s["impl"])}, key=impl_rank)
        for r in rill_rows:
            for p in peers:
                cands = [s for s in rows if s["impl"] == p and s["median"] and
                         s["figure"] == "ns_per_item" and compatible(r["key"], s["key"])]
                if not cands:
                    continue
                best = min(cands, key=lambda s: s["median"])
                L.append(f"| `{r['impl']}/{r['config']}` | {p} | `{best['config']}` | "
                         f"{fmt_num(r['median'])} | {fmt_num(best['median'])} | "
                         f"{r['median'] / best['median']:.3g} |")
    if problems:
        L.append("")
        L.append("## Problems")
        L.append("")
        for p in problems[:200]:
            L.append(f"- {p}")
    with open(path, "w") as fh:
        fh.write("\n".join(L) + "\n")


def write_chart(path, meta, summary):
    """One panel per workload, one bar per implementation at its best config; log scale."""
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        print("bench_report: gnuplot not found, no chart", file=sys.stderr)
        return False
    panels = []
    for workload in ordered_workloads(summary):
        if workload == "micro":
            continue
        best = {}
        for s in summary:
            if s["workload"] != workload or s["figure"] != "ns_per_item" or not s["median"]:
                continue
            if s["impl"] not in best or s["median"] < best[s["impl"]]["median"]:
                best[s["impl"]] = s
        if best:
            panels.append((workload, sorted(best.values(), key=lambda s: impl_rank(s["impl"]))))
    if not panels:
        return False
    cols = 2 if len(panels) > 1 else 1
    nrows = (len(panels) + cols - 1) // cols
    m = meta["machine"]
    title = (f"rill side by side, {meta['date']}, {m.get('cpu_model', '?')} x{m['cores']}"
             f"{' (quick)' if meta['quick'] else ''}: median ns/item, best config per implementation")
    if meta["load"].get("delivered") is False:
        title += "  [machine did not deliver its cores]"
    g = [f"set terminal pngcairo noenhanced size {760 * cols},{560 * nrows} font 'Sans,9'",
         f"set output '{path}'",
         f"set multiplot layout {nrows},{cols} title \"{title}\"",
         "set logscale y", "set grid ytics", "set style fill solid 0.85 border -1",
         "set boxwidth 0.7", "set xtics rotate by -35 left nomirror font ',8'",
         "set ylabel 'ns/item (log)'", "set format y '%g'", "unset key",
         "set bmargin 10"]
    for workload, bars in panels:
        vals = [b["median"] for b in bars]
        lo, hi = min(vals) / 4, max(vals) * 4
        g.append(f"set title '{workload}'")
        g.append(f"set yrange [{lo:g}:{hi:g}]")
        g.append(f"set xrange [-0.6:{len(bars) - 0.4}]")
        g.append("plot '-' using 0:2:3:xtic(1) with boxes lc rgb variable, "
                 "'-' using 0:2:($2 >= 100 ? sprintf('%.0f', $2) : sprintf('%.3g', $2)) "
                 "with labels offset 0,0.7 font ',8'")
        for _ in range(2):
            for b in bars:
                label = f"{b['impl']}\\n{b['config']}".replace('"', "")
                color = IMPL_COLOR.get("rill" if is_rill(b["impl"]) else b["impl"], 0x8C564B)
                g.append(f"\"{label}\" {b['median']:.6g} {color}")
            g.append("e")
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
    args = ap.parse_args()

    machine = machine_info(args)
    ncores = machine["cores"] or 1
    runs = read_runs(args.runs, ncores)
    rows, contexts, problems = load_rows(args.raw, runs)
    summary = summarize(rows)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine,
        "load": load_summary(runs, ncores), "quick": bool(args.quick),
        "reps": args.reps or max((r["rep"] for r in rows), default=0), "filter": args.filter,
        "rill_built": bool(args.rill_built), "work_iters": args.work_iters,
        "go_work_iters": args.go_work_iters, "compare_bin": args.compare_bin,
        "elapsed_s": args.elapsed,
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
