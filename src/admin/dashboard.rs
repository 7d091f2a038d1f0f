//! `GET /dashboard`: one HTML page with its styles and script inline (no
//! external script, font or CDN; it works offline). It polls
//! `/api/stats` once a second and draws with SVG.

use bytes::Bytes;
use http::StatusCode;

use super::Answer;

const PAGE: &str = include_str!("dashboard.html");

pub fn page() -> Answer {
    Answer {
        status: StatusCode::OK,
        content_type: "text/html; charset=utf-8",
        body: Bytes::from_static(PAGE.as_bytes()),
    }
}
