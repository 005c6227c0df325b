#!/usr/bin/env python3
"""Helpers of the load scripts (standard library only).

  load.py port                         print a free loopback TCP port
  load.py refold-token                 print a Refold-like session token (HS256 JWT, long expiry)
  load.py es256-jwt KEY_PEM SUB TTL_S  print an ES256 app JWT signed with KEY_PEM (uses openssl)
  load.py proc PID                     print "utime+stime_ticks rss_kib" of a process
  load.py rps WRK_JSON                 print the requests/s of one wrk run
  load.py report RAW_DIR OUT_DIR       summarise a run.sh run: load.json, load.md, chart data
  load.py instructions RAW_DIR OUT_DIR summarise an instructions.sh run
  load.py hs256-jwts SECRET PREFIX N TTL_S        print N HS256 app JWTs, sub PREFIX0 .. PREFIX<N-1>
  load.py metric PORT NAME [LABEL=VALUE]          print the sum of a counter on an admin /metrics
  load.py mint-accounts LOG PREFIX                print mints per account of PREFIX (JSON)
  load.py sequential PORT PATH JWT_FILE OUT_JSON  one GET per JWT, in order, on one keep-alive
                                                  connection; per-request latency (µs)
  load.py miss-hit PORT ADMIN_PORT PATH JWT_FILE CHUNK OUT_JSON
                                                  the same, L1 misses then L1 hits by chunk
  load.py replicas RAW_DIR OUT_DIR                summarise a replicas.sh run
  load.py tls RAW_DIR OUT_DIR                     summarise a tls.sh run: tls.json, tls.md
  load.py publish-section FILE HEADING SECTION_MD BEFORE_HEADING
                                                  put SECTION_MD under HEADING in FILE
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import platform
import re
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_segment(obj) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def cmd_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def cmd_refold_token():
    # Shaped like Refold's session tokens (claims per REFOLD_API.md), about 250 bytes.
    now = int(time.time())
    claims = {
        "org_id": "65f0c0ffee0123456789abcd",
        "linked_account_id": "load-account",
        "environment": "test",
        "iat": now,
        "exp": now + 365 * 86400,
    }
    signing_input = jwt_segment({"alg": "HS256", "typ": "JWT"}) + "." + jwt_segment(claims)
    sig = hmac.new(secrets.token_bytes(32), signing_input.encode(), hashlib.sha256).digest()
    print(signing_input + "." + b64url(sig))


def cmd_hs256_jwts(secret, prefix, n, ttl_s):
    # As `refold-proxy sign-jwt` signs them (no issuer or audience: the bench configs set none).
    now = int(time.time())
    header = jwt_segment({"alg": "HS256", "typ": "JWT"})
    out = []
    for i in range(int(n)):
        signing_input = header + "." + jwt_segment({"sub": f"{prefix}{i}", "iat": now, "exp": now + int(ttl_s)})
        sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
        out.append(signing_input + "." + b64url(sig))
    print("\n".join(out))


def der_to_raw(der: bytes, size: int = 32) -> bytes:
    """ECDSA-Sig-Value (DER SEQUENCE of two INTEGERs) to JOSE's fixed-width r || s."""

    def read_len(i):
        n = der[i]
        if n < 0x80:
            return n, i + 1
        k = n & 0x7F
        return int.from_bytes(der[i + 1 : i + 1 + k], "big"), i + 1 + k

    assert der[0] == 0x30, "not a DER sequence"
    _, i = read_len(1)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02, "not a DER integer"
        n, i = read_len(i + 1)
        out += int.from_bytes(der[i : i + n], "big").to_bytes(size, "big")
        i += n
    return out


def cmd_es256_jwt(key_pem, sub, ttl_s):
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + int(ttl_s)}
    signing_input = jwt_segment({"alg": "ES256", "typ": "JWT"}) + "." + jwt_segment(claims)
    der = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", key_pem],
        input=signing_input.encode(),
        capture_output=True,
        check=True,
    ).stdout
    print(signing_input + "." + b64url(der_to_raw(der)))


