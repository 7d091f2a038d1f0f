//! Sane ranges for the numbers that size memory, connections and waits.
//!
//! A limit is a promise about how much one client can make palisade hold.
//! A value far outside what any deployment needs breaks that promise before
//! a single request arrives: `limits.max_headers = 18446744073709551615`
//! passed every check and then made each connection panic (`capacity
//! overflow`) when hyper sized its header array, and `100000000` took 4–5 GB
//! on one GET. Every such number is checked here against a documented range
//! (docs/configuration.md), so `check`, `serve` and reload refuse it with the
//! file, the key and the line.
//!
//! This file only knows the schema: the stages that use the values still
//! check what only they understand (a regex, a CIDR).

use super::load::Invalid;
use super::schema::Config;

/// One day: the longest any timeout is allowed to be. Longer waits only
/// pin connections and memory, and durations near `u64::MAX` milliseconds
/// overflow the timer arithmetic (`Instant + Duration` panics).
pub const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// Bounds of `limits.max_header_bytes`: hyper's smallest read buffer, and
/// 1 MiB (nginx's largest default header buffers are 4 × 8 KiB; a megabyte
/// per connection is already generous).
pub const HEADER_BYTES: (u64, u64) = (8192, 1024 * 1024);
/// Bounds of `limits.max_headers`: hyper reserves room for this many
/// headers per request, so it sizes memory directly.
pub const HEADERS: (u64, u64) = (1, 1000);
/// Bounds of `limits.max_inspected_body_bytes`: a login body is a few
/// hundred bytes; 16 MiB buffered per request is the most that makes sense.
pub const INSPECTED_BODY_BYTES: (u64, u64) = (1, 16 * 1024 * 1024);
/// Bounds of `limits.max_connections_per_client`.
pub const CONNECTIONS_PER_CLIENT: (u64, u64) = (1, 1_000_000);
/// Bounds of `limits.max_connections` (0 means: from the file-descriptor limit).
pub const CONNECTIONS: (u64, u64) = (16, 10_000_000);
/// Bounds of `sidecar.max_pending_outcomes`: each waiting login is a few
/// hundred bytes.
pub const PENDING_OUTCOMES: (u64, u64) = (1, 10_000_000);
/// Bounds of `capture.max_files` and `decision_log.max_files`.
pub const CAPTURE_FILES: (u64, u64) = (1, 10_000);
/// Largest `capture.max_file_bytes` and `decision_log.max_file_bytes`
/// (1 TiB; 0 still means never rotate).
pub const CAPTURE_FILE_BYTES_MAX: u64 = 1 << 40;
/// Bounds of `session.max_usernames`.
pub const SESSION_USERNAMES: (u64, u64) = (1, 1_000_000);

/// Every number outside its range, as problems keyed like the file.
pub fn check(config: &Config) -> Vec<Invalid> {
    let mut problems = Vec::new();
    let mut range = |key: &str, value: u64, (low, high): (u64, u64), unit: &str| {
        if !(low..=high).contains(&value) {
            problems.push(Invalid::new(0..0, key, format!("{value} is out of range: give {low} to {high}{unit}")));
        }
    };
    let l = &config.limits;
    range("limits.max_header_bytes", l.max_header_bytes as u64, HEADER_BYTES, " bytes");
    range("limits.max_headers", l.max_headers as u64, HEADERS, " headers");
    range("limits.max_inspected_body_bytes", l.max_inspected_body_bytes as u64, INSPECTED_BODY_BYTES, " bytes");
    range(
        "limits.max_connections_per_client",
        l.max_connections_per_client as u64,
        CONNECTIONS_PER_CLIENT,
        " connections",
    );
    if l.max_connections != 0 {
        range(
            "limits.max_connections",
            l.max_connections as u64,
            CONNECTIONS,
            " connections (or 0: from the file-descriptor limit)",
        );
    }
    let t = &config.timeouts;
    for (key, value, low) in [
        ("timeouts.header_read_ms", t.header_read_ms, 1),
        ("timeouts.idle_ms", t.idle_ms, 1),
        ("timeouts.upstream_connect_ms", t.upstream_connect_ms, 1),
        ("timeouts.upstream_response_ms", t.upstream_response_ms, 1),
        ("timeouts.shutdown_grace_ms", t.shutdown_grace_ms, 0),
        ("store.timeout_ms", config.store.timeout_ms, 0),
        ("store.connect_timeout_ms", config.store.connect_timeout_ms, 0),
        ("store.retry_interval_ms", config.store.retry_interval_ms, 0),
    ] {
        // Zero timeouts are refused with their own message elsewhere; here
        // only the upper end, so one mistake is reported once.
        if value >= low {
            range(key, value, (low, MAX_TIMEOUT_MS), " ms (one day at most)");
        }
    }
    if let Some(sidecar) = &config.sidecar {
        range("sidecar.max_pending_outcomes", sidecar.max_pending_outcomes as u64, PENDING_OUTCOMES, "");
        if sidecar.outcome_wait_ms > 0 {
            range("sidecar.outcome_wait_ms", sidecar.outcome_wait_ms, (1, MAX_TIMEOUT_MS), " ms (one day at most)");
        }
    }
    let log = &config.decision_log;
    range("decision_log.max_files", log.max_files as u64, CAPTURE_FILES, " files");
    range("decision_log.max_file_bytes", log.max_file_bytes, (0, CAPTURE_FILE_BYTES_MAX), " bytes (0: never rotate)");
    if let Some(capture) = &config.capture {
        range("capture.max_files", capture.max_files as u64, CAPTURE_FILES, " files");
        range(
            "capture.max_file_bytes",
            capture.max_file_bytes,
            (0, CAPTURE_FILE_BYTES_MAX),
            " bytes (0: never rotate)",
        );
    }
    if config.session.max_usernames > 0 {
        range("session.max_usernames", u64::from(config.session.max_usernames), SESSION_USERNAMES, "");
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let config = super::super::parse_str(text, "r.toml").unwrap_or_else(|e| panic!("{e}"));
        check(&config).into_iter().map(|p| format!("{}: {}", p.key, p.message)).collect()
    }

    #[test]
    fn defaults_are_in_range() {
        assert_eq!(problems(""), Vec::<String>::new());
    }

    #[test]
    fn extremes_are_refused_with_their_key() {
        let found = problems("[limits]\nmax_headers = 18446744073709551615\nmax_header_bytes = 100000000\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("limits.max_header_bytes: 100000000 is out of range"), "{found:?}");
        assert!(found[1].starts_with("limits.max_headers: 18446744073709551615 is out of range"), "{found:?}");
        let found = problems("[timeouts]\nidle_ms = 18446744073709551615\n");
        assert_eq!(found.len(), 1, "{found:?}");
    }
}
