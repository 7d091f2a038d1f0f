//! Hardening (issue 16): limits that `check` refuses, connections a client
//! cannot pile up, and protocol hygiene on what reaches the application.
//! The real proxy on an ephemeral port, the recording test upstream, raw
//! TCP where a well-behaved client would never send the bytes, and the
//! `palisade` binary for `check`.

mod common;
use common::*;

fn palisade_check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits.toml");
    std::fs::write(&path, text).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["check", "--config"])
        .arg(&path)
        .env("PALISADE_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).replace(&path.display().to_string(), "limits.toml");
    (output.status.success(), stderr)
}

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

/// `max_headers = u64::MAX` made every connection panic and `100000000`
/// took gigabytes on one GET; both must be refused by `check` with the
/// file, the key and the line, like every other mistake.
#[test]
fn check_refuses_the_max_headers_extremes_with_file_key_and_line() {
    for value in ["18446744073709551615", "100000000", "0"] {
        let (ok, stderr) =
            palisade_check(&format!("# limits\n[limits]\nmax_header_bytes = 16384\nmax_headers = {value}\n"));
        println!("{stderr}");
        assert!(!ok, "check accepted max_headers = {value}");
        assert!(stderr.contains(&format!("limits.toml:4: limits.max_headers: {value} is out of range")), "{stderr}");
    }
    let (ok, stderr) = palisade_check("[limits]\nmax_headers = 1000\n");
    assert!(ok, "the top of the range is accepted: {stderr}");
}

#[test]
fn check_refuses_other_limits_out_of_range() {
    let text = "\
[limits]
max_header_bytes = 100000000
max_inspected_body_bytes = 18446744073709551615
max_connections_per_client = 0

[timeouts]
idle_ms = 18446744073709551615
";
    let (ok, stderr) = palisade_check(text);
    println!("{stderr}");
    assert!(!ok);
    for (line, key) in [
        (2, "limits.max_header_bytes"),
        (3, "limits.max_inspected_body_bytes"),
        (4, "limits.max_connections_per_client"),
        (7, "timeouts.idle_ms"),
    ] {
        let expected = format!("limits.toml:{line}: {key}: ");
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }
}

// ---------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Bound on every wait, only so a broken server fails the test instead of
/// hanging it. Nothing asserts how long anything took.
const PATIENCE: Duration = Duration::from_secs(10);

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0";

/// A connection from another loopback address than the test's usual
/// 127.0.0.1, so it is another client to palisade.
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Write `bytes`, read until the server closes (or the patience is over).
async fn send_raw(mut stream: TcpStream, bytes: &[u8]) -> Vec<u8> {
    stream.write_all(bytes).await.unwrap();
    read_until_closed(&mut stream).await.unwrap_or_default()
}

/// Read until the peer closes; `None` if it did not within the patience.
async fn read_until_closed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let read = async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read).await.ok()?;
    Some(out)
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: a\r\nUser-Agent: {BROWSER}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// How many more sockets this process may open: its file-descriptor limit
/// (palisade raised the soft one to the hard one when it started) less
/// what it holds and a margin for the server's side and the test's own.
fn spare_fds() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let limit = limit.current.map_or(usize::MAX, |n| n as usize);
    let open = std::fs::read_dir("/proc/self/fd").map(|dir| dir.count()).unwrap_or(64);
    limit.saturating_sub(open + 1000)
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in metrics"))
}