def proc_sample(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the ")" closing comm, field 3 (state) is index 0: utime is field 14, stime 15.
    ticks = int(fields[11]) + int(fields[12])
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return ticks, rss


def cmd_proc(pid):
    ticks, rss = proc_sample(pid)
    print(ticks, rss)


# ---------------------------------------------------------------- report

# The targets of a run.sh run whose meta.json names none (runs before refold-hyper existed).
LEGACY_TARGETS = ["direct", "nginx", "refold-hs256", "refold-es256"]
# refold-proxy on its own HTTP/1.1 loop, compared with itself on hyper (fast path off).
FAST, HYPER = "refold-hs256", "refold-hyper"


def refold_targets(targets):
    return [t for t in targets if t.startswith("refold-")]


def base_key(base):
    """The key of a ratio to BASE in a target's `ratios` entry: vs_nginx, vs_refold-hyper."""
    return f"vs_{base}"


def load_json(path):
    with open(path) as f:
        return json.load(f)


def write_result(out, stem, result, md=None):
    """Writes OUT/STEM.json (and OUT/STEM.md when given its text)."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{stem}.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    if md is not None:
        with open(os.path.join(out, f"{stem}.md"), "w") as f:
            f.write(md)


def med(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def oha_figures(doc):
    """Requests, non-2xx, errors and latency percentiles (µs) from oha's JSON output."""
    summary = doc.get("summary", {})
    pct = doc.get("latencyPercentiles", {})
    codes = {int(k): v for k, v in doc.get("statusCodeDistribution", {}).items()}
    errors = sum(doc.get("errorDistribution", {}).values())
    ok = sum(v for k, v in codes.items() if 200 <= k < 300)
    total = sum(codes.values())

    def us(key):
        v = pct.get(key)
        return None if v is None else v * 1e6

    return {
        "requests": total,
        "rps": summary.get("requestsPerSec"),
        "non_2xx": total - ok,
        "errors": errors,
        "p50_us": us("p50"),
        "p99_us": us("p99"),
        "p999_us": us("p99.9"),
    }


def fmt(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def fmt_range(stat, digits=0, unit=""):
    if stat is None:
        return "–"
    return f"{fmt(stat['median'], digits)}{unit} ({fmt(stat['min'], digits)}–{fmt(stat['max'], digits)})"


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = "?"
    try:
        with open("/proc/meminfo") as f:
            mem_gib = f"{int(f.readline().split()[1]) / 2**20:.1f}"
    except OSError:
        pass
    return f"{os.cpu_count()} vCPU ({cpu}), {mem_gib} GiB RAM, Linux {platform.release()}"


def cmd_report(raw, out):
    meta = load_json(os.path.join(raw, "meta.json"))
    runs = meta["runs"]
    targets = meta.get("targets", LEGACY_TARGETS)
    rounds = []  # rounds[r][target] = figures
    problems = []
    for r in range(1, runs + 1):
        row = {}
        for t in targets:
            wrk = load_json(os.path.join(raw, f"r{r}-{t}-wrk.json"))
            oha = oha_figures(load_json(os.path.join(raw, f"r{r}-{t}-oha.json")))
            cpu = load_json(os.path.join(raw, f"r{r}-{t}-cpu.json"))
            hz = meta["clk_tck"]
            fig = {
                "rps": wrk["requests"] / (wrk["duration_us"] / 1e6),
                "wrk_requests": wrk["requests"],
                "wrk_errors": wrk["errors"],
                "wrk_p50_us": wrk["latency_us"]["p50"],
                "wrk_p99_us": wrk["latency_us"]["p99"],
                "open_loop": oha,
                "cpu_us_per_req": None,
                "cpu_us_per_req_open_loop": None,
                "rss_kib_after": cpu.get("rss_after_kib"),
            }
            if cpu.get("closed_ticks") is not None and wrk["requests"]:
                fig["cpu_us_per_req"] = cpu["closed_ticks"] / hz * 1e6 / wrk["requests"]
            if cpu.get("open_ticks") is not None and oha["requests"]:
                fig["cpu_us_per_req_open_loop"] = cpu["open_ticks"] / hz * 1e6 / oha["requests"]
            for kind, n in wrk["errors"].items():
                if n:
                    problems.append(f"round {r} {t}: wrk {kind} errors: {n}")
            if oha["non_2xx"]:
                problems.append(f"round {r} {t}: oha non-2xx: {oha['non_2xx']}")
            if oha["errors"]:
                problems.append(f"round {r} {t}: oha socket errors: {oha['errors']}")
            row[t] = fig
        rounds.append(row)

    summary = {}
    for t in targets:
        col = [row[t] for row in rounds]
        summary[t] = {
            "rps": med([c["rps"] for c in col]),
            "cpu_us_per_req": med([c["cpu_us_per_req"] for c in col]),
            "cpu_us_per_req_open_loop": med([c["cpu_us_per_req_open_loop"] for c in col]),
            "p50_us": med([c["open_loop"]["p50_us"] for c in col]),
            "p99_us": med([c["open_loop"]["p99_us"] for c in col]),
            "p999_us": med([c["open_loop"]["p999_us"] for c in col]),
            "added_p50_us": None,
            "added_p99_us": None,
            "open_loop_rps": med([c["open_loop"]["rps"] for c in col]),
            "rss_idle_kib": meta["rss_idle_kib"].get(t),
            "rss_after_kib": med([c["rss_kib_after"] for c in col]),
            "wrk_errors": sum(sum(c["wrk_errors"].values()) for c in col),
            "non_2xx": sum(c["open_loop"]["non_2xx"] + c["wrk_errors"]["status"] for c in col),
            "socket_errors": sum(
                c["open_loop"]["errors"] + sum(v for k, v in c["wrk_errors"].items() if k != "status")
                for c in col
            ),
        }
        if t != "direct":
            summary[t]["added_p50_us"] = med(
                [row[t]["open_loop"]["p50_us"] - row["direct"]["open_loop"]["p50_us"] for row in rounds]
            )
            summary[t]["added_p99_us"] = med(
                [row[t]["open_loop"]["p99_us"] - row["direct"]["open_loop"]["p99_us"] for row in rounds]
            )

    def ratio(t, base, key):
        vals = []
        for row in rounds:
            a, b = key(row[t], row), key(row[base], row)
            if a is not None and b not in (None, 0):
                vals.append(a / b)
        return med(vals)

    added_p50 = lambda c, row: c["open_loop"]["p50_us"] - row["direct"]["open_loop"]["p50_us"]
    added_p99 = lambda c, row: c["open_loop"]["p99_us"] - row["direct"]["open_loop"]["p99_us"]
    def ratios_to(t, base):
        return {
            "throughput": ratio(t, base, lambda c, row: c["rps"]),
            "cpu_per_req": ratio(t, base, lambda c, row: c["cpu_us_per_req"]),
            "added_p50": ratio(t, base, added_p50),
            "added_p99": ratio(t, base, added_p99),
        }

    ratios = {}
    for t in refold_targets(targets):
        ratios[t] = {
            "vs_nginx": ratios_to(t, "nginx"),
            "vs_direct": {
                "throughput": ratio(t, "direct", lambda c, row: c["rps"]),
            },
        }
    if FAST in targets and HYPER in targets:
        ratios[FAST][base_key(HYPER)] = ratios_to(FAST, HYPER)
    ratios["nginx"] = {"vs_direct": {"throughput": ratio("nginx", "direct", lambda c, row: c["rps"])}}

    for t, n in meta["mints"].items():
        if n != meta["accounts"][t]:
            problems.append(f"{t}: {n} mints for {meta['accounts'][t]} accounts")

    result = {
        "machine": machine(),
        "date": meta["date"],
        "command": meta["command"],
        "settings": meta["settings"],
        "versions": meta["versions"],
        "targets": targets,
        "summary": summary,
        "ratios": ratios,
        "mints": meta["mints"],
        "accounts": meta["accounts"],
        "rounds": rounds,
        "problems": problems,
    }
    write_result(out, "load", result, markdown(result))
    write_chart_data(result, out)
    return problems


def kib_to_mib(stat):
    if stat is None:
        return None
    if isinstance(stat, dict):
        return {k: (v / 1024 if k != "n" else v) for k, v in stat.items()}
    return stat / 1024


HYPER_NOTE = (
    "refold-hyper is refold-hs256 with `server.http1_fast_path = false`: hyper serves every "
    "connection, as before the proxy's own HTTP/1.1 loop, so refold-hs256 / refold-hyper is what "
    "that loop buys."
)


def markdown(res):
    s, settings = res["summary"], res["settings"]
    refold = refold_targets(res["targets"])
    lines = [
        f"Load comparison, {res['date']}, {res['machine']}.",
        "",
    ]
    if settings["runs"] < 5:
        lines += [f"**{settings['runs']} round(s) only: a check that the script works, not figures to quote "
                  "(quote medians of at least 5).**", ""]
    lines += [
        f"Command: `{res['command']}`. {settings['runs']} interleaved round(s) "
        f"({', '.join(res['targets'])} in turn), unpinned. Closed loop: "
        f"`wrk -t1 -c{settings['connections']} -d{settings['duration']}s` (HTTP/1.1 keep-alive). "
        f"Open loop: `oha -q {settings['rate']} -c{settings['connections']} -z {settings['duration']}s -w "
        f"--latency-correction`. Upstream and nginx proxy: one nginx worker each; refold-proxy: "
        f"`server.worker_threads = 1`, `RUST_LOG={settings.get('refold_log', 'warn')}`. Versions: {res['versions']}."
        + (f" {HYPER_NOTE}" if HYPER in res["targets"] else ""),
        "",
        "Medians of the rounds, min–max in brackets. CPU: the proxy process's utime+stime "
        "over the closed-loop run ÷ requests (nginx: its worker). Latency: open loop at "
        f"{settings['rate']} req/s; \"added\" is the target's percentile minus direct's in the "
        "same round.",
        "",
        "| target | req/s (closed loop) | proxy CPU µs/req | p50 µs | p99 µs | p99.9 µs "
        "| added p50 µs | added p99 µs | RSS idle → after MiB | non-2xx | socket errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in res["targets"]:
        x = s[t]
        idle = kib_to_mib(x["rss_idle_kib"])
        after = kib_to_mib(x["rss_after_kib"])
        rss = "–" if idle is None else f"{idle:.1f} → {after['median']:.1f}"
        lines.append(
            f"| {t} | {fmt_range(x['rps'])} | {fmt_range(x['cpu_us_per_req'], 1)} "
            f"| {fmt_range(x['p50_us'])} | {fmt_range(x['p99_us'])} | {fmt_range(x['p999_us'])} "
            f"| {fmt_range(x['added_p50_us'])} | {fmt_range(x['added_p99_us'])} | {rss} "
            f"| {x['non_2xx']} | {x['socket_errors']} |"
        )
    lines += [
        "",
        "Ratios: median of the per-round ratios (min–max). Below 1.0 is better for CPU and "
        "added latency, above 1.0 better for throughput.",
        "",
        "| ratio | throughput | CPU/request | added p50 | added p99 |",
        "| --- | --- | --- | --- | --- |",
    ]
    r = res["ratios"]
    # Each refold-proxy target / nginx, then refold-hs256 / refold-hyper (runs that had both).
    pairs = [(t, "nginx") for t in refold] + [
        (t, base) for t in refold for base in res["targets"] if base_key(base) in r[t] and base not in ("nginx", "direct")
    ]
    for t, base in pairs:
        v = r[t][base_key(base)]
        lines.append(
            f"| {t} / {base} | {fmt_range(v['throughput'], 2)} | {fmt_range(v['cpu_per_req'], 2)} "
            f"| {fmt_range(v['added_p50'], 2)} | {fmt_range(v['added_p99'], 2)} |"
        )
    for t in refold + ["nginx"]:
        lines.append(f"| {t} / direct | {fmt_range(r[t]['vs_direct']['throughput'], 2)} | | | |")
    mints = ", ".join(f"{t} {n} (accounts {res['accounts'][t]})" for t, n in res["mints"].items())
    lines += [
        "",
        f"Mints counted by the upstream: {mints}.",
        "",
        "Checks: " + ("all requests 2xx, no socket errors, mints = accounts." if not res["problems"]
                      else "**FAILED**: " + "; ".join(res["problems"])),
        "",
        "![throughput and latency per target](chart.png)",
        "",
    ]
    return "\n".join(lines)


def write_chart_data(res, out):
    with open(os.path.join(out, "chart.dat"), "w") as f:
        f.write("# target rps rps_min rps_max p50_us p99_us p999_us\n")
        for t in res["targets"]:
            x = res["summary"][t]
            f.write(
                f"{t} {x['rps']['median']:.0f} {x['rps']['min']:.0f} {x['rps']['max']:.0f} "
                f"{x['p50_us']['median']:.1f} {x['p99_us']['median']:.1f} {x['p999_us']['median']:.1f}\n"
            )


# ---------------------------------------------------------------- instructions


def callgrind_total(path):
    """Total instructions (Ir) of a callgrind output file: its `summary:` or `totals:` line."""
    found = {}
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                key, value = line.split()[:2]
                found[key] = int(value)
    total = found.get("summary:", found.get("totals:"))
    if total is None:
        raise SystemExit(f"no summary line in {path}")
    return total


def cmd_instructions(raw, out):
    meta = load_json(os.path.join(raw, "meta.json"))
    n = meta["requests"]
    targets = {}
    problems = []
    for t in meta["targets"]:
        runs = []
        for rep in range(1, meta["repeats"] + 1):
            one = callgrind_total(os.path.join(raw, f"{t}-{rep}-n.callgrind"))
            two = callgrind_total(os.path.join(raw, f"{t}-{rep}-2n.callgrind"))
            runs.append({"ir_n": one, "ir_2n": two, "per_request": (two - one) / n})
        for rep in range(1, meta["repeats"] + 1):
            for size in ("n", "2n"):
                doc = load_json(os.path.join(raw, f"{t}-{rep}-{size}-oha.json"))
                figs = oha_figures(doc)
                if figs["non_2xx"] or figs["errors"]:
                    problems.append(f"{t} repeat {rep} ({size}): non-2xx {figs['non_2xx']}, errors {figs['errors']}")
        targets[t] = {"runs": runs, "per_request": med([x["per_request"] for x in runs])}
    ratio = None
    if "nginx" in targets:
        ratio = {
            t: targets[t]["per_request"]["median"] / targets["nginx"]["per_request"]["median"]
            for t in targets
            if t != "nginx"
        }
    # What the proxy's own HTTP/1.1 loop buys: refold-hs256 on it ÷ on hyper.
    ratios = {}
    if FAST in targets and HYPER in targets:
        ratios[f"{FAST} / {HYPER}"] = targets[FAST]["per_request"]["median"] / targets[HYPER]["per_request"]["median"]
    result = {
        "machine": machine(),
        "date": meta["date"],
        "command": meta["command"],
        "requests": n,
        "warmup": meta["warmup"],
        "targets": targets,
        "ratio_vs_nginx": ratio,
        "versions": meta["versions"],
        "problems": problems,
    }
    if ratios:
        result["ratios"] = ratios
    write_result(out, "instructions", result)
    lines = [
        f"User-space instructions per request, {meta['date']}, {machine()}.",
        "",
        f"Command: `{meta['command']}`. Each proxy runs under `valgrind --tool=callgrind` "
        f"(one worker) and serves {meta['warmup']} warm-up requests plus N requests "
        f"(one connection, keep-alive); it runs once with N = {n} and once with 2N, and "
        "instructions per request = (Ir(2N) − Ir(N)) ÷ N, so start-up, warm-up and shutdown "
        f"cancel out. refold-proxy runs with `RUST_LOG={meta.get('refold_log', 'warn')}`. "
        f"Versions: {meta['versions']}." + (f" {HYPER_NOTE}" if HYPER in targets else ""),
        "",
        "| target | instructions/request | ratio to nginx |",
        "| --- | --- | --- |",
    ]
    for t, x in targets.items():
        r = "1.00" if t == "nginx" else (f"{ratio[t]:.2f}" if ratio else "–")
        lines.append(f"| {t} | {fmt_range(x['per_request'])} | {r} |")
    if ratios:
        lines += ["", "| ratio | instructions/request |", "| --- | --- |"]
        lines += [f"| {name} | {v:.2f} |" for name, v in ratios.items()]
    lines += ["", "Checks: " + ("all requests 2xx." if not problems else "**FAILED**: " + "; ".join(problems)), ""]
    with open(os.path.join(out, "instructions.md"), "w") as f:
        f.write("\n".join(lines))
    return problems


# ---------------------------------------------------------------- replicas


def metric_sum(port, name, label=None):
    """The sum of the samples of counter NAME (its `_total` line) on an admin /metrics whose
    labels include LABEL (`key=value`), or of all of them."""
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    want = None
    if label:
        key, value = label.split("=", 1)
        want = f'{key}="{value}"'
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}_total(?:\{{([^}}]*)\}})? (\S+)", line)
        if m and (want is None or want in (m.group(1) or "").split(",")):
            total += float(m.group(2))
    return total


