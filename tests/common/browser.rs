//! Real headless Chromium for end-to-end tests, driven over the DevTools
//! protocol (a websocket; no WebDriver server needed).
//!
//! One browser process serves every "person": each gets its own browser
//! context (its own cookies and cache) and its own client address. Chromium
//! cannot choose its source address, so each person talks to palisade
//! through a [`Relay`]: a TCP relay on its own port that connects onward
//! from that person's loopback address (127.x.y.z are all local on Linux).
//! palisade sees Chromium's bytes unchanged, from that address; the relay
//! also keeps what passed, so a test can copy a request exactly.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// The Chromium binary (Debian's `chromium` package; `.ci/run` installs it).
pub const CHROMIUM: &str = "/usr/bin/chromium";

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// A running headless Chromium.
pub struct Browser {
    child: tokio::process::Child,
    outgoing: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Start Chromium with a fresh profile. Fails loudly when it is missing.
    pub async fn launch() -> Browser {
        assert!(
            std::path::Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium chromium-driver); .ci/run does"
        );
        let profile = tempfile::tempdir().unwrap();
        // Headless Chromium says so in its User-Agent (`HeadlessChrome`),
        // which palisade's signatures flag on their own; people run the
        // ordinary browser, so the tests present its User-Agent.
        let version = std::process::Command::new(CHROMIUM).arg("--version").output().expect("chromium --version");
        let version = String::from_utf8_lossy(&version.stdout).into_owned();
        let major = version.split_whitespace().find_map(|w| w.split('.').next()?.parse::<u32>().ok()).unwrap_or(148);
        let user_agent = format!(
            "--user-agent=Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36"
        );
        let mut child = tokio::process::Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(user_agent)
            .arg("about:blank")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let find_url = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_string();
                }
            }
            panic!("chromium exited without a DevTools address");
        };
        let url = tokio::time::timeout(Duration::from_secs(30), find_url).await.expect("chromium printed its address");
        // Keep draining Chromium's stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("DevTools websocket");
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut queue) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let answers = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else { continue };
                let Ok(value) = serde_json::from_str::<Value>(&text) else { continue };
                let Some(id) = value.get("id").and_then(Value::as_u64) else { continue };
                if let Some(reply) = answers.lock().unwrap().remove(&id) {
                    let result = match value.get("error") {
                        Some(error) => Err(error.to_string()),
                        None => Ok(value.get("result").cloned().unwrap_or(Value::Null)),
                    };
                    let _ = reply.send(result);
                }
            }
        });
        Browser { child, outgoing, pending, next_id: Arc::new(AtomicU64::new(1)), _profile: profile }
    }

    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        call(&self.outgoing, &self.pending, &self.next_id, session, method, params).await
    }

    /// A new person: an isolated browser context with one tab.
    pub async fn person(&self) -> Tab {
        let context = self.call(None, "Target.createBrowserContext", json!({})).await.expect("browser context");
        let context = context["browserContextId"].as_str().unwrap().to_string();
        let target = self
            .call(None, "Target.createTarget", json!({"url": "about:blank", "browserContextId": context}))
            .await
            .expect("tab");
        let target = target["targetId"].as_str().unwrap().to_string();
        let attached = self
            .call(None, "Target.attachToTarget", json!({"targetId": target, "flatten": true}))
            .await
            .expect("attached");
        Tab {
            session: attached["sessionId"].as_str().unwrap().to_string(),
            outgoing: self.outgoing.clone(),
            pending: self.pending.clone(),
            next_id: self.next_id.clone(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

async fn call(
    outgoing: &mpsc::UnboundedSender<Message>,
    pending: &Pending,
    next_id: &AtomicU64,
    session: Option<&str>,
    method: &str,
    params: Value,
) -> Result<Value, String> {
    let id = next_id.fetch_add(1, Ordering::Relaxed);
    let mut message = json!({"id": id, "method": method, "params": params});
    if let Some(session) = session {
        message["sessionId"] = json!(session);
    }
    let (reply, answer) = oneshot::channel();
    pending.lock().unwrap().insert(id, reply);
    outgoing.send(Message::Text(message.to_string().into())).map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(60), answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(format!("{method}: the browser went away")),
        Err(_) => Err(format!("{method}: no answer in 60 s")),
    }
}

/// One tab in its own browser context.
pub struct Tab {
    session: String,
    outgoing: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
}

impl Tab {
    async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        call(&self.outgoing, &self.pending, &self.next_id, Some(&self.session), method, params).await
    }

    pub async fn goto(&self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await.expect("navigate");
    }

    /// Evaluate `expression` in the page; its value (JSON), or `Null` while
    /// the page is between documents.
    pub async fn eval(&self, expression: &str) -> Value {
        match self
            .call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true, "userGesture": true}))
            .await
        {
            Ok(result) => result["result"]["value"].clone(),
            Err(_) => Value::Null,
        }
    }

    /// Wait (up to `limit`) until `expression` is truthy; its last value.
    pub async fn wait_for(&self, expression: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let value = self.eval(expression).await;
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::String(text) => !text.is_empty(),
                _ => true,
            };
            if truthy || tokio::time::Instant::now() > deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A TCP relay from its own port to `target`, connecting from `source`,
