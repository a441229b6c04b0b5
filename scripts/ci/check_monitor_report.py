#!/usr/bin/env python3
"""Checks of scripts/ci/monitor-e2e.sh: what `drover monitor` recorded for two windows of
traffic.py traffic, against what traffic.py sent and what `drover drift` concluded.

Window A is report-a (cumulative since the monitor started; nothing else reached the serving
port before it). Window B is report-b minus report-a, computed here independently of
`drover drift --baseline`. Every failed check is listed; the exit status is 1 if any failed.
Standard library only.

What the monitor must count, per malformed kind traffic.py sends (see its malformed_payload):

  kind           body                                  model  monitor
  invalid_json   truncated JSON                        422    unparsedRequests +1, no row
  non_utf8       bytes that are not UTF-8              400    unparsedRequests +1, no row
  non_finite     NaN / Infinity tokens (not JSON)      422    unparsedRequests +1, no row
  empty          no body on a POST                     422    unparsedRequests +1, no row
  wrong_types    a JSON object, 3 fields ill-typed     422    nothing: the model refused it, so its
                                                              inputs stay out of the histograms
  missing_field  a JSON object without `channel`       422    nothing, likewise

So, per window: rows == traffic.rows (the monitor records the inputs of served requests only),
unparsedRequests == invalid_json + non_utf8 + non_finite + empty, and every feature binned
exactly one value per served row.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys

# src/stats/sketch.rs
RELATIVE_ACCURACY = 0.01
LN_GAMMA = 0.020_000_666_706_669_435
LN_REPRESENTATIVE_OFFSET = -0.010_050_335_853_501_45
# src/stats/drift.rs
PSI_EPSILON = 1e-4
# src/monitor/recorder.rs
LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]

NOT_JSON_KINDS = ("invalid_json", "non_utf8", "non_finite", "empty")
ROW_KINDS = ("wrong_types", "missing_field")
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")  # Report.requests keys
ZERO_COUNTERS = ("unparsedResponses", "rejected", "fallbacks", "tooLarge", "upstreamTimeouts",
                 "upstreamErrors", "unauthorized", "unknownFeatures", "duringTermination", "logged")
# The proxy's own time is a part of the client's; how much smaller its median may be. The
# client's median adds httpx, the GIL of 8 client threads and loopback TCP on a 2-core machine
# shared with uvicorn and the monitor to the proxy's (which holds the model's ~20 ms); measured
# client/proxy p50 ratios are 1.1-1.2, so 5 is a loose sanity bound, not a measurement.
MAX_CLIENT_TO_PROXY_P50 = 5.0

failures: list[str] = []


def check(ok: bool, message: str) -> bool:
    if not ok:
        failures.append(message)
    return ok


def load(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ------------------------------------------------------------------------------- sketch
def bucket_value(index: int) -> float:
    """LatencySketch::bucket_value: the representative 2 g^i / (g + 1), in log space."""
    return math.exp(index * LN_GAMMA + LN_REPRESENTATIVE_OFFSET)


def sketch_buckets(sketch: dict) -> list[tuple[int, int]]:
    return sorted((int(i), int(c)) for i, c in sketch["buckets"].items() if int(c) > 0)


def quantile(sketch: dict, q: float) -> float | None:
    """LatencySketch::quantile: the representative of the bucket holding 0-based rank
    floor(q (count - 1)) (the lower empirical quantile); 0 inside the zero bucket."""
    count = sketch["count"]
    if count == 0:
        return None
    rank = math.floor(q * (count - 1))
    if rank < sketch["zeroCount"]:
        return 0.0
    seen, last = sketch["zeroCount"], None
    for index, c in sketch_buckets(sketch):
        seen += c
        last = index
        if seen > rank:
            break
    return bucket_value(last) if last is not None else 0.0


def sketch_delta(later: dict, earlier: dict) -> dict:
    buckets = {int(i): int(c) for i, c in later["buckets"].items()}
    for i, c in earlier["buckets"].items():
        buckets[int(i)] = buckets.get(int(i), 0) - int(c)
    return {
        "zeroCount": later["zeroCount"] - earlier["zeroCount"],
        "buckets": {str(i): c for i, c in buckets.items() if c != 0},
        "count": later["count"] - earlier["count"],
        "invalid": later["invalid"] - earlier["invalid"],
        "sum": later["sum"] - earlier["sum"],
    }


# ------------------------------------------------------------------------------- report
def report_delta(later: dict, earlier: dict) -> dict:
    """Window between two cumulative reports of one monitor (Report::delta, re-done here)."""
    check(later["instance"] == earlier["instance"],
          "report-b and report-a come from different monitor instances: the monitor restarted")
    features = {}
    for name, h in later["features"].items():
        e = earlier["features"].get(name)
        if e is None:
            features[name] = h
            continue
        features[name] = dict(
            h,
            counts=[a - b for a, b in zip(h["counts"], e["counts"])],
            **{k: h[k] - e[k] for k in ("count", "sum", "sumSq", "missing", "nonFinite", "typeMismatch")},
        )
    hist = lambda key: (  # noqa: E731
        None if later.get(key) is None else
        dict(later[key], counts=[a - b for a, b in zip(later[key]["counts"], earlier[key]["counts"])],
             count=later[key]["count"] - earlier[key]["count"])
    )
    return {
        "instance": later["instance"],
        "modelVersion": later.get("modelVersion"),
        "requests": {k: later["requests"][k] - earlier["requests"][k] for k in STATUS_CLASSES},
        "rows": later["rows"] - earlier["rows"],
        "counters": {k: v - earlier["counters"].get(k, 0) for k, v in later["counters"].items()},
        "latency": sketch_delta(later["latency"], earlier["latency"]),
        "features": features,
        "prediction": hist("prediction"),
        "confidence": hist("confidence"),
    }


def psi(reference: list[int], current: list[int]) -> float:
    """stats::drift::psi: zero proportions replaced by PSI_EPSILON."""
    n, m = sum(reference), sum(current)
    smooth = lambda p: PSI_EPSILON if p == 0 else p  # noqa: E731
    total = 0.0
    for r, c in zip(reference, current):
        r, c = smooth(r / n), smooth(c / m)
        total += (c - r) * math.log(c / r)
    return total


# ------------------------------------------------------------------------------- checks
def check_counts(w: str, window: dict, traffic: dict, feature_names: list[str]) -> None:
    by_status = {k: int(v) for k, v in traffic["by_status"].items()}
    kinds = traffic.get("malformed_by_kind", {})
    sent = traffic["sent"]
    check(by_status.get("error", 0) == 0, f"{w}: traffic.py saw {by_status.get('error')} transport errors")
    fivexx = sum(n for s, n in by_status.items() if s.startswith("5"))
    check(fivexx == 0, f"{w}: traffic.py got {fivexx} 5xx answers: {by_status}")
    check(sum(kinds.values()) == traffic["malformed_sent"],
          f"{w}: traffic.py's malformed_by_kind {kinds} does not add up to malformed_sent")
    unknown_kinds = set(kinds) - set(NOT_JSON_KINDS) - set(ROW_KINDS)
    check(not unknown_kinds, f"{w}: traffic.py sent malformed kinds this checker does not know: {unknown_kinds}")

    req = window["requests"]
    total = sum(req[k] for k in STATUS_CLASSES)
    check(total == sent, f"{w}: the monitor counted {total} responses (sum of status classes), traffic.py sent {sent}")
    check(req["2xx"] == by_status.get("200", 0),
          f"{w}: the monitor counted {req['2xx']} 2xx, traffic.py got {by_status.get('200', 0)} x 200")
    client_4xx = sum(n for s, n in by_status.items() if s.startswith("4"))
    check(req["4xx"] == client_4xx, f"{w}: the monitor counted {req['4xx']} 4xx, traffic.py got {client_4xx}")
    for k in ("1xx", "3xx", "5xx"):
        check(req[k] == 0, f"{w}: the monitor counted {req[k]} responses of class {k}")
    # The scenario: every well-formed request is answered 200, every malformed one 4xx.
    check(by_status.get("200", 0) == sent - traffic["malformed_sent"],
          f"{w}: {by_status.get('200', 0)} answers 200 but {sent - traffic['malformed_sent']} well-formed requests were sent")

    expected_rows = traffic["rows"]
    check(window["rows"] == expected_rows,
          f"{w}: rows {window['rows']} != rows of the requests the model served ({expected_rows})")
    expected_unparsed = sum(kinds.get(k, 0) for k in NOT_JSON_KINDS)
    got_unparsed = window["counters"]["unparsedRequests"]
    check(got_unparsed == expected_unparsed,
          f"{w}: unparsedRequests {got_unparsed} != invalid_json + non_utf8 + non_finite + empty = {expected_unparsed} ({kinds})")
    for k in ZERO_COUNTERS:
        check(window["counters"].get(k, 0) == 0, f"{w}: counters.{k} is {window['counters'].get(k)}, expected 0")

    for name in feature_names:
        h = window["features"].get(name)
        if not check(h is not None, f"{w}: the report has no histogram for feature {name}"):
            continue
        expected = traffic["rows"]
        check(h["count"] == expected, f"{w}: feature {name} binned {h['count']} values, expected {expected}")
        check(sum(h["counts"]) == h["count"], f"{w}: feature {name}: bin counts do not add up to count")
        check(h["typeMismatch"] == 0, f"{w}: feature {name}: typeMismatch {h['typeMismatch']}, expected 0")
        check(h["missing"] == 0 and h["nonFinite"] == 0,
              f"{w}: feature {name}: missing {h['missing']} / nonFinite {h['nonFinite']}, expected 0 / 0")
    for key in ("prediction", "confidence"):
        h = window.get(key)
        if check(h is not None, f"{w}: the report has no {key} histogram"):
            # One prediction and one confidence per row answered 200 (all well-formed rows).
            check(h["count"] == traffic["rows"], f"{w}: {key} count {h['count']} != rows answered 200 ({traffic['rows']})")


def check_latency(w: str, sketch: dict, traffic: dict) -> dict:
    """What is checked about latency, and what is not.

    The monitor times each request from its arrival to the moment its answer is ready; the
    client's time of the same request encloses that interval. Every request of the window is
    in both (the counts are checked to be equal), so per request client >= proxy, hence every
    order statistic of the client is >= the same order statistic of the proxy. The sketch's
    quantile is the lower empirical quantile within 1 % (RELATIVE_ACCURACY) of a true sample,
    numpy's percentile interpolates upward from the same rank, and traffic.py rounds to 0.01 ms:
    so sketch_q <= client_q * 1.01 + 0.01 ms is exact, not a tolerance. Checked for p50, p99.

    Not checked (cannot be observed from outside): that the sketch's quantiles are within 1 % of
    the monitor's true latencies, nor any absolute latency. The lower bound on p50 is only a
    loose sanity factor (MAX_CLIENT_TO_PROXY_P50): client overhead has no bound of its own.
    Internal consistency is checked: count == zeroCount + sum(buckets) == responses, no invalid
    values, p50 <= p95 <= p99, sum/count within [min bucket, max bucket]. The bucket -> value
    mapping re-implemented here is cross-checked against drover's /metrics histogram.
    """
    buckets = sketch_buckets(sketch)
    check(sketch["count"] == sketch["zeroCount"] + sum(c for _, c in buckets),
          f"{w}: latency sketch count {sketch['count']} != zeroCount + sum of buckets")
    check(sketch["count"] == traffic["sent"], f"{w}: latency sketch holds {sketch['count']} values, traffic.py sent {traffic['sent']}")
    check(sketch["invalid"] == 0, f"{w}: latency sketch has {sketch['invalid']} invalid values")
    q = {p: quantile(sketch, p / 100) for p in (50, 95, 99)}
    if not check(None not in q.values(), f"{w}: empty latency sketch"):
        return {}
    check(q[50] <= q[95] <= q[99], f"{w}: sketch quantiles not ordered: {q}")
    if buckets and sketch["count"]:
        mean = sketch["sum"] / sketch["count"]
        lo, hi = bucket_value(buckets[0][0]) / 1.0202, bucket_value(buckets[-1][0]) * 1.0202
        check(lo <= mean <= hi, f"{w}: sketch mean {mean:.6f}s outside its buckets [{lo:.6f}, {hi:.6f}]")
    ms = {p: v * 1000 for p, v in q.items()}
    for p, client in ((50, traffic["latency_p50_ms"]), (99, traffic["latency_p99_ms"])):
        bound = client * (1 + RELATIVE_ACCURACY) + 0.01
        check(ms[p] <= bound, f"{w}: sketch p{p} {ms[p]:.2f} ms exceeds the client's p{p} {client} ms "
                              f"(the proxy's time is a part of the client's; bound {bound:.2f} ms)")
    check(ms[50] * MAX_CLIENT_TO_PROXY_P50 >= traffic["latency_p50_ms"],
          f"{w}: sketch p50 {ms[50]:.3f} ms is over {MAX_CLIENT_TO_PROXY_P50}x below the client's p50 {traffic['latency_p50_ms']} ms")
    return ms


def check_drift(w: str, drift: dict, window: dict, profile: dict, expected: set[str], threshold: float) -> dict:
    names = [f["name"] for f in profile["features"]]
    check(not drift["inconclusive"], f"{w}: drover drift found too few samples for {drift['inconclusive']}")
    check(not drift["unmeasured"], f"{w}: drover drift could not measure {drift['unmeasured']}")
    got = {f["name"]: f for f in drift["features"]}
    check(sorted(got) == sorted(names), f"{w}: drover drift scored {sorted(got)}, the profile has {sorted(names)}")
    for ref in profile["features"]:
        f = got.get(ref["name"])
        live = window["features"].get(ref["name"])
        if f is None or live is None:
            continue
        check(f["method"] == "psi", f"{w}: {ref['name']} scored with {f['method']}, expected psi")
        check(f["samples"] == live["count"], f"{w}: {ref['name']}: drover drift counted {f['samples']} samples, the window has {live['count']}")
        mine = psi(ref["counts"], live["counts"])
        check(math.isclose(f["score"], mine, rel_tol=1e-9, abs_tol=1e-12),
              f"{w}: {ref['name']}: drover drift PSI {f['score']} != {mine} recomputed from the window's bins")
        check(f["drifted"] == (f["score"] > threshold), f"{w}: {ref['name']}: drifted flag disagrees with score {f['score']}")
    drifted = {f["name"] for f in drift["features"] if f["drifted"]}
    check(drifted == expected,
          f"{w}: drifted features {sorted(drifted) or 'none'}, expected exactly {sorted(expected) or 'none'} "
          f"(scores: {', '.join('%s=%.4f' % (n, got[n]['score']) for n in names if n in got)})")
    return got


def parse_metrics(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)(?:\s+\S+)?", line)
        if check(m is not None, f"/metrics: unparseable line {line!r}"):
            samples[m.group(1)] = float(m.group(2))
    return samples


def check_metrics(text: str, report: dict) -> None:
    """/metrics is read off the same state as the report (fetched right after report-b, no
    traffic in between): its histogram buckets are drover's own bucket -> value mapping."""
    s = parse_metrics(text)
    check(text.rstrip().endswith("# EOF"), "/metrics: OpenMetrics exposition must end with # EOF")
    for label in STATUS_CLASSES:
        name = f'drover_monitor_requests_total{{code_class="{label}"}}'
        check(s.get(name) == report["requests"][label], f"/metrics: {name} = {s.get(name)}, report says {report['requests'][label]}")
    check(s.get("drover_monitor_rows_total") == report["rows"], f"/metrics: rows {s.get('drover_monitor_rows_total')} != report {report['rows']}")
    name = 'drover_monitor_unparsed_total{direction="request"}'
    check(s.get(name) == report["counters"]["unparsedRequests"], f"/metrics: {name} = {s.get(name)} != report")
    lat = report["latency"]
    base = "drover_monitor_request_duration_seconds"
    check(s.get(f"{base}_count") == lat["count"], f"/metrics: {base}_count {s.get(f'{base}_count')} != sketch count {lat['count']}")
    check(s.get(f"{base}_sum") is not None and math.isclose(s[f"{base}_sum"], lat["sum"], rel_tol=1e-9),
          f"/metrics: {base}_sum {s.get(f'{base}_sum')} != sketch sum {lat['sum']}")
    buckets = sketch_buckets(lat)
    for le in LATENCY_BUCKETS:
        mine = lat["zeroCount"] + sum(c for i, c in buckets if bucket_value(i) <= le)
        got = next((v for k, v in s.items() if k.startswith(f"{base}_bucket{{") and re.search(r'le="([^"]+)"', k)
                    and float(re.search(r'le="([^"]+)"', k).group(1)) == le), None)
        check(got == mine, f"/metrics: {base}_bucket{{le={le}}} = {got}, the sketch gives {mine} (bucket -> value mapping differs)")
    inf = s.get(f'{base}_bucket{{le="+Inf"}}')
    check(inf == lat["count"], f"/metrics: {base}_bucket{{le=+Inf}} = {inf} != count {lat['count']}")


