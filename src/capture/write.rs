//! Writing capture lines, with size-based rotation: when the next line
//! would take `capture.jsonl` past `max_file_bytes`, it is renamed
//! `capture.jsonl.1` (an existing `.1` becomes `.2`, and so on; the oldest
//! beyond `max_files` is deleted) and a new `capture.jsonl` is started.
//! To replay everything, oldest first:
//! `palisade replay capture.jsonl.3 capture.jsonl.2 capture.jsonl.1 capture.jsonl`
//! (replay orders requests by time anyway).
//!
//! A line is written with one `write` call on a file opened for appending,
//! so lines from two writers on the same file (the moment of a reload)
//! never interleave. Records are written as given: redact first (see
//! [`super::Redactor`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::record::CaptureRecord;

/// When a capture file is rotated, and how many rotated files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a line would take the file past this size; 0 never
    /// rotates.
    pub max_file_bytes: u64,
    /// Rotated files kept (`.1` … `.max_files`).
    pub max_files: usize,
}

impl Rotation {
    pub const NEVER: Rotation = Rotation { max_file_bytes: 0, max_files: 0 };
}

#[derive(Debug)]
pub struct CaptureWriter {
    path: PathBuf,
    rotation: Rotation,
    file: File,
    written: u64,
    line: Vec<u8>,
}

impl CaptureWriter {
    /// Open `path` for appending (created if missing).
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(CaptureWriter { path: path.to_path_buf(), rotation, file, written, line: Vec::with_capacity(2048) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write one record as one line.
    pub fn write_record(&mut self, record: &CaptureRecord) -> io::Result<()> {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        serde_json::to_writer(&mut line, record).map_err(io::Error::other)?;
        line.push(b'\n');
        let result = self.write_line(&line);
        self.line = line;
        result
    }

    /// Write one line (ending in a newline), rotating first if needed.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let max = self.rotation.max_file_bytes;
        if max > 0 && self.written > 0 && self.written + line.len() as u64 > max {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.written += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let numbered = |n: usize| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        let keep = self.rotation.max_files;
        if keep == 0 {
            // Nothing kept: start the file over.
            self.file.set_len(0)?;
        } else {
            let _ = std::fs::remove_file(numbered(keep));
            for n in (1..keep).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
            self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        }
        self.written = 0;
        Ok(())
    }
}

/// Write records to `path` (`-` for standard output; gzip when the name
/// ends in `.gz`), replacing the file.
pub fn write_records<'a>(path: &Path, records: impl IntoIterator<Item = &'a CaptureRecord>) -> io::Result<usize> {
    let sink: Box<dyn Write> = if path == Path::new("-") {
        Box::new(io::stdout().lock())
    } else if path.extension().is_some_and(|ext| ext == "gz") {
        Box::new(flate2::write::GzEncoder::new(File::create(path)?, flate2::Compression::default()))
    } else {
        Box::new(File::create(path)?)
    };
    let mut out = io::BufWriter::new(sink);
    let mut count = 0;
    for record in records {
        serde_json::to_writer(&mut out, record).map_err(io::Error::other)?;
        out.write_all(b"\n")?;
        count += 1;
    }
    out.flush()?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> CaptureRecord {
        CaptureRecord::new(n as f64, "192.0.2.1".parse().unwrap(), "GET", &format!("/{n:04}"), Vec::new())
    }

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capture.jsonl");
        let line_len = serde_json::to_string(&record(0)).unwrap().len() as u64 + 1;
        let mut writer = CaptureWriter::open(&path, Rotation { max_file_bytes: line_len * 3, max_files: 2 }).unwrap();
        for n in 0..10 {
            writer.write_record(&record(n)).unwrap();
        }
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
        let targets = |text: String| -> Vec<String> {
            text.lines().map(|l| serde_json::from_str::<CaptureRecord>(l).unwrap().target).collect()
        };
        assert_eq!(targets(read("capture.jsonl")), ["/0009"]);
        assert_eq!(targets(read("capture.jsonl.1")), ["/0006", "/0007", "/0008"]);
        assert_eq!(targets(read("capture.jsonl.2")), ["/0003", "/0004", "/0005"]);
        assert!(!dir.path().join("capture.jsonl.3").exists());
    }

    #[test]
    fn reopening_appends_and_counts_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        let line_len = serde_json::to_string(&record(0)).unwrap().len() as u64 + 1;
        let rotation = Rotation { max_file_bytes: line_len * 2, max_files: 1 };
        CaptureWriter::open(&path, rotation).unwrap().write_record(&record(1)).unwrap();
        let mut again = CaptureWriter::open(&path, rotation).unwrap();
        again.write_record(&record(2)).unwrap();
        again.write_record(&record(3)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        assert_eq!(std::fs::read_to_string(dir.path().join("c.jsonl.1")).unwrap().lines().count(), 2);
    }
}