/// Issue 16's flood: about 20,000 silent connections from one address
/// exhausted the file descriptors and left everyone else unanswered.
///
/// Mechanism shown here: the per-client cap, at its default (256). The
/// test process's own file-descriptor limit bounds how many sockets it can
/// open (client and server sides share it): it opens 15,000 silent
/// connections from 127.0.0.1, or fewer if its limit is lower (the number
/// is printed), far beyond the cap either way. Connections past the cap
/// are answered 429 and closed at accept, so palisade holds 256 of them
/// and another address (127.0.0.2) is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_from_one_address_do_not_stop_another_client() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start("", &upstream).await;
    let count = spare_fds().min(15_000);
    println!("opening {count} silent connections from 127.0.0.1 (per-client cap: 256)");
    assert!(count > 1000, "too few file descriptors to show anything: {count}");
    let mut silent = Vec::with_capacity(count);
    for _ in 0..count {
        silent.push(TcpStream::connect(palisade.addr()).await.unwrap());
    }
    let answer = send_raw(connect_from("127.0.0.2", palisade.addr()).await, &get("/other-client")).await;
    assert_eq!(raw_status(&answer), Some(200), "{:?}", String::from_utf8_lossy(&answer));

    // The last of the flood was over the cap: told so and closed at once.
    let mut last = silent.pop().unwrap();
    let refused = read_until_closed(&mut last).await.expect("a connection over the cap is closed");
    assert_eq!(raw_status(&refused), Some(429), "{:?}", String::from_utf8_lossy(&refused));
    let metrics = palisade.metrics_text().await;
    let refused = metric(&metrics, "palisade_connections_refused_client_total");
    println!("refused at accept: {refused} of {count}");
    assert!(refused >= (count - 256) as u64, "{refused} refused");
}

/// The process-wide cap stands in for the file-descriptor limit
/// (`limits.max_connections`, here 40, set low so the test needs few
/// sockets): silent connections from many ports fill it, new connections
/// are answered 503 instead of hanging, and the silent ones are shed so
/// that a real client gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_new_clients_get_503_then_room_is_made() {
    let upstream = Upstream::start().await;
    let palisade =
        Palisade::start("[limits]\nmax_connections = 40\nmax_connections_per_client = 1000\n", &upstream).await;
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(TcpStream::connect(palisade.addr()).await.unwrap());
    }
    let mut statuses = Vec::new();
    let served = tokio::time::timeout(PATIENCE, async {
        loop {
            let answer = send_raw(connect_from("127.0.0.2", palisade.addr()).await, &get("/room")).await;
            let status = raw_status(&answer);
            statuses.push(status);
            if status == Some(200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    println!("answers while full: {statuses:?}");
    assert!(served.is_ok(), "never served: {statuses:?}");
    assert!(statuses.iter().all(|s| matches!(s, Some(200) | Some(503))), "{statuses:?}");
    let metrics = palisade.metrics_text().await;
    assert!(metric(&metrics, "palisade_connections_shed_total") > 0, "{metrics}");
    drop(silent);
}

/// The head timeout starts at accept: a connection that never sends a byte
/// is closed after `header_read_ms`, not held for `idle_ms`.
#[tokio::test]
async fn a_silent_connection_is_closed_by_the_header_timeout_not_the_idle_one() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start("[timeouts]\nheader_read_ms = 300\nidle_ms = 600000\n", &upstream).await;
    let mut silent = TcpStream::connect(palisade.addr()).await.unwrap();
    let rest = read_until_closed(&mut silent).await.expect("a silent connection is closed by the header timeout");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    let metrics = palisade.metrics_text().await;
    assert_eq!(metric(&metrics, "palisade_connections_head_timeout_total"), 1);
}

/// A keep-alive connection between requests is idle, not a slow head:
/// it stays open for `idle_ms` even when that is longer than
/// `header_read_ms` (it was closed after the header timeout).
#[tokio::test]
async fn keep_alive_connections_last_idle_ms_not_header_read_ms() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start("[timeouts]\nheader_read_ms = 200\nidle_ms = 600000\n", &upstream).await;
    let mut stream = TcpStream::connect(palisade.addr()).await.unwrap();
    let request = format!("GET /first HTTP/1.1\r\nHost: a\r\nUser-Agent: {BROWSER}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = [0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, stream.read(&mut buffer)).await.unwrap().unwrap();
    assert_eq!(raw_status(&buffer[..n]), Some(200));
    // Several header timeouts pass with the connection quiet between requests.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let answer = send_raw(stream, &get("/second")).await;
    assert_eq!(raw_status(&answer), Some(200), "the keep-alive connection was closed early");
    assert!(upstream.seen().iter().any(|seen| seen.uri == "/second"));
}

/// An HTTP/2 client that ignores GOAWAY and PING (it never answers, never
/// closes) is dropped shortly after the idle timeout instead of being
/// waited on until pings time out (it held on for 140 s).
#[tokio::test]
async fn an_http2_client_ignoring_goaway_is_dropped_after_the_idle_timeout() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start("[timeouts]\nidle_ms = 300\n", &upstream).await;
    let mut stream = TcpStream::connect(palisade.addr()).await.unwrap();
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS, empty
    // HEADERS on stream 1, END_STREAM | END_HEADERS: GET http://a/ in HPACK
    // (static :method GET, :scheme http, :path /, literal :authority "a").
    let block = [0x82, 0x86, 0x84, 0x41, 0x01, b'a'];
    bytes.extend_from_slice(&[0, 0, block.len() as u8, 1, 0x5, 0, 0, 0, 1]);
    bytes.extend_from_slice(&block);
    stream.write_all(&bytes).await.unwrap();
    // Read everything (the answer, GOAWAY, PING) and acknowledge nothing.
    let seen = read_until_closed(&mut stream).await.expect("the client ignoring GOAWAY is dropped");
    let frames = h2_frames(&seen);
    println!("frames from palisade (type, stream): {frames:?}");
    assert!(frames.contains(&(1, 1)), "stream 1 was answered (HEADERS)");
    assert!(frames.contains(&(7, 0)), "palisade said GOAWAY before dropping the client");
}

/// (type, stream id) of each HTTP/2 frame in `bytes`.
fn h2_frames(mut bytes: &[u8]) -> Vec<(u8, u32)> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
        frames.push((bytes[3], stream));
        bytes = &bytes[(9 + length).min(bytes.len())..];
    }
    frames
}

