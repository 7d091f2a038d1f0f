#!/usr/bin/env python3
"""Seed the fuzz corpora (fuzz/corpus/<target>/) from the repository's own
captures, rule files, configurations and test inputs. Run from anywhere;
it rewrites the corpus folders. The committed corpus is its output."""

import json
import pathlib
import shutil

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"


def target(name):
    folder = CORPUS / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def write(folder, name, data):
    (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def records():
    for capture in sorted((ROOT / "replay" / "captures").glob("*.jsonl")):
        lines = [line for line in capture.read_text().splitlines() if line.strip()]
        yield capture.stem, lines


def raw_head(record):
    lines = [f"{record['method']} {record['target']} {record.get('version', 'HTTP/1.1')}"]
    lines += [f"{name}: {value}" for name, value in record["headers"]]
    body = record.get("body") or ""
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


# Capture lines: each capture's first lines, and a few mixed files.
folder = target("capture_lines")
for stem, lines in records():
    write(folder, f"{stem}.jsonl", "\n".join(lines[:4]) + "\n")
for regression in sorted((ROOT / "replay" / "regression").glob("*.jsonl")):
    if not regression.name.endswith(".expect.jsonl"):
        lines = regression.read_text().splitlines()[:6]
        write(folder, regression.name, "\n".join(lines) + "\n")

# Request heads: the first byte is where the recorder's input is split.
folder = target("request_head")
for stem, lines in records():
    for index, line in enumerate(lines[:3]):
        head = raw_head(json.loads(line))
        write(folder, f"{stem}-{index}", bytes([len(head) // 2 % 256]) + head)
write(folder, "chunked", b"\x20POST /login HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
write(folder, "h2-preface", b"\x05PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

# HAR: the test suite's document, and one built from a capture.
folder = target("import_har")
entries = []
for stem, lines in records():
    record = json.loads(lines[0])
    entries.append({
        "startedDateTime": "2026-11-29T01:40:00.000Z",
        "request": {
            "method": record["method"],
            "url": "https://shop.example" + record["target"],
            "httpVersion": record.get("version", "HTTP/1.1"),
            "headers": [{"name": n, "value": v} for n, v in record["headers"]],
            **({"postData": {"mimeType": "application/x-www-form-urlencoded", "text": record["body"]}} if record.get("body") else {}),
        },
        "response": {"status": record.get("status", 200)},
    })
write(folder, "captures.har", json.dumps({"log": {"version": "1.2", "creator": {"name": "seed", "version": "1"}, "entries": entries}}))

# Access logs: combined-format lines from the importer's tests.
folder = target("import_nginx")
write(folder, "combined.log", '203.0.113.7 - - [29/Nov/2026:02:27:44 +0100] "POST /login?x=1 HTTP/1.1" 401 23 "https://shop.example/" "Mozilla/5.0 (\\x22quoted\\x22)" "extra"\n')
write(folder, "mixed.log", '2001:db8::1 - bob [29/Nov/2026:01:27:44 +0000] "GET / HTTP/2.0" 200 5 "-" "-"\n198.51.100.1 - - [29/Nov/2026:01:27:44 +0000] "-" 400 0 "-" "-"\ngarbage\n')

# Configurations: the example and the regression set's.
folder = target("config")
write(folder, "example.toml", (ROOT / "palisade.example.toml").read_bytes())
write(folder, "regression.toml", (ROOT / "replay" / "regression" / "palisade.toml").read_bytes())
write(folder, "limits.toml", "[limits]\nmax_headers = 100\nmax_header_bytes = 16384\n[timeouts]\nidle_ms = 60000\n")

# Signature rule files: the shipped ones.
folder = target("signatures")
for rules in sorted((ROOT / "signatures").rglob("*.toml")):
    write(folder, rules.name, rules.read_bytes())
