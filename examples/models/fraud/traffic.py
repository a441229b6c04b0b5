"""Send synthetic transactions to the fraud model (directly or through `drover monitor`).

    python traffic.py --url http://127.0.0.1:8000 --requests 3000 \\
        [--shift amount=3.0 --shift distance_km=5.0] [--malformed 0.05] \\
        [--batch-every 10] [--seed N] [--concurrency 8]

Rows come from train.py's own generator, so unshifted traffic matches the
reference profile. `--shift NAME=FACTOR` MULTIPLIES the numeric feature NAME by
FACTOR (integer features are rounded back to integers); repeat it for several
features. Every --batch-every'th request is a 5-row POST /predict/batch
({"instances": [...]}); the others are single-row POST /predict. With
probability --malformed a request is replaced by a malformed one (invalid JSON,
wrong types, non-UTF-8 bytes, an empty body, a missing field, NaN/Infinity).

Prints one JSON summary on stdout:
    {"sent", "rows", "by_status", "malformed_sent", "latency_p50_ms", "latency_p99_ms", ...}
`sent` counts HTTP requests, `rows` the transactions in well-formed requests;
transport failures are counted under by_status["error"]. Exit status is 0, or
1 with --strict when any request got a 5xx or a transport error.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import INTEGER_FEATURES, NUMERIC_FEATURES, generate_transactions  # noqa: E402

BATCH_SIZE = 5
MALFORMED_KINDS = ["invalid_json", "wrong_types", "non_utf8", "empty", "missing_field", "non_finite"]


def parse_shift(text: str) -> tuple[str, float]:
    name, sep, factor = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=FACTOR, got {text!r}")
    if name not in NUMERIC_FEATURES:
        raise argparse.ArgumentTypeError(f"{name!r} is not a numeric feature ({', '.join(NUMERIC_FEATURES)})")
    try:
        value = float(factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"factor {factor!r} is not a number") from None
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"factor {factor!r} must be a finite number >= 0")
    return name, value


def rows_to_dicts(frame) -> list[dict]:
    out = []
    for rec in frame.to_dict(orient="records"):
        out.append(
            {k: (int(v) if k in INTEGER_FEATURES else float(v) if k in NUMERIC_FEATURES else str(v)) for k, v in rec.items()}
        )
    return out


def malformed_payload(kind: str, row: dict, batch: bool) -> bytes:
    if kind == "invalid_json":
        return json.dumps({"instances": [row]} if batch else row).encode()[:-7]
    if kind == "wrong_types":
        bad = dict(row, amount="a lot", age=[row["age"]], transactions_24h={"n": 3})
        return json.dumps({"instances": [bad]} if batch else bad).encode()
    if kind == "non_utf8":
        return b'{"amount": 12.5, "merchant_category": "\xff\xfe\xc3(", "channel": "\x80pos"}'
    if kind == "empty":
        return b""
    if kind == "missing_field":
        partial = {k: v for k, v in row.items() if k != "channel"}
        return json.dumps({"instances": [partial]} if batch else partial).encode()
    if kind == "non_finite":  # not JSON, but Python's json module accepts it
        text = json.dumps({"instances": [row]} if batch else row)
        for name, token in (("amount", "NaN"), ("distance_km", "Infinity")):
            text = text.replace(f'"{name}": {json.dumps(row[name])}', f'"{name}": {token}', 1)
        return text.encode()
    raise ValueError(kind)


def build_plan(args) -> list[dict]:
    """Every request, decided up front so a seed gives the same traffic whatever the timing."""
    rng = np.random.default_rng(args.seed)
    n_batches = args.requests // args.batch_every if args.batch_every > 0 else 0
    n_rows = args.requests - n_batches + n_batches * BATCH_SIZE
    frame = generate_transactions(n_rows, rng)
    for name, factor in args.shift:
        col = frame[name].to_numpy(dtype=float) * factor
        frame[name] = np.round(col).astype(np.int64) if name in INTEGER_FEATURES else np.round(col, 2)
    rows = rows_to_dicts(frame)

    plan, next_row = [], 0
    for i in range(args.requests):
        batch = args.batch_every > 0 and (i + 1) % args.batch_every == 0
        take = BATCH_SIZE if batch else 1
        chunk = rows[next_row : next_row + take]
        next_row += take
        path = "/predict/batch" if batch else "/predict"
        if rng.random() < args.malformed:
            kind = MALFORMED_KINDS[int(rng.integers(len(MALFORMED_KINDS)))]
            plan.append({"path": path, "body": malformed_payload(kind, chunk[0], batch), "rows": 0, "malformed": kind})
        else:
            body = {"instances": chunk} if batch else chunk[0]
            plan.append({"path": path, "body": json.dumps(body).encode(), "rows": take, "malformed": None})
    return plan


def wait_ready(client: httpx.Client, url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if client.get(url + "/health").status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of the model or the monitor")
    ap.add_argument("--requests", type=int, default=3000, help="HTTP requests to send")
    ap.add_argument("--shift", type=parse_shift, action="append", default=[], metavar="NAME=FACTOR",
                    help="multiply numeric feature NAME by FACTOR (repeatable)")
    ap.add_argument("--malformed", type=float, default=0.0, help="fraction of malformed requests (0..1)")
    ap.add_argument("--batch-every", type=int, default=10, help="every Nth request is a 5-row batch (0: never)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    ap.add_argument("--wait-ready", type=float, default=0.0, metavar="SECONDS",
                    help="first poll GET /health for up to SECONDS until it answers 200")
    ap.add_argument("--strict", action="store_true", help="exit 1 on any 5xx or transport error")
    args = ap.parse_args(argv)
    if args.requests < 0 or args.concurrency < 1 or args.batch_every < 0 or not 0.0 <= args.malformed <= 1.0:
        ap.error("need --requests >= 0, --concurrency >= 1, --batch-every >= 0, 0 <= --malformed <= 1")
    url = args.url.rstrip("/")

    plan = build_plan(args)
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    headers = {"content-type": "application/json"}
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()

    with httpx.Client(timeout=args.timeout, limits=limits, headers=headers) as client:
        if args.wait_ready > 0 and not wait_ready(client, url, args.wait_ready):
            print(json.dumps({"error": f"{url}/health not ready after {args.wait_ready}s"}))
            return 1

        def send(req: dict) -> None:
            t0 = time.perf_counter()
            try:
                status = str(client.post(url + req["path"], content=req["body"]).status_code)
            except httpx.HTTPError:
                status = "error"
            elapsed = (time.perf_counter() - t0) * 1000.0
            with lock:
                statuses[status] += 1
                latencies.append(elapsed)

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            list(pool.map(send, plan))
        duration = time.perf_counter() - started

    lat = np.array(latencies) if latencies else np.array([0.0])
    summary = {
        "sent": len(plan),
        "rows": sum(r["rows"] for r in plan),
        "by_status": dict(sorted(statuses.items())),
        "malformed_sent": sum(1 for r in plan if r["malformed"]),
        "malformed_by_kind": dict(sorted(Counter(r["malformed"] for r in plan if r["malformed"]).items())),
        "batches_sent": sum(1 for r in plan if r["path"] == "/predict/batch"),
        "shift": {name: factor for name, factor in args.shift},
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 2),
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 2),
        "duration_s": round(duration, 2),
        "requests_per_s": round(len(plan) / duration, 1) if duration > 0 else None,
    }
    print(json.dumps(summary))
    failed = statuses["error"] + sum(n for s, n in statuses.items() if s.startswith("5"))
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
