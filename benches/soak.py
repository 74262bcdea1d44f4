#!/usr/bin/env python3
"""Soak test: `vitals run` for a long time under steady load.

Starts `vitals broker` (the embedded Kafka-protocol broker), `vitals run`
(with its HTTP listener) and `vitals simulate --brokers … --rate R` as
separate processes, then samples every --interval seconds:

- the resident memory (VmRSS) of `vitals run` and of the broker;
- the consumer lag summed over partitions (`vitals_consumer_lag`);
- events folded per second (`vitals_events_total`);
- the p50 / p99 event-to-alert latency of the alerts published in the
  interval, from the `vitals_event_to_alert_seconds` histogram's bucket
  deltas (linear inside a bucket; the buckets are 1, 5, 10, 25, 50, 100,
  250 ms …, so the figure is as fine as they are).

Writes `OUT/soak.csv` and `OUT/summary.json`, prints a summary, and stops
everything (SIGTERM). Usage (BENCHMARKS.md, "Soak"):

    cargo build --release
    python3 benches/soak.py --minutes 30 --rate 50000

Standard library only. Linux (reads /proc).
"""

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except OSError:
        return None


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def parse(text):
    """Prometheus text → {(name, labels-string): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        try:
            key, value = line.rsplit(" ", 1)
            value = float(value)
        except ValueError:
            continue
        if "{" in key:
            name, labels = key.split("{", 1)
            labels = labels.rstrip("}")
        else:
            name, labels = key, ""
        out[(name, labels)] = value
    return out


def total(m, name):
    return sum(v for (n, _), v in m.items() if n == name)


def buckets(m, name):
    """Cumulative histogram buckets: sorted [(le, count)]."""
    b = []
    for (n, labels), v in m.items():
        if n != name + "_bucket":
            continue
        le = [p.split("=", 1)[1].strip('"') for p in labels.split(",") if p.startswith("le=")]
        if le:
            b.append((float("inf") if le[0] == "+Inf" else float(le[0]), v))
    b.sort()
    return b


def quantile(prev, cur, q):
    """q-quantile of the observations between two scrapes of a histogram."""
    prev_d = dict(prev)
    d = [(le, c - prev_d.get(le, 0.0)) for le, c in cur]
    n = d[-1][1] if d else 0
    if n <= 0:
        return None, 0
    target = q * n
    lo, below = 0.0, 0.0
    for le, c in d:
        if c >= target:
            if le == float("inf"):
                return lo, int(n)
            inside = c - below
            frac = (target - below) / inside if inside > 0 else 1.0
            return lo + (le - lo) * frac, int(n)
        lo, below = le, c
    return lo, int(n)


def wait_for(pred, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"soak: {what} did not come up in {timeout} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=int, default=50000, help="events/s the simulator publishes")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--accounts", type=int, default=60000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--joining", type=float, default=0.3,
                    help="share of accounts joining during the run (0 = a fixed population)")
    ap.add_argument("--interval", type=float, default=15, help="seconds between samples")
    ap.add_argument("--port", type=int, default=19464)
    ap.add_argument("--out", default="soak-results")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "vitals"))
    a = ap.parse_args()
    if not os.path.exists(a.bin):
        sys.exit(f"soak: {a.bin} not found; run `cargo build --release` first")
    os.makedirs(a.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="vitals-soak-")
    procs = []

    def start(name, args, env=None):
        log = open(os.path.join(a.out, f"{name}.log"), "w")
        p = subprocess.Popen([a.bin] + args, stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, **(env or {})})
        procs.append((name, p))
        return p

    def stop_all():
        for name, p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()

    try:
        addr_file = os.path.join(work, "addr")
        broker = start("broker", ["broker", "--partitions", str(a.partitions),
                                  "--address-file", addr_file])
        wait_for(lambda: os.path.getsize(addr_file) > 0, "the broker")
        addr = open(addr_file).read().strip()
        cfg = os.path.join(work, "vitals.toml")
        with open(cfg, "w") as f:
            f.write(f'[kafka]\ngroup_id = "soak"\n[snapshot]\ndir = "{work}/snapshots"\n')
        url = f"http://127.0.0.1:{a.port}"
        run = start("run", ["run", "--config", cfg, "--brokers", addr,
                            "--http", f"127.0.0.1:{a.port}"], {"RUST_LOG": "info"})
        wait_for(lambda: urllib.request.urlopen(url + "/readyz", timeout=2).status == 200,
                 "vitals run")
        sim = start("simulate", ["simulate", "--brokers", addr, "--rate", str(a.rate),
                                 "--accounts", str(a.accounts), "--days", str(a.days),
                                 "--joining", str(a.joining), "--seed", "7"])
        rows = []
        t0 = time.time()
        prev_m = parse(scrape(url + "/metrics"))
        prev_t = t0
        prev_cpu = cpu_seconds(run.pid) or 0.0
        end = t0 + a.minutes * 60
        while time.time() < end:
            time.sleep(max(0.0, min(a.interval, end - time.time())))
            if run.poll() is not None:
                sys.exit(f"soak: vitals run exited with {run.returncode} (see {a.out}/run.log)")
            now = time.time()
            m = parse(scrape(url + "/metrics"))
            cpu = cpu_seconds(run.pid) or 0.0
            h_prev = buckets(prev_m, "vitals_event_to_alert_seconds")
            h_cur = buckets(m, "vitals_event_to_alert_seconds")
            p50, alerts = quantile(h_prev, h_cur, 0.50)
            p99, _ = quantile(h_prev, h_cur, 0.99)
            dt = now - prev_t
            row = {
                "t_s": round(now - t0, 1),
                "rss_run_mb": round((rss_bytes(run.pid) or 0) / 2**20, 1),
                "rss_broker_mb": round((rss_bytes(broker.pid) or 0) / 2**20, 1),
                "lag": int(total(m, "vitals_consumer_lag")),
                "accounts": int(total(m, "vitals_accounts")),
                "events_per_s": round((total(m, "vitals_events_total")
                                       - total(prev_m, "vitals_events_total")) / dt),
                "alerts": alerts,
                "p50_ms": None if p50 is None else round(p50 * 1000, 1),
                "p99_ms": None if p99 is None else round(p99 * 1000, 1),
                "cpu_run": round((cpu - prev_cpu) / dt, 2),
                "simulator_running": sim.poll() is None,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            prev_m, prev_t, prev_cpu = m, now, cpu
        with open(os.path.join(a.out, "soak.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)
        steady = rows[len(rows) // 10:] or rows  # skip the first tenth (warm-up)
        half = len(steady) // 2
        first, second = steady[:half] or steady, steady[half:]

        def mean(rs, k):
            v = [r[k] for r in rs if r[k] is not None]
            return round(sum(v) / len(v), 1) if v else None

        summary = {
            "minutes": a.minutes,
            "joining": a.joining,
            "rate": a.rate,
            "partitions": a.partitions,
            "samples": len(rows),
            "rss_run_mb_first_half": mean(first, "rss_run_mb"),
            "rss_run_mb_second_half": mean(second, "rss_run_mb"),
            "rss_run_mb_max": max(r["rss_run_mb"] for r in rows),
            "accounts_first_half": mean(first, "accounts"),
            "accounts_second_half": mean(second, "accounts"),
            "rss_broker_mb_max": max(r["rss_broker_mb"] for r in rows),
            "lag_first_half": mean(first, "lag"),
            "lag_second_half": mean(second, "lag"),
            "lag_max": max(r["lag"] for r in rows),
            "events_per_s_mean": mean(steady, "events_per_s"),
            "p99_ms_median_of_intervals": sorted(
                r["p99_ms"] for r in steady if r["p99_ms"] is not None
            )[len([r for r in steady if r["p99_ms"] is not None]) // 2]
            if any(r["p99_ms"] is not None for r in steady) else None,
            "p99_ms_max": max((r["p99_ms"] for r in steady if r["p99_ms"] is not None),
                              default=None),
            "cpu_run_mean": mean(steady, "cpu_run"),
        }
        with open(os.path.join(a.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        print(json.dumps(summary, indent=2))
    finally:
        stop_all()


if __name__ == "__main__":
    main()
