#!/usr/bin/python3
"""Prints the ring benchmarks' medians as Markdown tables, with ratios against the baselines that
ran in the same process and the issue's goals. Usage: report.py <dir with producer.json, ingest.json>

Times are median CPU time per operation over the repetitions (the machine is shared: wall time
includes other processes' turns); manual-time benchmarks (first writes) use their timed interval.
"cv" is the coefficient of variation of the CPU time over the repetitions: the noise to expect.
"""
import json
import os
import sys


def load(path):
    """run_name -> median aggregate entry (or the error entry)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}  # not run (or filtered out): the tables say "not run"
    out = {}
    for b in data.get("benchmarks", []):
        name = b.get("run_name", b["name"])
        if b.get("error_occurred"):
            out[name] = {"error": b.get("error_message", "error")}
        elif b.get("run_type") == "aggregate" and b.get("aggregate_name") == "median":
            out.setdefault(name, {}).update(b)
        elif b.get("run_type") == "aggregate" and b.get("aggregate_name") == "cv":
            # Coefficient of variation of the CPU time over the repetitions (a fraction).
            out.setdefault(name, {})["cv"] = b.get("cpu_time")
        elif b.get("run_type") == "iteration" and name not in out:
            out[name] = b  # a run without repetitions
    return out


SCALE = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def ns(entry, field="cpu_time"):
    if not entry or "error" in entry:
        return None
    return entry[field] * SCALE[entry.get("time_unit", "ns")]


def fmt_ns(v):
    if v is None:
        return "n/a"
    if v >= 1e6:
        return f"{v / 1e6:.2f} ms"
    if v >= 1e3:
        return f"{v / 1e3:.2f} us"
    return f"{v:.1f} ns"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt_ratio(r, digits=2):
    return "n/a" if r is None else f"{r:.{digits}f}x"


def verdict(ok):
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def note(entry, per_accepted=False):
    if not entry:
        return "not run"
    if "error" in entry:
        return "error: " + entry["error"]
    parts = []
    if entry.get("cv") is not None:
        parts.append(f"cv {entry['cv'] * 100:.0f}%")
    for key, label in (("refused_share", "refused"), ("written_share", "kept"),
                       ("sampled_out_share", "sampled out")):
        if key in entry:
            parts.append(f"{label} {entry[key] * 100:.1f}%")
    if per_accepted and entry.get("refused_share", 1) < 1:
        per_accepted = ns(entry) / (1 - entry["refused_share"])
        parts.append(f"{fmt_ns(per_accepted)} of CPU per accepted message")
    return ", ".join(parts)


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "."
    p = load(os.path.join(d, "producer.json"))
    i = load(os.path.join(d, "ingest.json"))
    lines = []
    w = lines.append

    # 1. One row through every entry point, without and with the reader.
    apis = [("C++ `Stream::write`", 0), ("C `mltap_write_f32` (libmltap.so)", 1),
            ("C `mltap_write` (libmltap.so)", 2)]

    def matrix(group, api, tid, reader):
        return p.get(f"{group}/api:{api}/tid:{tid}/reader:{reader}")

    def matrix_table(group, title, share_key, goal_ns):
        w(f"### {title}")
        w("")
        w("| entry point | trace id | no reader | with reader | with / without | notes (with reader) |")
        w("|---|---|---:|---:|---:|---|")
        worst = None
        for label, api in apis:
            for tid in (0, 1):
                a, b = matrix(group, api, tid, 0), matrix(group, api, tid, 1)
                na, nb = ns(a), ns(b)
                for v in (na, nb):
                    if v is not None:
                        worst = v if worst is None else max(worst, v)
                extra = note(b)
                if b and "error" not in b and "read_share" in b:
                    extra += f", reader decoded {b['read_share'] * 100:.1f}% of the rows"
                w(f"| {label} | {'yes' if tid else 'no'} | {fmt_ns(na)} | {fmt_ns(nb)} | "
                  f"{fmt_ratio(ratio(nb, na))} | {extra} |")
        w("")
        w(f"- Goal: every entry point, with or without trace id and reader, <= {goal_ns} ns: "
          f"slowest {fmt_ns(worst)} -> {verdict(None if worst is None else worst <= goal_ns)}")
        w("")

    matrix_table("Write", "Producer write: one row of 64 float32 (256 B), every row kept",
                 "written_share", 30)
    mltap = ns(matrix("Write", 0, 0, 0))
    w("### Baselines for one row, beside the C++ write without a reader")
    w("")
    w("| what | median CPU time | relative to mltap write | notes |")
    w("|---|---:|---:|---|")
    rows = [
        ("mltap C++ `Stream::write`, no reader (reference)", "Write/api:0/tid:0/reader:0"),
        ("mltap C++ `Stream::write` with a trace id, reader active",
         "Write/api:0/tid:1/reader:1"),
        ("mltap C `mltap_write_f32` with a trace id, reader active",
         "Write/api:1/tid:1/reader:1"),
        ("memcpy 256 B into a 4 MiB rotating buffer", "Row_Memcpy"),
        ("LTTng-UST tracepoint, session active (snapshot mode)", "Row_LttngActive"),
        ("LTTng-UST tracepoint, dormant (event not enabled)", "Row_LttngDormant"),
        ("message_queue::try_send 256 B, no reader", "Row_MqTrySendNoReader"),
        ("message_queue::try_send 256 B, reader thread draining", "Row_MqTrySendWithReader"),
        ("prometheus-cpp Histogram::Observe x 64", "Row_PrometheusHistogram64"),
    ]
    for label, key in rows:
        e = p.get(key)
        w(f"| {label} | {fmt_ns(ns(e))} | {fmt_ratio(ratio(ns(e), mltap))} | "
          f"{note(e, per_accepted=key == 'Row_MqTrySendWithReader')} |")
    lttng = ns(p.get("Row_LttngActive"))
    slowest = None
    for api in (0, 1, 2):
        for tid in (0, 1):
            v = ns(matrix("Write", api, tid, 1))
            if v is not None:
                slowest = v if slowest is None else max(slowest, v)
    w("")
    r = ratio(lttng, slowest)
    w(f"- Goal: at least 2x faster than the active LTTng tracepoint (slowest entry point with the "
      f"reader): {fmt_ratio(r)} -> {verdict(None if r is None else r >= 2)}")
    w("")

    # 2. Tensor.
    w("### Producer write: one 1 MiB float32 tensor")
    w("")
    w("| what | median CPU time | bandwidth | relative to (baseline) | notes |")
    w("|---|---:|---:|---:|---|")
    def bw_of(e):
        return e.get("bytes_per_second") if e and "error" not in e else None

    base16 = bw_of(p.get("Tensor_Memcpy/16"))
    for label, key, base_key in [
        ("mltap `Stream::write_tensor`, 4 MiB ring", "Tensor_MltapWrite/4", "Tensor_Memcpy/4"),
        ("memcpy 1 MiB into a 4 MiB rotating buffer", "Tensor_Memcpy/4", "Tensor_Memcpy/4"),
        ("mltap `Stream::write_tensor`, 8 MiB ring", "Tensor_MltapWrite/8", "Tensor_Memcpy/8"),
        ("memcpy 1 MiB into an 8 MiB rotating buffer", "Tensor_Memcpy/8", "Tensor_Memcpy/8"),
        ("mltap `Stream::write_tensor`, 16 MiB ring", "Tensor_MltapWrite/16", "Tensor_Memcpy/16"),
        ("memcpy 1 MiB into a 16 MiB rotating buffer", "Tensor_Memcpy/16", "Tensor_Memcpy/16"),
        ("memcpy 1 MiB into one 1 MiB buffer (hot cache)", "Tensor_MemcpyHot", "Tensor_Memcpy/16"),
        ("LTTng-UST event, 2 x 4 MiB sub-buffers per CPU", "Tensor_LttngActive", "Tensor_Memcpy/8"),
        ("LTTng-UST event, default 4 x 512 KiB sub-buffers", "Tensor_LttngDefaultChannel",
         "Tensor_Memcpy/16"),
    ]:
        e = p.get(key)
        bw = bw_of(e)
        bws = "n/a" if bw is None else f"{bw / 1e9:.1f} GB/s"
        base_name = base_key.replace("Tensor_Memcpy/", "memcpy ") + " MiB" if base_key != key else "-"
        w(f"| {label} | {fmt_ns(ns(e))} | {bws} | {fmt_ratio(ratio(bw, bw_of(p.get(base_key))))}"
          f" ({base_name}) | {note(e)} |")
    w("")
    for mib in (4, 8, 16):
        r = ratio(bw_of(p.get(f"Tensor_MltapWrite/{mib}")), bw_of(p.get(f"Tensor_Memcpy/{mib}")))
        w(f"- Goal: 1 MiB write >= 70% of memcpy bandwidth ({mib} MiB ring vs {mib} MiB rotating "
          f"memcpy): {fmt_ratio(r)} -> {verdict(None if r is None else r >= 0.70)}")
    r = ratio(bw_of(p.get("Tensor_MltapWrite/16")), bw_of(p.get("Tensor_MemcpyHot")))
    w(f"- Against the hot-cache memcpy (the same 1 MiB destination every time), 16 MiB ring: "
      f"{fmt_ratio(r)}")
    snap = os.path.join(d, "lttng-snapshot.txt")
    if os.path.exists(snap):
        with open(snap) as f:
            sizes = [l.split() for l in f if len(l.split()) == 2]
        if sizes:
            w("- LTTng snapshot after the run, bytes held per channel: " +
              ", ".join(f"{ch} {int(b):,}" for ch, b in sizes) +
              " (a channel of packet headers only recorded none of its events)")
    w("")

    # 3. Sampled out.
    matrix_table("Sampled", "Producer write the sampler drops (budget 1 row/s, far exceeded)",
                 "sampled_out_share", 5)

    # 4. Threads.
    w("### Several threads writing one stream (one lane each)")
    w("")
    w("| what | 1 thread | 2 threads | 2 / 1 | cv (1/2) |")
    w("|---|---:|---:|---:|---|")
    for label, key in [("mltap `Stream::write`, CPU time per write", "Threads_MltapWrite"),
                       ("memcpy 256 B (a private buffer per thread)", "Threads_Memcpy")]:
        a = ns(p.get(f"{key}/threads:1"))
        b = ns(p.get(f"{key}/threads:2"))
        cvs = "/".join(f"{p[k]['cv'] * 100:.0f}%" if p.get(k, {}).get("cv") is not None else "n/a"
                       for k in (f"{key}/threads:1", f"{key}/threads:2"))
        w(f"| {label} | {fmt_ns(a)} | {fmt_ns(b)} | {fmt_ratio(ratio(b, a))} | {cvs} |")
    reused = p.get("Threads_FirstWriteReusedLane/iterations:2000/manual_time")
    fresh = p.get("Threads_FirstWriteFreshLane/iterations:20/manual_time")
    w("")
    second = reused.get("second_write_ns") if reused and "error" not in reused else None
    w(f"- First write of a new thread (claims a released lane): {fmt_ns(ns(reused, 'real_time'))}"
      f"; its second write: {fmt_ns(second)}")
    open_us = fresh.get("open_us") if fresh and "error" not in fresh else None
    w(f"- First write on the lane of a new 4 MiB stream: {fmt_ns(ns(fresh, 'real_time'))}; "
      f"opening the stream: {fmt_ns(None if open_us is None else open_us * 1e3)} (the lane's "
      f"pages are reserved and faulted in at open, or at the first write by SDKs before 2.0)")
    w("")

    # 5. Ingest.
    w("### Agent ingest: 32768 rows of 64 float32 per round, one core")
    w("")
    w("| what | rows/record | feature values/s | ns/record | relative to plain sum | notes |")
    w("|---|---:|---:|---:|---:|---|")
    sb = i.get("Ingest_SumBaseline/1")
    base_rate = sb.get("values_per_s") if sb and "error" not in sb else None
    goal = []
    for label, key, args in [
        ("plain loop summing the floats (baseline)", "Ingest_SumBaseline", [1]),
        ("the same sum with 8 accumulators", "Ingest_SumBaseline8", [1]),
        ("decode + FeatureStats::add from memory (no ring)", "Ingest_DecodeStatsOnly", [1, 64]),
        ("SegmentReader::poll only", "Ingest_PollOnly", [1, 64]),
        ("poll + decode_to_double", "Ingest_PollDecode", [1, 64]),
        ("poll + decode + FeatureStats::add", "Ingest_PollDecodeStats", [1, 64]),
        ("Ingest::run_once (whole ingest round)", "Ingest_RunOnce", [1, 64]),
    ]:
        for a in args:
            e = i.get(f"{key}/{a}")
            rate = e.get("values_per_s") if e and "error" not in e else None
            per_rec = None
            if rate:
                per_rec = 64 * a / rate * 1e9
            rs = "n/a" if rate is None else f"{rate / 1e6:.0f} M"
            if e and "error" in e:
                rs = "error: " + e["error"]
            w(f"| {label} | {a} | {rs} | {fmt_ns(per_rec)} | {fmt_ratio(ratio(rate, base_rate), 3)}"
              f" | {note(e)} |")
            if key in ("Ingest_PollDecodeStats", "Ingest_RunOnce"):
                goal.append((f"{key}/{a}", rate))
    w("")
    for name, rate in goal:
        w(f"- Goal: >= 50 M feature values/s/core, {name}: "
          f"{'n/a' if rate is None else f'{rate / 1e6:.0f} M'} -> "
          f"{verdict(None if rate is None else rate >= 50e6)}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
