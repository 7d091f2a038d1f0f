//! palisade inside an axum service, as a tower layer: no proxy hop.
//!
//! ```sh
//! cargo run --example axum_login            # listens on 127.0.0.1:3000
//! curl -d 'username=alice&password=wonderland' http://127.0.0.1:3000/login
//! ```
//!
//! The layer runs the same lifecycle as the proxy: the login POST's body
//! is read for the username, credential stuffing is stopped with 403/429
//! before the handler runs, and the handler's status (200 or 401) is the
//! login outcome palisade learns from. `tests/tower.rs` drives this very
//! file.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Form, Router};

#[derive(serde::Deserialize)]
pub struct Credentials {
    username: String,
    password: String,
}

/// The application: a page and a login handler, behind palisade.
pub fn app(layer: palisade::tower::Layer) -> Router {
    // axum keeps the connection's address in `ConnectInfo` (see `serve`).
    let layer = layer.peer_from(|extensions| extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip()));
    Router::new().route("/", get(page)).route("/login", post(login)).layer(layer)
}

async fn page() -> &'static str {
    "<form method=post action=/login>…</form>"
}

/// Only alice knows her password; every other attempt is a 401, which
/// palisade counts as a failed login.
async fn login(Form(credentials): Form<Credentials>) -> (StatusCode, &'static str) {
    if credentials.username == "alice" && credentials.password == "wonderland" {
        (StatusCode::OK, "welcome")
    } else {
        (StatusCode::UNAUTHORIZED, "wrong username or password")
    }
}

/// Serve `app` on `listener`, recording each connection's address.
pub async fn serve(listener: tokio::net::TcpListener, layer: palisade::tower::Layer) -> std::io::Result<()> {
    axum::serve(listener, app(layer).into_make_service_with_connect_info::<SocketAddr>()).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The built-in defaults: a login route on POST /login with credential-abuse protection.
    let mut config = palisade::config::Config::default();
    config.decision_log.path = "-".into();
    let layer = palisade::tower::Layer::from_config(&config)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    eprintln!("axum + palisade on http://{}", listener.local_addr()?);
    serve(listener, layer).await?;
    Ok(())
}
