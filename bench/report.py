"""The bench's report: each workload's rows of the table (its figure beside its baseline and
target, with the verdict), the CPU and memory rows, and the table itself."""

from __future__ import annotations

from typing import Any

from bench.harness import Bench, fmt, ratio, verdict


def w1_rows(bench: Bench, w: dict[str, Any]) -> None:
    s = w["summary"]
    b, g, q = s["baseline"], s["gateway-pg"], s["gateway-sqlite"]
    ok = w["ratio_pg_rps"] is not None and w["ratio_pg_rps"] >= 0.5
    bench.row(
        "W1 ingest c=32",
        "req/s, PostgreSQL",
        g["rps_median"],
        b["rps_median"],
        w["ratio_pg_rps"],
        ">= 0.5",
        verdict(ok),
    )
    bench.row(
        "", "p50 ms, PostgreSQL", g["p50_ms"], b["p50_ms"], ratio(g["p50_ms"], b["p50_ms"]), "", ""
    )
    bench.row(
        "", "p99 ms, PostgreSQL", g["p99_ms"], b["p99_ms"], ratio(g["p99_ms"], b["p99_ms"]), "", ""
    )
    bench.row(
        "",
        "API CPU ms/req",
        g["server_cpu_ms_per_req"],
        b["server_cpu_ms_per_req"],
        ratio(g["server_cpu_ms_per_req"], b["server_cpu_ms_per_req"]),
        "",
        "",
    )
    bench.row(
        "",
        "PostgreSQL CPU ms/req",
        g["pg_cpu_ms_per_req"],
        b["pg_cpu_ms_per_req"],
        ratio(g["pg_cpu_ms_per_req"], b["pg_cpu_ms_per_req"]),
        "",
        "",
    )
    bench.row(
        "",
        "req/s, SQLite embedded",
        q["rps_median"],
        b["rps_median"],
        w["ratio_sqlite_rps"],
        "(info)",
        "",
    )
    bench.row(
        "",
        "new PG connections/req",
        g["pg_sessions_per_req"],
        b["pg_sessions_per_req"],
        None,
        "",
        "",
    )
    bench.row(
        "",
        "p50 / p99 ms, SQLite",
        f"{fmt(q['p50_ms'])} / {fmt(q['p99_ms'])}",
        f"{fmt(b['p50_ms'])} / {fmt(b['p99_ms'])}",
        None,
        "",
        "",
    )
    backlog = ", ".join(fmt(n) for n in w.get("sqlite_backlog_per_round", []))
    bench.row("", "SQLite: unhandled webhooks after each window", backlog, None, None, "", "")
    for name, value in w["ratio_variants_rps"].items():
        v = s[name]
        bench.row(
            "", f"what-if {name[11:-1]}: req/s", v["rps_median"], b["rps_median"], value, "", ""
        )
        bench.row(
            "",
            "  API CPU ms/req, new conn/req",
            f"{fmt(v['server_cpu_ms_per_req'])}, {fmt(v['pg_sessions_per_req'])}",
            None,
            None,
            "",
            "",
        )
    ww = w["with_worker"]
    if not ww:
        return
    bench.row(
        "",
        "req/s, PG + worker busy",
        ww["rps"],
        b["rps_median"],
        ratio(ww["rps"], b["rps_median"]),
        "(info)",
        "",
    )


def w2_rows(bench: Bench, w: dict[str, Any]) -> None:
    ref = w["reference_w1_rps"]
    best = w["max_sustained_rate"]
    bench.row(
        "W2 end to end",
        "max sustained webhooks/s",
        best,
        ref,
        ratio(best, ref),
        ">= 0.5",
        verdict(w["target_sustained"]),
    )
    lat = w["latency_run"]
    ref_p50 = w["reference_w1_p50_ms"]
    limit = 10 * ref_p50 if ref_p50 else None
    ok = None if limit is None or lat["e2e_p99_ms"] is None else lat["e2e_p99_ms"] <= limit
    bench.row(
        "",
        f"e2e p50 ms @ {lat['rate']:.0f}/s",
        lat["e2e_p50_ms"],
        ref_p50,
        ratio(lat["e2e_p50_ms"], ref_p50),
        "",
        "",
    )
    bench.row(
        "",
        f"e2e p99 ms @ {lat['rate']:.0f}/s",
        lat["e2e_p99_ms"],
        ref_p50,
        ratio(lat["e2e_p99_ms"], ref_p50),
        "<= 10",
        verdict(ok),
    )
    best = w["at_max_sustained"]
    if best:
        text = f"{fmt(best['e2e_p50_ms'])} / {fmt(best['e2e_p99_ms'])}"
        bench.row("", f"e2e p50 / p99 ms @ {best['rate']:.0f}/s", text, None, None, "", "")
    for step in w["steps"]:
        bench.row(
            "",
            f"  step {step['rate']:.0f}/s: delivered/s, backlog end",
            f"{fmt(step['delivered_per_s_during_load'])}, {step['backlog_end']}",
            None,
            None,
            "",
            "held" if step["sustained"] else "fell behind",
        )


