//! A minimal, fast HTTP/1.1 upstream for load tests: answers every request
//! with `200 OK` and a short body, keeping connections alive.
//!
//! ```text
//! cargo run --release --example bench_upstream -- 127.0.0.1:18081 [worker-threads]
//! ```
//!
//! Worker threads default to 1 (a current-thread runtime), so on a small
//! machine the upstream takes as little CPU away from the proxy under test
//! as possible; give a number to use a multi-thread runtime instead.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8] = b"ok\n";

async fn answer(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    Ok(response)
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!("bench_upstream listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("bench_upstream: accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            // The request body, if any, is dropped unread; hyper drains it
            // before the next request on the connection.
            let _ =
                http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service_fn(answer)).await;
        });
    }
}

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next().and_then(|a| a.parse::<SocketAddr>().ok()) else {
        eprintln!("usage: bench_upstream <address like 127.0.0.1:18081> [worker-threads]");
        return std::process::ExitCode::from(2);
    };
    let threads = args.next().and_then(|t| t.parse::<usize>().ok()).unwrap_or(1).max(1);
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    };
    let result = runtime.and_then(|runtime| runtime.block_on(serve(addr)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench_upstream: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