// ---------------------------------------------------------------------------
// Protocol hygiene
// ---------------------------------------------------------------------------

/// What an untrusted client says about its own address never reaches the
/// application, in any of the usual headers or their underscore spellings.
#[tokio::test]
async fn client_address_claims_from_untrusted_peers_are_stripped() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start("", &upstream).await;
    let claims = [
        ("X-Real-IP", "6.6.6.6"),
        ("Forwarded", "for=6.6.6.6;proto=https"),
        ("True-Client-IP", "6.6.6.6"),
        ("CF-Connecting-IP", "6.6.6.6"),
        ("X-Client-IP", "6.6.6.6"),
        ("X_Real_IP", "6.6.6.6"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("X-Forwarded-For", "6.6.6.6"),
    ];
    let mut request = format!("GET /claims HTTP/1.1\r\nHost: a\r\nUser-Agent: {BROWSER}\r\nConnection: close\r\n");
    for (name, value) in claims {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("X-Kept: yes\r\n\r\n");
    let answer = send_raw(TcpStream::connect(palisade.addr()).await.unwrap(), request.as_bytes()).await;
    assert_eq!(raw_status(&answer), Some(200), "{:?}", String::from_utf8_lossy(&answer));
    let seen = upstream.last();
    for (name, value) in &seen.headers {
        assert!(!value.as_bytes().windows(7).any(|w| w == b"6.6.6.6"), "{name}: {value:?} reached the application");
    }
    assert_eq!(seen.headers.get("x-forwarded-for").unwrap(), "127.0.0.1");
    assert_eq!(seen.headers.get("x-kept").unwrap(), "yes");
}

/// From a trusted proxy the same headers are the proxy's word and pass.
#[tokio::test]
async fn client_address_headers_from_a_trusted_proxy_pass() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start("[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n", &upstream).await;
    let request = format!(
        "GET /proxied HTTP/1.1\r\nHost: a\r\nUser-Agent: {BROWSER}\r\nConnection: close\r\n\
         X-Real-IP: 203.0.113.7\r\nForwarded: for=203.0.113.7\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n"
    );
    let answer = send_raw(TcpStream::connect(palisade.addr()).await.unwrap(), request.as_bytes()).await;
    assert_eq!(raw_status(&answer), Some(200));
    let seen = upstream.last();
    assert_eq!(seen.headers.get("x-real-ip").unwrap(), "203.0.113.7");
    assert_eq!(seen.headers.get("forwarded").unwrap(), "for=203.0.113.7");
    assert_eq!(seen.headers.get("x-forwarded-for").unwrap(), "203.0.113.7, 127.0.0.1");
}

