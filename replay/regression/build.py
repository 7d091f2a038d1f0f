#!/usr/bin/env python3
"""Builds the regression captures from the shared captures in ../captures (see README.md).

    python3 replay/regression/build.py

mixed.jsonl     every request of ../captures/*.jsonl, interleaved by time (as they arrived), with
                an `id` naming the source file and line (e.g. "hydra-9.4-http-post-form:12").
login-gap.jsonl the Chromium login POST of ../captures, sent 15 times 100 ms apart from one
                address, then 3 more times three hours later.
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


mixed()
login_gap()
