//! Reading captures: plain or gzip (recognised by its magic bytes, whatever
//! the file is called), one line at a time, bad lines reported by number.
//! A line is read into memory only up to [`MAX_LINE_BYTES`]: a 1 MiB gzip
//! that expands to one 1 GiB line once took 1 GB of memory; now the rest of
//! such a line is read past without keeping it, and the line is bad.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::record::CaptureRecord;

/// A capture line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// What a reader does at a bad line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OnBadLine {
    /// Report it and go on with the next line.
    #[default]
    Skip,
    /// Report it and read no further.
    Stop,
}

impl OnBadLine {
    /// How a report says what was done: "skipped" or "stopped".
    pub fn done(self) -> &'static str {
        match self {
            OnBadLine::Skip => "skipped",
            OnBadLine::Stop => "stopped",
        }
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Longest capture line read. A record is one request: a head palisade
/// accepts is at most 1 MiB (`limits.max_header_bytes`), an inspected body
/// at most 16 MiB, base64 makes that a third larger.
pub const MAX_LINE_BYTES: usize = 24 * 1024 * 1024;

/// Open a capture file, decompressing gzip. `read_bytes`, when given,
/// counts the bytes read from the file itself (for a progress bar).
pub fn open_capture(path: &Path, read_bytes: Option<Arc<AtomicU64>>) -> io::Result<Box<dyn BufRead + Send>> {
    let file = File::open(path)?;
    let counted = Counting { inner: file, count: read_bytes };
    let mut buffered = BufReader::with_capacity(256 * 1024, counted);
    let gzip = buffered.fill_buf()?.starts_with(&GZIP_MAGIC);
    if gzip {
        Ok(Box::new(BufReader::with_capacity(256 * 1024, flate2::bufread::MultiGzDecoder::new(buffered))))
    } else {
        Ok(Box::new(buffered))
    }
}

struct Counting<R> {
    inner: R,
    count: Option<Arc<AtomicU64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(count) = &self.count {
            count.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// The non-blank lines of a capture, with their 1-based numbers. A line
/// that is not UTF-8, or that cannot be read, comes back as a [`BadLine`].
pub struct CaptureLines<R> {
    reader: R,
    line: usize,
    buf: Vec<u8>,
    /// Bytes of the reader's buffer the last line (read in place) took,
    /// consumed at the next call.
    in_place: usize,
    failed: bool,
    max_line: usize,
}

impl<R: BufRead> CaptureLines<R> {
    pub fn new(reader: R) -> Self {
        Self::with_max_line(reader, MAX_LINE_BYTES)
    }

    /// Lines longer than `max_line` bytes are bad lines (tests use a small one).
    pub fn with_max_line(reader: R, max_line: usize) -> Self {
        CaptureLines { reader, line: 0, buf: Vec::with_capacity(4096), in_place: 0, failed: false, max_line }
    }

    /// Read one line into `buf`, keeping at most `max_line + 1` bytes of it;
    /// the rest of a longer line is consumed and dropped. Returns the bytes
    /// the line had (0 at the end).
    fn read_line(&mut self) -> io::Result<usize> {
        let limit = self.max_line as u64 + 1;
        let kept = (&mut self.reader).take(limit).read_until(b'\n', &mut self.buf)?;
        if (kept as u64) < limit || self.buf.last() == Some(&b'\n') {
            return Ok(kept);
        }
        let mut skipped = 0;
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                return Ok(kept + skipped);
            }
            let (used, done) = match available.iter().position(|&b| b == b'\n') {
                Some(at) => (at + 1, true),
                None => (available.len(), false),
            };
            self.reader.consume(used);
            skipped += used;
            if done {
                return Ok(kept + skipped);
            }
        }
    }