/// `X_Palisade_Score: 99` is `HTTP_X_PALISADE_SCORE` to a WSGI app, beside
/// palisade's own: only palisade's decision headers reach the application.
#[tokio::test]
async fn underscore_spellings_of_the_decision_headers_are_stripped() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start("", &upstream).await;
    let request = format!(
        "GET /decided HTTP/1.1\r\nHost: a\r\nUser-Agent: {BROWSER}\r\nConnection: close\r\n\
         X_Palisade_Score: 99\r\nx_palisade_action: allow\r\nX-Palisade-Score: 99\r\nX_Palisade_Detections: none\r\n\r\n"
    );
    let answer = send_raw(TcpStream::connect(palisade.addr()).await.unwrap(), request.as_bytes()).await;
    assert_eq!(raw_status(&answer), Some(200));
    let seen = upstream.last();
    let underscored: Vec<_> = seen.headers.keys().filter(|name| name.as_str().contains('_')).collect();
    assert!(underscored.is_empty(), "{underscored:?} reached the application");
    assert_eq!(seen.headers.get_all("x-palisade-score").iter().count(), 1, "{:?}", seen.headers);
    assert!(seen.headers.get("x-palisade-action").is_some());
}

/// HTTP/1.1 needs exactly one `Host`: two, or none, are refused with 400
/// and nothing reaches the application. HTTP/1.0 may omit it.
#[tokio::test]
async fn two_hosts_or_none_on_http11_get_400() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start("", &upstream).await;
    let two = format!("GET /two HTTP/1.1\r\nHost: a\r\nHost: b\r\nUser-Agent: {BROWSER}\r\nConnection: close\r\n\r\n");
    let none = format!("GET /none HTTP/1.1\r\nUser-Agent: {BROWSER}\r\nConnection: close\r\n\r\n");
    for (what, request) in [("two Host headers", two), ("no Host header", none)] {
        let answer = send_raw(TcpStream::connect(palisade.addr()).await.unwrap(), request.as_bytes()).await;
        assert_eq!(raw_status(&answer), Some(400), "{what}: {:?}", String::from_utf8_lossy(&answer));
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen().iter().map(|s| &s.uri).collect::<Vec<_>>());
    let old = format!("GET /http10 HTTP/1.0\r\nUser-Agent: {BROWSER}\r\n\r\n");
    let answer = send_raw(TcpStream::connect(palisade.addr()).await.unwrap(), old.as_bytes()).await;
    assert_eq!(raw_status(&answer), Some(200), "HTTP/1.0 without Host is fine");
}

// ---------------------------------------------------------------------------
// Unbounded outputs and inputs
// ---------------------------------------------------------------------------

fn sqlmap() -> Vec<u8> {
    b"GET /item?id=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: sqlmap/1.7.2\r\nConnection: close\r\n\r\n".to_vec()
}

/// A blocked flood from one client writes a few lines a minute, not one
/// per request; the lines written say how many were left out.
#[tokio::test]
async fn a_blocked_flood_from_one_client_is_summarised_in_the_decision_log() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start("[decision_log]\nmax_repeats_per_minute = 5\n", &upstream).await;
    for _ in 0..60 {
        let answer = send_raw(TcpStream::connect(palisade.addr()).await.unwrap(), &sqlmap()).await;
        assert_eq!(raw_status(&answer), Some(403));
    }
    let metrics = palisade.metrics_text().await;
    let suppressed = metric(&metrics, "palisade_decision_log_suppressed_total");
    let lines = palisade.log_lines(5).await;
    println!("60 blocked requests: {} lines, {suppressed} left out", lines.len());
    // Two minutes may begin during the loop: at most twice the cap.
    assert!((5..=10).contains(&lines.len()), "{} lines", lines.len());
    assert_eq!(lines.len() as u64 + suppressed, 60);
}

