//! Capture files (format v1, see `replay/CAPTURE_FORMAT.md`): one JSON
//! request per line.
//!
//! - [`record`]: the line format, and a record turned back into the parts
//!   of an HTTP request, so benches, tests and replay feed the pipeline the
//!   requests the proxy saw;
//! - [`line`]: the hand-rolled reader replay uses for lines in the shape
//!   palisade writes (serde_json reads the rest);
//! - [`read`]: reading plain and gzip captures line by line, reporting bad
//!   lines by number (and whether the reader skipped them or stopped);
//! - [`redact`]: secret fields (passwords, card numbers) replaced by
//!   `<redacted>` before a record is written anywhere;
//! - [`write`]: writing lines with size-based rotation;
//! - [`sink`]: capture mode of `palisade serve` (a bounded queue to a
//!   writer thread that never blocks a request);
//! - [`import_har`], [`import_nginx`], [`raw`]: captures from browser
//!   devtools exports, nginx access logs and raw HTTP/1 requests.

pub mod import_har;
pub mod import_nginx;
pub mod line;
pub mod raw;
pub mod read;
pub mod record;
pub mod redact;
pub mod sink;
pub mod time;
pub mod write;

pub use read::{BadLine, CaptureLines, OnBadLine, open_capture, read_capture};
pub use record::{CaptureRecord, CapturedRequest};
pub use redact::{DEFAULT_REDACT_FIELDS, DEFAULT_REDACT_HEADERS, REDACTED, Redactor};
pub use sink::CaptureSink;
pub use write::{CaptureWriter, Rotation};
