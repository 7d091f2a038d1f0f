//! Helpers for unit tests: a request view without a socket, a fixed-seed
//! generator for property loops.

use std::sync::Arc;

use crate::config::Config;
use crate::routes::RouteTable;
use crate::view::RequestView;

/// Build a view of `method target` with `headers` (and a body, on routes
/// that inspect it) under the default routes, and run `f` on it.
pub fn view_with<T>(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    f: impl FnOnce(&RequestView<'_>) -> T,
) -> T {
    view_under(&Config::default(), method, target, headers, body, f)
}

/// [`view_with`] under the routes of `config`.
pub fn view_under<T>(
    config: &Config,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    f: impl FnOnce(&RequestView<'_>) -> T,
) -> T {
    let routes = RouteTable::from_config(config).unwrap();
    let method: http::Method = method.parse().unwrap();
    let uri: http::Uri = target.parse().unwrap();
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        map.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    let normalized = crate::normalize::normalize_path(uri.path(), true);
    let route: Arc<_> = routes.find(&method, &normalized).clone();
    let view = RequestView::new(
        &method,
        http::Version::HTTP_11,
        &uri,
        &normalized,
        &map,
        "192.0.2.1".parse().unwrap(),
        &route,
        body,
    );
    f(&view)
}

/// A small fixed-seed generator (xorshift64) for property loops: the same
/// sequence on every run, so a failure names its case.
pub fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}