/// The decision log file is rotated by size and old files are deleted.
#[tokio::test]
async fn the_decision_log_file_is_rotated_by_size() {
    let upstream = Upstream::start().await;
    let config = "[decision_log]\nmax_repeats_per_minute = 0\nmax_file_bytes = 4096\nmax_files = 2\n";
    let palisade = Palisade::start(config, &upstream).await;
    for _ in 0..60 {
        send_raw(TcpStream::connect(palisade.addr()).await.unwrap(), &sqlmap()).await;
    }
    let rotated = |n: usize| std::path::PathBuf::from(format!("{}.{n}", palisade.log_path.display()));
    let written = tokio::time::timeout(PATIENCE, async {
        while !rotated(2).exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(written.is_ok(), "the log was never rotated twice");
    for path in [palisade.log_path.clone(), rotated(1), rotated(2)] {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size <= 4096, "{} has {size} bytes", path.display());
    }
    assert!(!rotated(3).exists(), "only max_files rotated files are kept");
}

fn palisade_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_palisade")).args(args).env("PALISADE_LOG", "warn").output().unwrap()
}

const GOOD_LINE: &str = r#"{"ts":1795915664.5,"client_ip":"192.0.2.1","method":"GET","target":"/","headers":[["Host","a"],["User-Agent","Mozilla/5.0"]]}"#;

/// A gzip that expands to one enormous line: the line is skipped with its
/// number (it was read whole into memory, 1 GB for a 1 GiB line), and the
/// lines around it are replayed.
#[test]
fn replay_skips_an_overlong_line_by_number() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.jsonl.gz");
    let mut gzip = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
    writeln!(gzip, "{GOOD_LINE}").unwrap();
    let chunk = vec![b'x'; 1024 * 1024];
    for _ in 0..30 {
        gzip.write_all(&chunk).unwrap();
    }
    writeln!(gzip).unwrap();
    writeln!(gzip, "{GOOD_LINE}").unwrap();
    gzip.finish().unwrap();
    println!("a {} byte gzip of a 30 MiB line", std::fs::metadata(&path).unwrap().len());
    let output = palisade_cli(&["replay", "-q", "--format", "json", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stderr}");
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("line 2: line of 31457281 bytes") && stderr.contains("(skipped)"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["summary"]["requests"], 2, "{report:#}");
}

/// ~25,000 distinct header names made `replay`, `explain` and `import har`
/// panic (`size overflows MAX_SIZE`); now the line is a bad line.
#[test]
fn a_line_with_25000_headers_is_a_bad_line_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let headers: Vec<String> = (0..25_000).map(|i| format!("[\"x-h{i}\",\"v\"]")).collect();
    let wide = format!(
        r#"{{"ts":1795915665.0,"client_ip":"192.0.2.1","method":"GET","target":"/","headers":[{}]}}"#,
        headers.join(",")
    );
    let capture = dir.path().join("wide.jsonl");
    std::fs::write(&capture, format!("{GOOD_LINE}\n{wide}\n{GOOD_LINE}\n")).unwrap();
    let output = palisade_cli(&["replay", "-q", "--format", "json", capture.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("line 2: 25000 headers"), "{stderr}");

    let explain = palisade_cli(&["explain", "--capture-line", "2", capture.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&explain.stderr);
    println!("explain: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("25000 headers"), "{stderr}");

    let har_headers: Vec<String> = (0..25_000).map(|i| format!("{{\"name\":\"x-h{i}\",\"value\":\"v\"}}")).collect();
    let har = dir.path().join("wide.har");
    std::fs::write(
        &har,
        format!(
            r#"{{"log":{{"entries":[{{"startedDateTime":"2026-11-29T01:40:00.000Z","request":{{"method":"GET","url":"https://a/","headers":[{}]}},"response":{{"status":200}}}},
            {{"startedDateTime":"2026-11-29T01:40:01.000Z","request":{{"method":"GET","url":"https://a/ok","headers":[]}},"response":{{"status":200}}}}]}}}}"#,
            har_headers.join(",")
        ),
    )
    .unwrap();
    let out = dir.path().join("har.jsonl");
    let import = palisade_cli(&["import", "har", har.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&import.stderr);
    println!("import har: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("line 1:") && stderr.contains("25000 headers"), "{stderr}");
}
