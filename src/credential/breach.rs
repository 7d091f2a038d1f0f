//! The breached-password check: a compact membership filter over SHA-1
//! hashes of passwords known from breaches.
//!
//! Offline breach corpora come as SHA-1 hashes; palisade accepts a file of
//! `SHA1HEX[:COUNT]` lines, of `PREFIX:SUFFIX[:COUNT]` lines, or a folder
//! of range files named by their 5-character prefix holding
//! `SUFFIX[:COUNT]` lines. The hashes are loaded into a binary fuse filter
//! (16-bit fingerprints: about 18 bits per entry, a false-positive rate of
//! 1 in 65,536, about 0.0015%). A password under test is SHA-1-hashed in
//! memory, looked up, and dropped; it is never stored or logged.

use std::path::Path;

use sha1::{Digest, Sha1};
use xorf::{BinaryFuse16, Filter};

use crate::error::Error;

pub struct BreachFilter {
    filter: BinaryFuse16,
    entries: usize,
}

impl std::fmt::Debug for BreachFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BreachFilter({} hashes)", self.entries)
    }
}

impl BreachFilter {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let mut keys = Vec::new();
        if path.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| Error::read(format!("cannot read the folder: {e}")))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .collect();
            files.sort();
            for file in files {
                let prefix = file.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
                if prefix.len() != 5 || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
                    continue;
                }
                let text =
                    std::fs::read_to_string(&file).map_err(|e| Error::read(format!("{}: {e}", file.display())))?;
                read_lines(&text, &prefix, &file.display().to_string(), &mut keys)?;
            }
        } else {
            let text = std::fs::read_to_string(path).map_err(|e| Error::read(format!("cannot read the file: {e}")))?;
            read_lines(&text, "", &path.display().to_string(), &mut keys)?;
        }
        Self::from_keys(keys)
    }

    fn from_keys(mut keys: Vec<u64>) -> Result<Self, Error> {
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return Err(Error::malformed("no SHA-1 hashes found"));
        }
        let entries = keys.len();
        let filter =
            BinaryFuse16::try_from(&keys[..]).map_err(|e| Error::malformed(format!("cannot build the filter: {e}")))?;
        Ok(BreachFilter { filter, entries })
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    pub fn contains_password(&self, password: &str) -> bool {
        let digest = Sha1::digest(password.as_bytes());
        self.filter.contains(&key_of(&digest))
    }
}

fn key_of(digest: &[u8]) -> u64 {
    u64::from_be_bytes(digest[..8].try_into().expect("SHA-1 has 20 bytes"))
}

/// Parse lines into filter keys; `prefix` is the range file's name, if any.
fn read_lines(text: &str, prefix: &str, name: &str, keys: &mut Vec<u64>) -> Result<(), Error> {
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split(':');
        let first = parts.next().unwrap_or("");
        let hex_text = match (prefix.is_empty(), first.len()) {
            (true, 40) => first.to_string(),
            (true, 5) => format!("{first}{}", parts.next().unwrap_or("")),
            (false, 35) => format!("{prefix}{first}"),
            _ => String::new(),
        };
        let bytes = hex::decode(&hex_text).ok().filter(|b| b.len() == 20).ok_or_else(|| {
            Error::malformed(format!(
                "{name}:{}: expected a SHA-1 hash (40 hex digits, PREFIX:SUFFIX, or SUFFIX in a range file)",
                index + 1
            ))
        })?;
        keys.push(key_of(&bytes));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha1_hex(password: &str) -> String {
        hex::encode_upper(Sha1::digest(password.as_bytes()))
    }

    #[test]
    fn every_format_finds_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("full.txt");
        std::fs::write(&full, format!("{}:42\n{}\n", sha1_hex("password"), sha1_hex("hunter2"))).unwrap();
        let filter = BreachFilter::load(&full).unwrap();
        assert!(filter.contains_password("password") && filter.contains_password("hunter2"));
        assert!(!filter.contains_password("correct horse battery staple"));

        let hash = sha1_hex("letmein");
        let split = dir.path().join("split.txt");
        std::fs::write(&split, format!("{}:{}:3\n", &hash[..5], &hash[5..])).unwrap();
        assert!(BreachFilter::load(&split).unwrap().contains_password("letmein"));

        let ranges = dir.path().join("ranges");
        std::fs::create_dir(&ranges).unwrap();
        std::fs::write(ranges.join(format!("{}.txt", &hash[..5])), format!("{}:7\n", &hash[5..])).unwrap();
        assert!(BreachFilter::load(&ranges).unwrap().contains_password("letmein"));
    }

    #[test]
    fn bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, "not-a-hash\n").unwrap();
        let error = BreachFilter::load(&bad).unwrap_err();
        assert!(error.to_string().contains("bad.txt:1:"), "{error}");
    }

    #[test]
    fn the_shipped_sample_loads() {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("replay/breached-passwords.sample.txt");
        let filter = BreachFilter::load(&sample).unwrap();
        assert!(filter.len() >= 50);
        assert!(filter.contains_password("123456"));
        assert!(!filter.contains_password("a long passphrase nobody has breached, 2026"));
    }
}