    /// The next non-blank line; `None` at the end (or after a read error,
    /// which is returned once).
    pub fn next_line(&mut self) -> Option<Result<(usize, &str), BadLine>> {
        // The line handed out last was read where it lay in the reader's
        // buffer: step past it now that it is no longer borrowed.
        self.reader.consume(std::mem::take(&mut self.in_place));
        let in_place = loop {
            if self.failed {
                return None;
            }
            // A whole line in the reader's buffer is read where it is;
            // copying each line out was most of reading it. One that runs
            // past the buffer's end, or is too long, is copied (below).
            match self.reader.fill_buf() {
                Ok(available) => {
                    if let Some(end) = memchr::memchr(b'\n', available).filter(|end| *end <= self.max_line) {
                        self.line += 1;
                        if available[..end].iter().all(u8::is_ascii_whitespace) {
                            self.reader.consume(end + 1);
                            continue;
                        }
                        self.in_place = end + 1;
                        break true;
                    }
                }
                // `read_line` retries these, as `read_until` does.
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    self.failed = true;
                    self.line += 1;
                    return Some(Err(BadLine { line: self.line, reason: format!("read error: {error}") }));
                }
            }
            self.buf.clear();
            match self.read_line() {
                Ok(0) => return None,
                Ok(length) if length > self.buf.len() || self.buf.trim_ascii_end().len() > self.max_line => {
                    self.line += 1;
                    self.buf.clear();
                    let reason = format!("line of {length} bytes; at most {} are read", self.max_line);
                    return Some(Err(BadLine { line: self.line, reason }));
                }
                Ok(_) => {}
                Err(error) => {
                    self.failed = true;
                    self.line += 1;
                    return Some(Err(BadLine { line: self.line, reason: format!("read error: {error}") }));
                }
            }
            self.line += 1;
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            break false;
        };
        let line = self.line;
        let bytes = match in_place {
            // The buffer holds what the first look found until it is consumed.
            true => self.reader.fill_buf().ok().and_then(|available| available.get(..self.in_place)),
            false => Some(&self.buf[..]),
        };
        let Some(bytes) = bytes else {
            self.failed = true;
            return Some(Err(BadLine { line, reason: "read error: the reader's buffer changed".into() }));
        };
        // With its newline, as a copied line is checked: an incomplete
        // character at the end is reported as the same error either way.
        Some(match std::str::from_utf8(bytes) {
            Ok(text) => Ok((line, text.trim_end_matches(['\n', '\r']))),
            Err(error) => Err(BadLine { line, reason: format!("not UTF-8: {error}") }),
        })
    }

    pub fn lines_read(&self) -> usize {
        self.line
    }
}

/// Everything a capture held: its records, the bad lines, and the line
/// the reader stopped at, when it did.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    /// Each record with its line number.
    pub records: Vec<(usize, CaptureRecord)>,
    pub bad: Vec<BadLine>,
    pub stopped_at: Option<usize>,
}

/// Read every record, handling bad lines as `on_bad` says.
pub fn read_capture_with(reader: impl BufRead, on_bad: OnBadLine) -> ReadOutcome {
    let mut lines = CaptureLines::new(reader);
    let mut outcome = ReadOutcome::default();
    while let Some(next) = lines.next_line() {
        let bad = match next {
            Ok((line, text)) => match serde_json::from_str::<CaptureRecord>(text) {
                Ok(record) => {
                    outcome.records.push((line, record));
                    continue;
                }
                Err(error) => BadLine { line, reason: error.to_string() },
            },
            Err(bad) => bad,
        };
        let line = bad.line;
        outcome.bad.push(bad);
        if on_bad == OnBadLine::Stop {
            outcome.stopped_at = Some(line);
            break;
        }
    }
    outcome
}