/// that keeps every byte that passed each way.
pub struct Relay {
    pub addr: SocketAddr,
    pub to_server: Arc<Mutex<Vec<u8>>>,
    pub to_client: Arc<Mutex<Vec<u8>>>,
}

impl Relay {
    pub async fn start(target: SocketAddr, source: IpAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let to_server: Arc<Mutex<Vec<u8>>> = Arc::default();
        let to_client: Arc<Mutex<Vec<u8>>> = Arc::default();
        let (up_log, down_log) = (to_server.clone(), to_client.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let socket = TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::new(source, 0)).unwrap();
                let Ok(server) = socket.connect(target).await else { continue };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up_log = up_log.clone();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 16 * 1024];
                    while let Ok(n) = client_read.read(&mut buffer).await {
                        if n == 0 || server_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                        up_log.lock().unwrap().extend_from_slice(&buffer[..n]);
                    }
                    let _ = server_write.shutdown().await;
                });
                let down_log = down_log.clone();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 16 * 1024];
                    while let Ok(n) = server_read.read(&mut buffer).await {
                        if n == 0 || client_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                        down_log.lock().unwrap().extend_from_slice(&buffer[..n]);
                    }
                    let _ = client_write.shutdown().await;
                });
            }
        });
        Relay { addr, to_server, to_client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every request head the browser sent with this request line prefix
    /// (e.g. `POST /login `), with its body, as sent.
    pub fn requests(&self, line_prefix: &str) -> Vec<RawRequest> {
        let bytes = self.to_server.lock().unwrap().clone();
        let mut found = Vec::new();
        let mut at = 0;
        while let Some(offset) = find(&bytes[at..], line_prefix.as_bytes()) {
            let start = at + offset;
            let Some(head_len) = find(&bytes[start..], b"\r\n\r\n") else { break };
            let head = String::from_utf8_lossy(&bytes[start..start + head_len + 4]).into_owned();
            let length = header_value(&head, "content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
            let body_start = start + head_len + 4;
            let body = bytes[body_start..(body_start + length).min(bytes.len())].to_vec();
            found.push(RawRequest { head, body });
            at = body_start;
        }
        found
    }

    /// The status of every answer palisade gave this person, and whether
    /// it was a challenge (the `X-Palisade-Challenge` header).
    pub fn answers(&self) -> Vec<(u16, bool)> {
        let bytes = self.to_client.lock().unwrap().clone();
        let mut answers = Vec::new();
        let mut at = 0;
        while let Some(offset) = find(&bytes[at..], b"HTTP/1.1 ") {
            let start = at + offset;
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(_)) = response.parse(&bytes[start..]) {
                let challenge = response.headers.iter().any(|h| h.name.eq_ignore_ascii_case("x-palisade-challenge"));
                answers.push((response.code.unwrap_or(0), challenge));
            }
            at = start + 9;
        }
        answers
    }
}

/// One request as the browser sent it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// Request line and headers, names in the browser's case and order,
    /// ending in the blank line.
    pub head: String,
    pub body: Vec<u8>,
}

impl RawRequest {
    /// The same request with another body, `Cookie` value and client
    /// address (an `X-Forwarded-For` line added last, which palisade's
    /// fingerprint ignores and honours from a trusted proxy).
    pub fn copy_with(&self, body: &str, cookie: Option<&str>, forwarded_for: &str) -> Vec<u8> {
        let mut out = String::new();
        for line in self.head.trim_end_matches("\r\n").split("\r\n") {
            let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
            match (name.as_str(), cookie) {
                ("content-length", _) => out.push_str(&format!("{}: {}", line.split(':').next().unwrap(), body.len())),
                ("cookie", Some(cookie)) => out.push_str(&format!("{}: {cookie}", line.split(':').next().unwrap())),
                _ => out.push_str(line),
            }
            out.push_str("\r\n");
        }
        out.push_str(&format!("X-Forwarded-For: {forwarded_for}\r\n\r\n{body}"));
        out.into_bytes()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        header_value(&self.head, name)
    }
}

fn header_value(head: &str, name: &str) -> Option<String> {
    head.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One exchange on a new connection: send `bytes`, read one response
/// (head and a `Content-Length` body). Status, headers (lowercase names),
/// body.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> (u16, Vec<(String, String)>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await.unwrap().unwrap();
        buffer.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head_len)) = response.parse(&buffer) {
            let found: Vec<(String, String)> = response
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            let length = found
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse::<usize>().ok())
                .unwrap_or(0);
            if buffer.len() >= head_len + length || n == 0 {
                let body = String::from_utf8_lossy(&buffer[head_len..]).into_owned();
                return (response.code.unwrap_or(0), found, body);
            }
        }
        if n == 0 {
            panic!("connection closed before a whole response: {}", String::from_utf8_lossy(&buffer));
        }
    }
}
