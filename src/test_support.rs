//! Helpers for unit tests: a request view without a socket.

use std::sync::Arc;

use crate::config::Config;
use crate::routes::RouteTable;
use crate::view::RequestView;

/// Build a view of `method path` with an optional user agent and run `f` on it.
pub fn view_for(method: &str, path: &str, user_agent: Option<&str>, f: impl FnOnce(&RequestView<'_>)) {
    let config = Config::default();
    let routes = RouteTable::from_config(&config).unwrap();
    let method: http::Method = method.parse().unwrap();
    let uri: http::Uri = path.parse().unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("host", "example.test".parse().unwrap());
    if let Some(ua) = user_agent {
        headers.insert("user-agent", ua.parse().unwrap());
    }
    let normalized = crate::normalize::normalize_path(uri.path(), true);
    let route: Arc<_> = routes.find(&method, &normalized).clone();
    let view = RequestView::new(
        &method,
        http::Version::HTTP_11,
        &uri,
        &normalized,
        &headers,
        "192.0.2.1".parse().unwrap(),
        &route,
        None,
    );
    f(&view)
}