/// Read every record; bad lines are returned separately (and skipped),
/// never dropped silently.
pub fn read_capture(reader: impl BufRead) -> (Vec<CaptureRecord>, Vec<BadLine>) {
    let outcome = read_capture_with(reader, OnBadLine::Skip);
    (outcome.records.into_iter().map(|(_, record)| record).collect(), outcome.bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const GOOD: &str = r#"{"ts":1.0,"client_ip":"192.0.2.1","method":"GET","target":"/","headers":[]}"#;

    #[test]
    fn bad_lines_are_numbered_and_skipped_or_stopped_at() {
        let text = format!("{GOOD}\n\nnot json\n{{\"ts\":2}}\n{GOOD}\n");
        let skipped = read_capture_with(text.as_bytes(), OnBadLine::Skip);
        assert_eq!(skipped.records.iter().map(|(line, _)| *line).collect::<Vec<_>>(), vec![1, 5]);
        assert_eq!(skipped.bad.iter().map(|b| b.line).collect::<Vec<_>>(), vec![3, 4]);
        assert!(skipped.bad[1].reason.contains("missing field"), "{}", skipped.bad[1]);
        assert_eq!(skipped.stopped_at, None);
        let stopped = read_capture_with(text.as_bytes(), OnBadLine::Stop);
        assert_eq!((stopped.records.len(), stopped.bad.len(), stopped.stopped_at), (1, 1, Some(3)));
    }

    #[test]
    fn non_utf8_lines_are_bad_and_the_next_line_still_reads() {
        let mut bytes = b"\xff\xfe\n".to_vec();
        bytes.extend_from_slice(GOOD.as_bytes());
        let outcome = read_capture_with(&bytes[..], OnBadLine::Skip);
        assert_eq!(outcome.bad[0].line, 1);
        assert!(outcome.bad[0].reason.contains("UTF-8"));
        assert_eq!(outcome.records.len(), 1);
    }

    #[test]
    fn an_overlong_line_is_bad_and_not_kept() {
        let long = "x".repeat(5000);
        let text = format!("{GOOD}\n{long}\n{GOOD}\n{long}");
        let mut lines = CaptureLines::with_max_line(text.as_bytes(), 1000);
        assert_eq!(lines.next_line().unwrap().unwrap().0, 1);
        let bad = lines.next_line().unwrap().unwrap_err();
        assert_eq!(bad.line, 2);
        assert!(bad.reason.contains("5001 bytes"), "{bad}");
        assert!(lines.buf.capacity() < 5000, "the long line was not kept whole");
        assert_eq!(lines.next_line().unwrap().unwrap(), (3, GOOD));
        assert_eq!(lines.next_line().unwrap().unwrap_err().line, 4, "a long last line without newline");
        assert!(lines.next_line().is_none());
    }

    /// Every line and bad line, as `(number, text or reason)`.
    fn all_lines(mut lines: CaptureLines<impl BufRead>) -> Vec<(usize, Result<String, String>)> {
        let mut all = Vec::new();
        while let Some(next) = lines.next_line() {
            all.push(match next {
                Ok((line, text)) => (line, Ok(text.to_string())),
                Err(bad) => (bad.line, Err(bad.reason)),
            });
        }
        all
    }

    #[test]
    fn lines_read_in_place_or_copied_are_the_same_lines() {
        let mut text = Vec::new();
        for i in 0..200 {
            match i % 7 {
                0 => text.extend_from_slice(b"\n"),
                1 => text.extend_from_slice(b"  \t\r\n"),
                2 => text.extend_from_slice(b"caf\xc3\n"),
                3 => text.extend_from_slice(b"\xff rest\r\n"),
                _ => text.extend_from_slice(format!("{}{i}\r\n", "x".repeat(i % 40)).as_bytes()),
            }
        }
        text.extend_from_slice(b"last without newline");
        // One reader hands out lines from a buffer far larger than any of
        // them (in place), the others from buffers lines keep crossing.
        let expected = all_lines(CaptureLines::with_max_line(&text[..], 30));
        for capacity in [1, 7, 16, 33, 64, 1 << 16] {
            let reader = std::io::BufReader::with_capacity(capacity, &text[..]);
            assert_eq!(all_lines(CaptureLines::with_max_line(reader, 30)), expected, "buffer of {capacity}");
        }
        assert!(expected.iter().any(|(_, line)| line.as_ref().is_err_and(|r| r.contains("at most 30"))));
        assert!(expected.iter().any(|(_, line)| line.as_ref().is_err_and(|r| r.contains("UTF-8"))));
        assert_eq!(expected.last().map(|(_, line)| line.clone()), Some(Ok("last without newline".into())));
        assert!(expected.iter().filter(|(_, line)| line.is_ok()).count() > 50);
    }

    #[test]
    fn gzip_is_recognised_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        let mut encoder = flate2::write::GzEncoder::new(File::create(&path).unwrap(), flate2::Compression::fast());
        writeln!(encoder, "{GOOD}\n{GOOD}").unwrap();
        encoder.finish().unwrap();
        let count = Arc::new(AtomicU64::new(0));
        let (records, bad) = read_capture(open_capture(&path, Some(count.clone())).unwrap());
        assert_eq!((records.len(), bad.len()), (2, 0));
        assert_eq!(count.load(Ordering::Relaxed), std::fs::metadata(&path).unwrap().len());
    }
}