def mint_accounts(log, prefix):
    """Mints per linked account of PREFIX, from the upstream's mint-accounts.log: one line per
    mint holding the request body, JSON-escaped by nginx."""
    counts = Counter()
    with open(log) as f:
        for line in f:
            m = re.search(r'linked_account_id\\?"\s*:\s*\\?"([^"\\]+)', line)
            if m and m.group(1).startswith(prefix):
                counts[m.group(1)] += 1
    per = sorted(counts.values())
    return {
        "accounts_minted": len(counts),
        "mints": sum(per),
        "min": per[0] if per else 0,
        "max": per[-1] if per else 0,
        "histogram": {str(k): v for k, v in sorted(Counter(per).items())},
    }


def cmd_sequential(port, path, jwt_file, out):
    """One GET per app JWT, in order, each sent after the previous answer, over one
    keep-alive connection: the latency of each as the client sees it, in µs."""
    with open(jwt_file) as f:
        jwts = [line.strip() for line in f if line.strip()]
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
    latencies, statuses = [], Counter()
    for jwt in jwts:
        headers = {"Authorization": f"Bearer {jwt}"}
        t0 = time.perf_counter_ns()
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        latencies.append((time.perf_counter_ns() - t0) / 1000)
        statuses[resp.status] += 1
    conn.close()
    with open(out, "w") as f:
        json.dump({"latency_us": latencies, "statuses": {str(k): v for k, v in statuses.items()}}, f)
        f.write("\n")


