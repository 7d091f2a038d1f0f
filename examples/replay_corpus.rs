//! Writes a large capture for measuring `palisade replay`: the requests of
//! `replay/captures/*.jsonl`, interleaved by time, repeated pass after pass
//! until there are enough. Each pass is moved later in time (by the span
//! of the captures plus a second) and gets its own client addresses (the
//! last 16 bits of each address mixed with the pass number), so counters
//! see many clients rather than one replayed 3,000 times.
//!
//! ```sh
//! cargo run --release --example replay_corpus -- /tmp/corpus.jsonl 1000000
//! cargo build --release && time target/release/palisade replay /tmp/corpus.jsonl
//! ```
//!
//! Keep the output out of the repository: a million requests are ~700 MB
//! (a `.gz` name writes gzip).

use std::net::IpAddr;
use std::path::PathBuf;

use palisade::capture::{CaptureRecord, read_capture};

fn main() {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "/tmp/replay-corpus.jsonl".into()));
    let wanted: usize = args.next().map_or(1_000_000, |n| n.parse().expect("a request count"));
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("replay/captures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("replay/captures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut base: Vec<CaptureRecord> = Vec::new();
    for file in &files {
        let (records, bad) = read_capture(std::io::BufReader::new(std::fs::File::open(file).expect("capture")));
        assert!(bad.is_empty(), "{}: {bad:?}", file.display());
        base.extend(records);
    }
    base.sort_by(|a, b| a.ts.total_cmp(&b.ts));
    let first = base.first().expect("requests").ts;
    let span = base.last().expect("requests").ts - first + 1.0;
    let records = (0..wanted).map(|n| {
        let pass = n / base.len();
        let mut record = base[n % base.len()].clone();
        record.ts = ((record.ts + span * pass as f64) * 1e6).round() / 1e6;
        record.client_ip = mix(record.client_ip, pass as u16);
        record
    });
    let written = palisade::capture::write::write_records(&out, records.collect::<Vec<_>>().iter())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
    eprintln!("{written} requests written to {}", out.display());
}

/// The address with its last 16 bits mixed with the pass number.
fn mix(ip: IpAddr, pass: u16) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let low = u16::from_be_bytes([c, d]) ^ pass.wrapping_mul(40_503);
            let [c, d] = low.to_be_bytes();
            IpAddr::from([a, b, c, d])
        }
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[7] ^= pass.wrapping_mul(40_503);
            IpAddr::from(segments)
        }
    }
}