def w3_rows(bench: Bench, w: dict[str, Any]) -> None:
    t = w["targets"]
    pairs = [
        (
            "W3 actions c=1",
            "random-int",
            "gateway randomness.random-int",
            "baseline starlette /random",
            w["ratio_random"],
        ),
        (
            "",
            "benchfake",
            "gateway benchfake.fetch-thing",
            "fake platform direct (httpx)",
            w["ratio_fake"],
        ),
    ]
    for workload, label, gateway, baseline, p50_ratio in pairs:
        a, b = t[gateway], t[baseline]
        met = p50_ratio is not None and p50_ratio <= 3
        bench.row(
            workload, f"{label} p50 ms", a["p50_ms"], b["p50_ms"], p50_ratio, "<= 3", verdict(met)
        )
        p99_ratio = ratio(a["p99_ms"], b["p99_ms"])
        bench.row("", f"{label} p99 ms", a["p99_ms"], b["p99_ms"], p99_ratio, "", "")


def w4_rows(bench: Bench, w: dict[str, Any]) -> None:
    s, big = w["stored_small"], w["stored_large"]
    label = f"close {w['due']:,} due: {big:,} vs {s:,} stored"
    a, b = w["worker_large"], w["worker_small"]
    ok = w["ratio_worker"] is not None and w["ratio_worker"] <= 1.5
    bench.row(
        "W4 processes",
        f"worker pass s, {label}",
        a["elapsed_s"],
        b["elapsed_s"],
        w["ratio_worker"],
        "<= 1.5",
        verdict(ok),
    )
    bench.row(
        "",
        "  worker CPU ms per close",
        a["worker_cpu_ms_per_close"],
        b["worker_cpu_ms_per_close"],
        w["ratio_worker_cpu"],
        "",
        "",
    )
    bench.row(
        "",
        "  PostgreSQL CPU ms per close",
        a["pg_cpu_ms_per_close"],
        b["pg_cpu_ms_per_close"],
        ratio(a["pg_cpu_ms_per_close"], b["pg_cpu_ms_per_close"]),
        "",
        "",
    )
    flat = w["ratio_worker_peak_rss"]
    bench.row(
        "",
        "  worker peak RSS MB",
        a["peak_rss_mb"],
        b["peak_rss_mb"],
        flat,
        "flat",
        verdict(flat is not None and flat <= 1.1),
    )
    if "in_process_large" in w:
        a, b = w["in_process_large"], w["in_process_small"]
        ok = w["ratio_in_process"] is not None and w["ratio_in_process"] <= 1.5
        bench.row(
            "",
            "in-process pass s (same)",
            a["elapsed_s"],
            b["elapsed_s"],
            w["ratio_in_process"],
            "<= 1.5",
            verdict(ok),
        )
        bench.row(
            "",
            "  in-process peak RSS MB",
            round(a["peak_rss_kb"] / 1024, 1),
            round(b["peak_rss_kb"] / 1024, 1),
            ratio(a["peak_rss_kb"], b["peak_rss_kb"]),
            "",
            "",
        )


def w5_rows(bench: Bench, w: dict[str, Any]) -> None:
    bench.row("W5 outage", f"drain s ({w['events']:,} events)", w["drain_s"], None, None, "", "")
    bench.row(
        "",
        "drain events/s vs W2 max",
        w["drain_rate"],
        w["reference_rate"],
        ratio(w["drain_rate"], w["reference_rate"]),
        "(info)",
        "",
    )
    bench.row("", "worker CPU ms per delivery", w["worker_cpu_ms_per_delivery"], None, None, "", "")
    detail = (
        f"{w['delivered_unique']:,} unique, {w['duplicates']} dup, "
        f"{w['order_violations']} out of order, {w['deliveries_by_status'].get('dead', 0)} dead"
    )
    bench.row(
        "", "delivered once, in order", detail, None, None, "all", verdict(w["once_and_in_order"])
    )


def print_table(bench: Bench) -> str:
    header = ["Workload", "Metric", "Gateway", "Baseline", "Ratio", "Target", "Result"]
    rows = [header, *bench.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def cpu_rows(bench: Bench) -> None:
    """How busy the machine was, and how much of it was not this bench (the noise)."""
    for key in ("w1", "w2", "w3", "w4", "w5"):
        found = bench.results.get(key, {}).get("machine_cpu")
        if found:
            text = (
                f"busy {found['busy_pct']} %, bench {found['ours_pct']} %, "
                f"others {found['others_pct']} %, steal {found['steal_pct']} %"
            )
            bench.row("Machine CPU", key.upper(), text, None, None, "", "")


def rss_rows(bench: Bench) -> None:
    for key, label in [("w1", "W1"), ("w2", "W2"), ("w3", "W3"), ("w5", "W5")]:
        found = bench.results.get(key, {}).get("peak_rss_mb")
        if found:
            text = ", ".join(f"{k} {fmt(v)}" for k, v in found.items())
            bench.row("Peak RSS MB", label, text, None, None, "", "")
    w4r = bench.results.get("w4")
    if w4r:
        big = w4r["worker_large"]
        text = (
            f"worker {fmt(big['peak_rss_mb'])} (start {fmt(big['rss_start_mb'])}, "
            f"end {fmt(big['rss_end_mb'])})"
        )
        bench.row("Peak RSS MB", "W4 (100k stored)", text, None, None, "", "")
