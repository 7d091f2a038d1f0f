#!/usr/bin/env python3
"""Builds the regression captures from the shared captures in ../captures (see README.md).

    python3 replay/regression/build.py

mixed.jsonl     every request of ../captures/*.jsonl, interleaved by time (as they arrived), with
                an `id` naming the source file and line (e.g. "hydra-9.4-http-post-form:12").
login-gap.jsonl the Chromium login POST of ../captures, sent 15 times 100 ms apart from one
                address, then 3 more times three hours later.
card-testing.jsonl  card testing on the payments route, labelled, with its expectations in
                card-testing.expect.jsonl: a script trying cards from one address, a distributed
                run from 60 addresses with one HTTP client, 30 customers paying (one in five after
                a decline) and the demo partner's payouts. Bodies are as capture mode records
                them: card number, expiry and CVV redacted; the upstream's status (402 declined,
                200 approved) is what palisade learns from.
"""
import copy
import glob
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
CAPTURES = os.path.join(HERE, "..", "captures")


def records(path):
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                yield number, json.loads(line)


def write(name, rows):
    with open(os.path.join(HERE, name), "w") as f:
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n")


def mixed():
    rows = []
    for path in sorted(glob.glob(os.path.join(CAPTURES, "*.jsonl"))):
        stem = os.path.basename(path)[: -len(".jsonl")]
        for number, record in records(path):
            record["id"] = f"{stem}:{number}"
            rows.append(record)
    rows.sort(key=lambda r: r["ts"])  # stable: ties keep file order
    write("mixed.jsonl", rows)


def login_gap():
    login = next(
        r for _, r in records(os.path.join(CAPTURES, "chromium-156-human-login.jsonl"))
        if r["method"] == "POST" and r.get("status") == 200
    )
    start = 1_795_916_406.0
    rows = []
    for i in range(15):
        row = copy.deepcopy(login)
        row["ts"] = round(start + i * 0.1, 3)
        rows.append(row)
    for i in range(3):
        row = copy.deepcopy(login)
        row["ts"] = round(start + 3 * 3600 + i * 10.0, 3)
        rows.append(row)
    for number, row in enumerate(rows, 1):
        row["id"] = f"login-gap:{number}"
    write("login-gap.jsonl", rows)


CHROME = [
    ["Host", "shop.example"],
    ["sec-ch-ua", "\"Chromium\";v=\"156\", \"Not)A;Brand\";v=\"8\""],
    ["sec-ch-ua-mobile", "?0"],
    ["sec-ch-ua-platform", "\"Linux\""],
    ["User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"],
    ["Content-Type", "application/json"],
    ["Accept", "application/json"],
    ["Origin", "https://shop.example"],
    ["Sec-Fetch-Site", "same-origin"],
    ["Sec-Fetch-Mode", "cors"],
    ["Sec-Fetch-Dest", "empty"],
    ["Referer", "https://shop.example/checkout"],
    ["Accept-Encoding", "gzip, deflate, br, zstd"],
    ["Accept-Language", "en-GB,en;q=0.9"],
]
PYTHON = [
    ["Host", "shop.example"],
    ["User-Agent", "python-requests/2.34.2"],
    ["Accept-Encoding", "gzip, deflate"],
    ["Accept", "*/*"],
    ["Connection", "keep-alive"],
    ["Content-Type", "application/json"],
]
GO = [
    ["Host", "shop.example"],
    ["User-Agent", "Go-http-client/1.1"],
    ["Content-Type", "application/json"],
    ["Accept-Encoding", "gzip"],
]


def payment_body(amount):
    card = {"number": "<redacted>", "exp_month": "<redacted>", "exp_year": "<redacted>", "cvc": "<redacted>"}
    return json.dumps({"amount": amount, "currency": "eur", "card": card}, separators=(",", ":"))


def card_testing():
    start = 1_795_920_000.0
    rows = []

    def row(ts, ip, headers, amount, status, label, source, kind):
        body = payment_body(amount)
        headers = headers + [["Content-Length", str(len(body))]]
        rows.append({
            "ts": round(ts, 3), "client_ip": ip, "method": "POST", "target": "/api/payments/charges",
            "version": "HTTP/1.1", "headers": headers, "body": body, "status": status,
            "label": label, "source": source, "kind": kind,
        })

    for c in range(30):
        headers = CHROME + [["X-User-Id", f"customer-{c}"]]
        ts = start + c * 6.0
        if c % 5 == 2:
            # A mistyped expiry first: declined, then paid.
            row(ts, f"100.64.20.{c + 1}", headers, "24.99", 402, "human", "customer, Chrome 156", "customer")
            ts += 20.0
        row(ts, f"100.64.20.{c + 1}", headers, "24.99", 200, "human", "customer, Chrome 156", "customer")
    for i in range(40):
        status = 200 if i in (17, 33) else 402
        row(start + 2.0 + i * 1.5, "203.0.113.66", PYTHON, "1.00", status, "bot",
            "card testing script from one address, python-requests", "single")
    for i in range(60):
        status = 200 if i in (25, 48) else 402
        row(start + 3.0 + i * 2.0, f"198.18.{i}.77", GO, "0.50", status, "bot",
            "distributed card testing, one Go client from 60 addresses", "distributed")
    for i in range(50):
        headers = PYTHON + [["X-API-Key", "pk_live_partner_demo"]]
        row(start + 1.0 + i * 3.0, "203.0.113.200", headers, "0.01", 402 if i % 10 == 0 else 200, "partner",
            "the demo partner's payouts", "partner")
    rows.sort(key=lambda r: r["ts"])
    seen = {}
    expectations = []
    for number, r in enumerate(rows, 1):
        kind = r.pop("kind")
        seen[kind] = seen.get(kind, 0) + 1
        r["id"] = f"card-testing:{number}"
        n = seen[kind]
        if kind in ("customer", "partner"):
            expectations.append({"id": r["id"], "action": ["allow", "log"], "note": f"{kind} payment {n}"})
        elif kind == "single" and n >= 8:
            expectations.append({"id": r["id"], "action": ["rate_limit", "block"],
                                 "note": f"card test from one address, attempt {n}"})
        elif kind == "distributed" and n >= 20:
            expectations.append({"id": r["id"], "action": ["rate_limit", "block"],
                                 "note": f"distributed card test, attempt {n}"})
    write("card-testing.jsonl", rows)
    with open(os.path.join(HERE, "card-testing.expect.jsonl"), "w") as f:
        f.write("# Expected actions for card-testing.jsonl under palisade.toml (written by build.py):\n"
                "# customers and the partner get through; the script from one address is stopped from its\n"
                "# 8th attempt, the distributed run from its 20th.\n")
        for e in expectations:
            f.write(json.dumps(e, separators=(",", ":")) + "\n")


mixed()
login_gap()
card_testing()