def cmd_miss_hit(port, admin_port, path, jwt_file, chunk, out):
    """Through one replica whose L1 lacks these accounts: per chunk of CHUNK accounts, one
    GET per account in turn (L1 misses), then the same chunk again (L1 hits). Alternating by
    chunk, drift in the machine's speed hits both passes alike. Counts the replica's store
    hits during each kind of pass and its mints, between the chunks."""
    with open(jwt_file) as f:
        jwts = [line.strip() for line in f if line.strip()]
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
    passes = {kind: {"latency_us": [], "statuses": Counter(), "store_hits": 0} for kind in ("miss", "hit")}
    mints0 = metric_sum(admin_port, "refold_proxy_token_mints")
    size = int(chunk)
    for start in range(0, len(jwts), size):
        for kind in ("miss", "hit"):
            hits0 = metric_sum(admin_port, "refold_proxy_token_store_reads", "result=hit")
            one = passes[kind]
            for jwt in jwts[start : start + size]:
                t0 = time.perf_counter_ns()
                conn.request("GET", path, headers={"Authorization": f"Bearer {jwt}"})
                resp = conn.getresponse()
                resp.read()
                one["latency_us"].append((time.perf_counter_ns() - t0) / 1000)
                one["statuses"][str(resp.status)] += 1
            one["store_hits"] += int(metric_sum(admin_port, "refold_proxy_token_store_reads", "result=hit") - hits0)
    conn.close()
    result = {
        "miss": passes["miss"],
        "hit": passes["hit"],
        "mints": int(metric_sum(admin_port, "refold_proxy_token_mints") - mints0),
    }
    with open(out, "w") as f:
        json.dump(result, f)
        f.write("\n")
    print(
        f"B read {passes['miss']['store_hits']} of {len(jwts)} first requests' tokens from Redis, "
        f"{passes['hit']['store_hits']} on L1 hits, minted {result['mints']}"
    )