def to_prometheus_text(text: str) -> str:
    """The OpenMetrics exposition as classic text format 0.0.4, for `promtool check metrics`:
    an OpenMetrics counter family `x` has samples `x_total`, which text format names `x_total`
    in HELP/TYPE too; `# EOF` and `# UNIT` have no text-format counterpart. Nothing else changes."""
    counters = set(re.findall(r"^# TYPE (\S+) counter$", text, re.M))
    family = None  # samples belong to the family of the HELP/TYPE lines above them
    for line in text.splitlines():
        meta = re.fullmatch(r"# (?:HELP|TYPE|UNIT) (\S+).*", line)
        if meta:
            family = meta.group(1)
            continue
        sample = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
        if sample and family in counters:
            check(sample.group(0) == family + "_total",
                  f"/metrics: counter family {family} has a sample {sample.group(0)}, not {family}_total")
    out = []
    for line in text.splitlines():
        if line == "# EOF" or line.startswith("# UNIT "):
            continue
        m = re.fullmatch(r"# (HELP|TYPE) (\S+)(.*)", line)
        if m and m.group(2) in counters:
            line = f"# {m.group(1)} {m.group(2)}_total{m.group(3)}"
        out.append(line)
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("profile", "report-a", "report-b", "traffic-a", "traffic-b", "drift-a", "drift-b", "metrics"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--expect-drift", default="", help="comma-separated features that must drift in window B (exactly)")
    ap.add_argument("--threshold", type=float, default=0.2)
    ap.add_argument("--prometheus-text-out", help="write /metrics as text format 0.0.4 here (for promtool)")
    args = ap.parse_args()

    profile = load(args.profile)
    names = [f["name"] for f in profile["features"]]
    report_a, report_b = load(args.report_a), load(args.report_b)
    traffic = {"A": load(args.traffic_a), "B": load(args.traffic_b)}
    windows = {"A": report_a, "B": report_delta(report_b, report_a)}
    expected = {"A": set(), "B": {n for n in args.expect_drift.split(",") if n}}
    check(not expected["B"] - set(names), f"--expect-drift names unknown features: {expected['B'] - set(names)}")

    for r in (report_a, report_b):
        check(r.get("modelVersion") == "1.0.0", f"report modelVersion {r.get('modelVersion')!r}, expected '1.0.0'")
    scores, quantiles = {}, {}
    for w in ("A", "B"):
        check_counts(w, windows[w], traffic[w], names)
        quantiles[w] = check_latency(w, windows[w]["latency"], traffic[w])
        scores[w] = check_drift(w, load(args.drift_a if w == "A" else args.drift_b), windows[w], profile, expected[w], args.threshold)
    with open(args.metrics, encoding="utf-8") as f:
        metrics = f.read()
    check_metrics(metrics, report_b)
    if args.prometheus_text_out:
        with open(args.prometheus_text_out, "w", encoding="utf-8") as f:
            f.write(to_prometheus_text(metrics))

    # ---- summary
    print()
    print(f"{'window':<7}{'sent':>6}{'2xx':>6}{'4xx':>6}{'malformed':>10}{'rows(client)':>13}{'rows(monitor)':>14}"
          f"{'unparsed':>9}{'sketch p50/p95/p99 ms':>24}{'client p50/p99 ms':>19}")
    for w in ("A", "B"):
        t, win, q = traffic[w], windows[w], quantiles[w]
        qs = "/".join(f"{q.get(p, float('nan')):.2f}" for p in (50, 95, 99))
        print(f"{w:<7}{t['sent']:>6}{win['requests']['2xx']:>6}{win['requests']['4xx']:>6}"
              f"{t['malformed_sent']:>10}{t['rows']:>13}{win['rows']:>14}{win['counters']['unparsedRequests']:>9}"
              f"{qs:>24}{t['latency_p50_ms']:>10.2f}/{t['latency_p99_ms']:<8.2f}")
    print(f"malformed kinds  A: {traffic['A'].get('malformed_by_kind')}  B: {traffic['B'].get('malformed_by_kind')}")
    print()
    print(f"{'feature':<19}{'PSI A':>9}{'PSI B':>9}{'meanShift B':>13}{'stdRatio B':>12}  drifted B")
    drift_b = load(args.drift_b)
    for n in names:
        a, b = scores["A"].get(n, {}), scores["B"].get(n, {})
        ms = b.get("meanShift")
        sr = b.get("stdRatio")
        print(f"{n:<19}{a.get('score', float('nan')):>9.4f}{b.get('score', float('nan')):>9.4f}"
              f"{'' if ms is None else f'{ms:.2f}':>13}{'' if sr is None else f'{sr:.2f}':>12}  {'yes' if b.get('drifted') else 'no'}")
    pa, pb = load(args.drift_a).get("prediction") or {}, drift_b.get("prediction") or {}
    print(f"{'(prediction)':<19}{pa.get('score', float('nan')):>9.4f}{pb.get('score', float('nan')):>9.4f}"
          f"{'':>13}{'':>12}  {'yes' if pb.get('drifted') else 'no'} (not asserted)")
    print()
    if failures:
        print(f"monitor end-to-end: {len(failures)} check(s) FAILED:", file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print("monitor end-to-end: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
