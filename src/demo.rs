//! `palisade demo`: palisade in front of a small built-in login app, on
//! loopback, so a newcomer can watch it work in one command.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The demo app's only valid account.
pub const DEMO_USER: (&str, &str) = ("alice", "wonderland");

/// Start the demo login app on `addr` (port 0 for any) and return its address.
pub async fn start_login_app(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(login_app))
                    .await;
            });
        }
    });
    Ok(bound)
}

async fn login_app(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let score = parts.headers.get("x-palisade-score").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
    let (status, text) = match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/login") => {
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let fields: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
            let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
            if field("username") == Some(DEMO_USER.0) && field("password") == Some(DEMO_USER.1) {
                (StatusCode::OK, format!("welcome, alice (palisade score {score})\n"))
            } else {
                (StatusCode::UNAUTHORIZED, format!("wrong username or password (palisade score {score})\n"))
            }
        }
        _ => (StatusCode::OK, format!("demo app: POST /login with username and password (palisade score {score})\n")),
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    Ok(response)
}

/// What to try, printed when the demo starts.
pub fn instructions(proxy: SocketAddr, admin: SocketAddr) -> String {
    format!(
        r#"palisade demo is running.
  palisade:   http://{proxy}   (in front of a demo login app; alice / wonderland is the valid login)
  metrics:    http://{admin}/metrics

Try, in another terminal:
  # a normal login passes, and the app sees palisade's score (curl itself costs some points):
  curl -s -d 'username=alice&password=wonderland' http://{proxy}/login

  # logging in again and again: past the login route's burst of 20, 429 with Retry-After:
  for i in $(seq 1 25); do curl -s -o /dev/null -w '%{{http_code}} ' -d 'username=alice&password=wonderland' http://{proxy}/login; done; echo

  # a combo list from one address: a few failures, then refused (403, cred.* detections):
  for i in $(seq 1 12); do curl -s -o /dev/null -w '%{{http_code}} ' --interface 127.0.0.2 -d "username=u$i&password=x" http://{proxy}/login; done; echo

  # an attack tool's user agent is blocked with 403 and its detection ids:
  curl -si -A 'sqlmap/1.7.2#stable (https://sqlmap.org)' http://{proxy}/item?id=1

  # what palisade counted:
  curl -s http://{admin}/metrics | grep palisade_requests_total

Decisions are logged as JSON lines below. Ctrl-C stops the demo.
"#
    )
}