def percentile(values, p):
    """Nearest-rank percentile."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(-(-p * len(ordered) // 100)) - 1))
    return ordered[k]


def cmd_replicas(raw, out):
    meta = load_json(os.path.join(raw, "meta.json"))
    settings = meta["settings"]
    problems = []

    # 1. Mints per account, each store.
    mints = {}
    for store in ("redis", "memory"):
        doc = load_json(os.path.join(raw, f"mints-{store}.json"))
        accounts = settings["accounts"]
        per = doc["per_account"]
        requests = sum(w["requests"] for w in doc["wrk"])
        errors = sum(sum(w["errors"].values()) for w in doc["wrk"])
        mints[store] = {
            "accounts": accounts,
            "requests": requests,
            "errors": errors,
            "upstream_mints": doc["upstream_mints"],
            "replica_mints_ok": doc["replica_mints_ok"],
            "per_account": per,
            "mints_per_account": doc["upstream_mints"] / accounts,
        }
        if errors:
            problems.append(f"mints ({store}): {errors} wrk errors or non-2xx")
        if per["accounts_minted"] != accounts:
            problems.append(f"mints ({store}): {per['accounts_minted']} of {accounts} accounts minted")
        if sum(doc["replica_mints_ok"]) != doc["upstream_mints"]:
            problems.append(
                f"mints ({store}): replicas count {sum(doc['replica_mints_ok'])} mints, the upstream {doc['upstream_mints']}"
            )
    if mints["redis"]["upstream_mints"] != settings["accounts"] or mints["redis"]["per_account"]["max"] != 1:
        problems.append("mints (redis): not exactly one mint per account")

    # 2. L1 miss served from Redis vs L1 hit, per round.
    latency_rounds = []
    pooled = {"miss": [], "hit": []}
    for r in range(1, settings["runs"] + 1):
        warm = load_json(os.path.join(raw, f"latency-r{r}-warm.json"))
        bad = sum(v for k, v in warm["statuses"].items() if not k.startswith("2"))
        if bad:
            problems.append(f"latency round {r} (warm-up through A): {bad} non-2xx")
        doc = load_json(os.path.join(raw, f"latency-r{r}.json"))
        row = {
            "store_hits": doc["miss"]["store_hits"],
            "store_hits_hit_pass": doc["hit"]["store_hits"],
            "mints_on_b": doc["mints"],
        }
        for kind in ("miss", "hit"):
            lat = doc[kind]
            us = lat["latency_us"]
            pooled[kind] += us
            row[kind] = {"p50_us": percentile(us, 50), "p99_us": percentile(us, 99), "n": len(us)}
            bad = sum(v for k, v in lat["statuses"].items() if not k.startswith("2"))
            if bad:
                problems.append(f"latency round {r} ({kind}): {bad} non-2xx")
        row["added_p50_us"] = row["miss"]["p50_us"] - row["hit"]["p50_us"]
        row["added_p99_us"] = row["miss"]["p99_us"] - row["hit"]["p99_us"]
        if row["store_hits"] != settings["latency_accounts"]:
            problems.append(
                f"latency round {r}: replica B read {row['store_hits']} tokens from Redis, not {settings['latency_accounts']}"
            )
        if row["store_hits_hit_pass"]:
            problems.append(f"latency round {r}: replica B read Redis {row['store_hits_hit_pass']} times on L1 hits")
        if row["mints_on_b"]:
            problems.append(f"latency round {r}: replica B minted {row['mints_on_b']} times")
        latency_rounds.append(row)
    latency = {
        "rounds": latency_rounds,
        "miss_p50_us": med([x["miss"]["p50_us"] for x in latency_rounds]),
        "miss_p99_us": med([x["miss"]["p99_us"] for x in latency_rounds]),
        "hit_p50_us": med([x["hit"]["p50_us"] for x in latency_rounds]),
        "hit_p99_us": med([x["hit"]["p99_us"] for x in latency_rounds]),
        "added_p50_us": med([x["added_p50_us"] for x in latency_rounds]),
        "added_p99_us": med([x["added_p99_us"] for x in latency_rounds]),
        "pooled": {
            kind: {"n": len(v), "p50_us": percentile(v, 50), "p99_us": percentile(v, 99)} for kind, v in pooled.items()
        },
    }

    # 3. Throughput, one replica each, interleaved rounds.
    hz = meta["clk_tck"]
    tp_rounds = []
    for r in range(1, settings["runs"] + 1):
        row = {}
        for store in ("redis", "memory"):
            wrk = load_json(os.path.join(raw, f"tp-r{r}-{store}-wrk.json"))
            cpu = load_json(os.path.join(raw, f"tp-r{r}-{store}-cpu.json"))
            errors = sum(wrk["errors"].values())
            if errors:
                problems.append(f"throughput round {r} ({store}): {errors} wrk errors or non-2xx")
            row[store] = {
                "rps": wrk["requests"] / (wrk["duration_us"] / 1e6),
                "requests": wrk["requests"],
                "cpu_us_per_req": cpu["ticks"] / hz * 1e6 / wrk["requests"] if wrk["requests"] else None,
                "wrk_p50_us": wrk["latency_us"]["p50"],
                "wrk_p99_us": wrk["latency_us"]["p99"],
                "store_reads": cpu.get("store_reads"),
            }
        row["ratio_rps"] = row["redis"]["rps"] / row["memory"]["rps"]
        row["ratio_cpu"] = (
            row["redis"]["cpu_us_per_req"] / row["memory"]["cpu_us_per_req"] if row["memory"]["cpu_us_per_req"] else None
        )
        tp_rounds.append(row)
    throughput = {
        "rounds": tp_rounds,
        "redis_rps": med([x["redis"]["rps"] for x in tp_rounds]),
        "memory_rps": med([x["memory"]["rps"] for x in tp_rounds]),
        "redis_cpu_us_per_req": med([x["redis"]["cpu_us_per_req"] for x in tp_rounds]),
        "memory_cpu_us_per_req": med([x["memory"]["cpu_us_per_req"] for x in tp_rounds]),
        "ratio_rps": med([x["ratio_rps"] for x in tp_rounds]),
        "ratio_cpu": med([x["ratio_cpu"] for x in tp_rounds]),
        "redis_store_reads_during": sum(x["redis"]["store_reads"] or 0 for x in tp_rounds),
    }
    if throughput["redis_store_reads_during"]:
        problems.append(
            f"throughput: the redis replica read the store {throughput['redis_store_reads_during']} times (L1 hits expected)"
        )

    result = {
        "machine": machine(),
        "date": meta["date"],
        "command": meta["command"],
        "settings": settings,
        "versions": meta["versions"],
        "mints": mints,
        "latency": latency,
        "throughput": throughput,
        "problems": problems,
    }
    write_result(out, "replicas", result, replicas_markdown(result))
    return problems


def replicas_markdown(res):
    s, m, lat, tp = res["settings"], res["mints"], res["latency"], res["throughput"]
    lines = [
        f"Three refold-proxy replicas sharing one `redis-server` (`tokens.store = \"redis\"`) against three "
        f"with `tokens.store = \"memory\"`, all before one nginx upstream, {res['date']}, {res['machine']}. "
        f"Each replica `server.worker_threads = 1`, `RUST_LOG=warn`, mint pacing out of the way; versions: "
        f"{res['versions']}.",
        "",
        f"Command: `{res['command']}`.",
        "",
    ]
    if s["runs"] < 5:
        lines += [f"**{s['runs']} round(s) only: a check that the script works, not figures to quote "
                  "(quote medians of at least 5).**", ""]
    lines += [
        "### Mints per account per token lifetime",
        "",
        f"{s['accounts']} accounts (one app JWT each), requested for {s['mint_duration']} s through all three "
        f"replicas at once (one `wrk -t1 -c{s['mint_connections']}` per replica, each cycling through every "
        "account in the same order, so each account's first requests reach the three replicas together). "
        "The upstream's tokens live 30 days, so the run is within one lifetime. "
        "Mints counted from the upstream's log of mint bodies, and by the replicas' "
        "`refold_proxy_token_mints_total{outcome=\"ok\"}`.",
        "",
        "| store | requests | accounts minted | mints (upstream) | per replica | mints per account | per-account min–max |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for store in ("redis", "memory"):
        x = m[store]
        lines.append(
            f"| {store} | {x['requests']:,} | {x['per_account']['accounts_minted']} of {x['accounts']} "
            f"| {x['upstream_mints']:,} | {' + '.join(str(int(v)) for v in x['replica_mints_ok'])} "
            f"| **{x['mints_per_account']:.2f}** | {x['per_account']['min']}–{x['per_account']['max']} |"
        )
    lines += [
        "",
        "### Latency of an L1 miss served from Redis",
        "",
        f"Per round: {s['latency_accounts']} new accounts warmed through replica A (minted, stored in Redis), "
        f"then through replica B, {s['latency_chunk']} accounts at a time: one request per account in turn "
        f"(B's L1 misses, Redis hits), then the same {s['latency_chunk']} again (L1 hits), so drift in the "
        "machine's speed hits both alike. One client (Python `http.client`, one keep-alive connection, one "
        "request at a time), the same for both, so its own cost cancels out of the difference. Added = miss − hit "
        "in the same round. B's `refold_proxy_token_store_reads_total{result=\"hit\"}` grew by "
        f"{', '.join(str(int(r['store_hits'])) for r in lat['rounds'])} in the miss passes of the rounds, "
        f"by {', '.join(str(int(r['store_hits_hit_pass'])) for r in lat['rounds'])} in the hit passes, and B "
        f"minted {', '.join(str(int(r['mints_on_b'])) for r in lat['rounds'])} times.",
        "",
        "| request through B | p50 µs | p99 µs |",
        "| --- | --- | --- |",
        f"| L1 miss, Redis hit | {fmt_range(lat['miss_p50_us'])} | {fmt_range(lat['miss_p99_us'])} |",
        f"| L1 hit | {fmt_range(lat['hit_p50_us'])} | {fmt_range(lat['hit_p99_us'])} |",
        f"| **added by the Redis read** | **{fmt_range(lat['added_p50_us'])}** | **{fmt_range(lat['added_p99_us'])}** |",
        "",
        f"Medians of {s['runs']} rounds (min–max). All {lat['pooled']['miss']['n']:,} requests of each kind pooled: "
        f"miss p50 {fmt(lat['pooled']['miss']['p50_us'])} µs, p99 {fmt(lat['pooled']['miss']['p99_us'])} µs; "
        f"hit p50 {fmt(lat['pooled']['hit']['p50_us'])} µs, p99 {fmt(lat['pooled']['hit']['p99_us'])} µs.",
        "",
        "### Throughput, L1 hits",
        "",
        f"One replica of each store, warm (one account, its token in L1), `wrk -t1 -c{s['connections']} "
        f"-d{s['duration']}s`, {s['runs']} interleaved rounds (redis then memory, memory then redis, …) after "
        f"{s['warmup']} s of "
        "warm-up each. CPU: the replica's utime+stime over the run ÷ requests. Ratio: redis ÷ memory per round, "
        "then the median.",
        "",
        "| store | req/s | CPU µs/req |",
        "| --- | --- | --- |",
        f"| redis | {fmt_range(tp['redis_rps'])} | {fmt_range(tp['redis_cpu_us_per_req'], 1)} |",
        f"| memory | {fmt_range(tp['memory_rps'])} | {fmt_range(tp['memory_cpu_us_per_req'], 1)} |",
        f"| **redis ÷ memory** | **{fmt_range(tp['ratio_rps'], 3)}** | {fmt_range(tp['ratio_cpu'], 3)} |",
        "",
        f"Reads of the token store by the redis replica during these rounds: {tp['redis_store_reads_during']} "
        "(L1 hits send Redis nothing).",
        "",
        "Checks: " + ("all requests 2xx, one mint per account with the shared store, every L1 miss served "
                      "from Redis." if not res["problems"] else "**FAILED**: " + "; ".join(res["problems"])),
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- tls.sh

# The targets of a tls.sh run whose meta.json names none (runs before refold-hyper existed).
LEGACY_TLS_TARGETS = ["direct", "nginx", "refold-hs256"]
TLS_PROTOCOLS = ["h1", "h2"]


def h2load_figures(path):
    """Figures of one h2load run (its text output): requests done and succeeded, req/s,
    non-2xx, failures, the TLS parameters and the application protocol it negotiated."""
    with open(path) as f:
        text = f.read()

    def grab(pattern, cast=str, default=None):
        m = re.search(pattern, text, re.MULTILINE)
        return cast(m.group(1)) if m else default

    done = grab(r"^requests: .*?(\d+) done", int, 0)
    succeeded = grab(r"^requests: .*?(\d+) succeeded", int, 0)
    failed = grab(r"^requests: .*?(\d+) failed", int, 0)
    errored = grab(r"^requests: .*?(\d+) errored", int, 0)
    timeout = grab(r"^requests: .*?(\d+) timeout", int, 0)
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.MULTILINE)
    non_2xx = sum(int(x) for x in codes.groups()[1:]) if codes else 0
    return {
        "requests": done,
        "succeeded": succeeded,
        "rps": grab(r"^finished in [\d.]+m?s, ([\d.]+) req/s", float),
        "non_2xx": non_2xx,
        # h2load's "failed" counts 4xx/5xx answers too; those are non_2xx.
        "errors": errored + timeout,
        "failed": failed,
        "protocol": grab(r"^TLS Protocol: (\S+)"),
        "cipher": grab(r"^Cipher: (\S+)"),
        "group": grab(r"^Server Temp Key: (\S+)"),
        "alpn": grab(r"^Application protocol: (\S+)"),
        "mean_request_us": h2load_time_us(grab(r"^time for request:\s+\S+\s+\S+\s+(\S+)")),
    }


def h2load_time_us(v):
    if v is None:
        return None
    for unit, scale in (("us", 1), ("ms", 1e3), ("s", 1e6)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * scale
    return None


def cmd_tls(raw, out):
    meta = load_json(os.path.join(raw, "meta.json"))
    hz = meta["clk_tck"]
    targets = meta.get("targets", LEGACY_TLS_TARGETS)
    rounds, problems = [], []
    for r in range(1, meta["runs"] + 1):
        row = {}
        for t in targets:
            wrk = load_json(os.path.join(raw, f"r{r}-{t}-h1.json"))
            h2 = h2load_figures(os.path.join(raw, f"r{r}-{t}-h2.txt"))
            cpu = load_json(os.path.join(raw, f"r{r}-{t}-cpu.json"))
            h1 = {
                "rps": wrk["requests"] / (wrk["duration_us"] / 1e6),
                "requests": wrk["requests"],
                "errors": wrk["errors"],
                "cpu_us_per_req": None,
            }
            h2["cpu_us_per_req"] = None
            h1["upstream_conns"] = cpu.get("h1_upstream_conns")
            h2["upstream_conns"] = cpu.get("h2_upstream_conns")
            # When a run's callers disconnect at its end, each proxy drops the upstream
            # connections of the requests then in flight and opens as many in the next run
            # (a TLS handshake each). Many more than that is churn: connections closed and
            # reopened under the load, a cost the other proxy may not pay.
            if t != "direct":
                churn = 2 * meta["settings"]["in_flight"]
                for p, fig in (("HTTP/1.1", h1), ("h2", h2)):
                    if (fig["upstream_conns"] or 0) > churn:
                        problems.append(f"round {r} {t}: {fig['upstream_conns']} upstream connections "
                                        f"opened over {p} (more than twice the {churn // 2} in flight)")
            if cpu.get("h1_ticks") is not None and wrk["requests"]:
                h1["cpu_us_per_req"] = cpu["h1_ticks"] / hz * 1e6 / wrk["requests"]
            if cpu.get("h2_ticks") is not None and h2["requests"]:
                h2["cpu_us_per_req"] = cpu["h2_ticks"] / hz * 1e6 / h2["requests"]
            for kind, n in wrk["errors"].items():
                if n:
                    problems.append(f"round {r} {t}: wrk (HTTP/1.1) {kind} errors: {n}")
            if h2["non_2xx"]:
                problems.append(f"round {r} {t}: h2load non-2xx: {h2['non_2xx']}")
            if h2["errors"]:
                problems.append(f"round {r} {t}: h2load failed requests: {h2['errors']}")
            if h2["alpn"] != "h2":
                problems.append(f"round {r} {t}: h2load negotiated {h2['alpn']}, not h2")
            settings = meta["settings"]
            if (h2["protocol"], h2["cipher"], h2["group"]) != ("TLSv1.3", settings["suite"], settings["group"]):
                problems.append(f"round {r} {t}: h2load negotiated {h2['protocol']} {h2['cipher']} {h2['group']}")
            row[t] = {"h1": h1, "h2": h2}
        rounds.append(row)

    summary = {}
    for t in targets:
        summary[t] = {}
        for p in TLS_PROTOCOLS:
            col = [row[t][p] for row in rounds]
            summary[t][p] = {
                "rps": med([c["rps"] for c in col]),
                "cpu_us_per_req": med([c["cpu_us_per_req"] for c in col]),
            }
        summary[t]["upstream_conns"] = {
            p: sum(row[t][p]["upstream_conns"] or 0 for row in rounds) for p in TLS_PROTOCOLS
        }
        summary[t]["non_2xx"] = sum(row[t]["h1"]["errors"]["status"] + row[t]["h2"]["non_2xx"] for row in rounds)
        summary[t]["socket_errors"] = sum(
            sum(v for k, v in row[t]["h1"]["errors"].items() if k != "status") + row[t]["h2"]["errors"]
            for row in rounds
        )

    def ratio(t, base, p, key):
        vals = []
        for row in rounds:
            a, b = row[t][p][key], row[base][p][key]
            if a is not None and b not in (None, 0):
                vals.append(a / b)
        return med(vals)

    refold = refold_targets(targets)
    # Each refold-proxy target / nginx; refold-hs256 / refold-hyper (what the proxy's own
    # HTTP/1.1 loop buys; over h2 both are hyper); every proxy / direct.
    pairs = [(t, "nginx") for t in refold]
    if FAST in targets and HYPER in targets:
        pairs.append((FAST, HYPER))
    direct_pairs = [(t, "direct") for t in refold + ["nginx"]] if "direct" in targets else []
    ratios = {}
    for p in TLS_PROTOCOLS:
        ratios[p] = {}
        for t, base in pairs:
            ratios[p][f"{t} / {base}"] = {
                "throughput": ratio(t, base, p, "rps"),
                "cpu_per_req": ratio(t, base, p, "cpu_us_per_req"),
            }
        for t, base in direct_pairs:
            ratios[p][f"{t} / {base}"] = {"throughput": ratio(t, base, p, "rps")}

    negotiated = meta["negotiated"]
    want = f"TLSv1.3 {meta['settings']['suite']} {meta['settings']['group']}"
    if negotiated["wrk"] != want:
        problems.append(f"wrk offers first {negotiated['wrk']!r}, not {want!r}")
    for t, n in meta["mints"].items():
        if n != meta["accounts"][t]:
            problems.append(f"{t}: {n} mints for {meta['accounts'][t]} accounts")

    result = {
        "machine": machine(),
        "date": meta["date"],
        "command": meta["command"],
        "settings": meta["settings"],
        "versions": meta["versions"],
        "negotiated": negotiated,
        "targets": targets,
        "summary": summary,
        "ratios": ratios,
        "mints": meta["mints"],
        "accounts": meta["accounts"],
        "rounds": rounds,
        "problems": problems,
    }
    write_result(out, "tls", result, tls_markdown(result))
    return problems


def tls_markdown(res):
    s, st = res["summary"], res["settings"]
    lines = [
        f"TLS 1.3 on both legs, {res['date']}, {res['machine']}. Versions: {res['versions']}.",
        "",
        f"Command: `{res['command']}`.",
        "",
    ]
    if st["runs"] < 5:
        lines += [f"**{st['runs']} round(s) only: a check that the script works, not figures to quote "
                  "(quote medians of at least 5).**", ""]
    lines += [
        f"{st['runs']} interleaved round(s) ({', '.join(res['targets'])} in turn; each HTTP/1.1 then h2), "
        f"unpinned, after {st['warmup']} s of warm-up each. Callers over HTTPS: HTTP/1.1 with "
        f"`wrk -t1 -c{st['connections']} -d{st['duration']}s`, each request carrying the next of "
        f"{st['accounts']:,} app JWTs; h2 with `h2load -t1 -c{st['connections']} -m{st['streams']} "
        f"-D{st['duration']}` ({st['streams']} stream(s) per connection), every request carrying one app JWT "
        "(h2load sends one header set). The upstream (nginx) over HTTPS, HTTP/1.1; both proxies verify it "
        "with the test CA and keep connections alive. Every leg TLS 1.3, "
        f"`{st['suite']}`, {st['group']}: wrk offers first `{res['negotiated']['wrk']}`, h2load negotiated "
        f"`{res['negotiated']['h2load']}`, the upstream and the nginx proxy accept nothing else. "
        "One worker each: nginx `worker_processes 1`, refold-proxy `server.worker_threads = 1`, "
        f"`RUST_LOG={st.get('refold_log', 'warn')}`."
        + (f" {HYPER_NOTE} Over h2 both are hyper's (the loop serves HTTP/1.1 only)." if HYPER in res["targets"] else ""),
        "",
        "Medians of the rounds, min–max in brackets. CPU: the proxy process's utime+stime over the run "
        "÷ requests (nginx: its worker). Upstream connections: opened to the upstream during the "
        "rounds (HTTP/1.1 / h2 runs, summed; from its stub_status): up to the requests in flight per run "
        "for a proxy (those dropped when the previous run's callers went away), the callers' own for "
        "direct.",
        "",
        "| target | HTTP/1.1 req/s | HTTP/1.1 CPU µs/req | h2 req/s | h2 CPU µs/req | upstream connections "
        "| non-2xx | socket errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in res["targets"]:
        x = s[t]
        lines.append(
            f"| {t} | {fmt_range(x['h1']['rps'])} | {fmt_range(x['h1']['cpu_us_per_req'], 1)} "
            f"| {fmt_range(x['h2']['rps'])} | {fmt_range(x['h2']['cpu_us_per_req'], 1)} "
            f"| {x['upstream_conns']['h1']} / {x['upstream_conns']['h2']} "
            f"| {x['non_2xx']} | {x['socket_errors']} |"
        )
    lines += [
        "",
        "Ratios: median of the per-round ratios (min–max). Above 1.0 is better for throughput, below "
        "1.0 for CPU/request.",
        "",
        "| ratio | HTTP/1.1 throughput | HTTP/1.1 CPU/request | h2 throughput | h2 CPU/request |",
        "| --- | --- | --- | --- | --- |",
    ]
    r = res["ratios"]
    for name in r["h1"]:
        h1, h2 = r["h1"][name], r["h2"][name]
        lines.append(
            f"| {name} | {fmt_range(h1['throughput'], 2)} | {fmt_range(h1.get('cpu_per_req'), 2)} "
            f"| {fmt_range(h2['throughput'], 2)} | {fmt_range(h2.get('cpu_per_req'), 2)} |"
        )
    mints = ", ".join(f"{t} {n} (accounts {res['accounts'][t]})" for t, n in res["mints"].items())
    lines += [
        "",
        f"Mints counted by the upstream: {mints}.",
        "",
        "Checks: " + ("all requests 2xx, no socket errors, h2 and the one suite negotiated, no upstream "
                      "connection churn, mints = accounts."
                      if not res["problems"] else "**FAILED**: " + "; ".join(res["problems"])),
        "",
    ]
    return "\n".join(lines)


def cmd_publish_section(path, heading, section_md, before):
    """Put the text of SECTION_MD under HEADING in FILE: in place of the section there (up to
    the next `## ` heading), else before the BEFORE heading, else at the end."""
    with open(path) as f:
        doc = f.read().split("\n")
    with open(section_md) as f:
        body = f.read().rstrip("\n").split("\n")
    block = [heading, ""] + body + [""]
    if heading in doc:
        start = doc.index(heading)
        end = next((i for i in range(start + 1, len(doc)) if doc[i].startswith("## ")), len(doc))
        doc[start:end] = block
    elif before in doc:
        i = doc.index(before)
        doc[i:i] = block
    else:
        while doc and doc[-1] == "":
            doc.pop()
        doc += [""] + block
    with open(path, "w") as f:
        f.write("\n".join(doc).rstrip("\n") + "\n")


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "port":
        cmd_port()
    elif cmd == "refold-token":
        cmd_refold_token()
    elif cmd == "es256-jwt":
        cmd_es256_jwt(*args)
    elif cmd == "proc":
        cmd_proc(*args)
    elif cmd == "rps":
        doc = load_json(args[0])
        errors = sum(doc["errors"].values())
        print(f"{doc['requests'] / doc['duration_us'] * 1e6:,.0f} req/s, {errors} errors")
    elif cmd == "report":
        problems = cmd_report(*args)
        for p in problems:
            print(f"PROBLEM: {p}", file=sys.stderr)
        return 1 if problems else 0
    elif cmd == "hs256-jwts":
        cmd_hs256_jwts(*args)
    elif cmd == "metric":
        print(int(metric_sum(*args)))
    elif cmd == "mint-accounts":
        print(json.dumps(mint_accounts(*args)))
    elif cmd == "sequential":
        cmd_sequential(*args)
    elif cmd == "miss-hit":
        cmd_miss_hit(*args)
    elif cmd == "publish-section":
        cmd_publish_section(*args)
    elif cmd == "replicas":
        problems = cmd_replicas(*args)
        for p in problems:
            print(f"PROBLEM: {p}", file=sys.stderr)
        return 1 if problems else 0
    elif cmd == "tls":
        problems = cmd_tls(*args)
        for p in problems:
            print(f"PROBLEM: {p}", file=sys.stderr)
        return 1 if problems else 0
    elif cmd == "instructions":
        problems = cmd_instructions(*args)
        for p in problems:
            print(f"PROBLEM: {p}", file=sys.stderr)
        return 1 if problems else 0
    else:
        raise SystemExit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
