//! The request view: one normalized, read-only picture of a request that
//! every stage after `listen` works from.
//!
//! It borrows from the parsed request (no copies of headers or body) and
//! adds what palisade derives: the resolved client address, the normalized
//! path, the route, and for login routes the username. Detectors see only
//! this, so they behave the same behind the proxy, in replay and in tests.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, Version};
use sha2::{Digest, Sha256};

use crate::routes::Route;

#[derive(Debug)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub version: Version,
    /// Path and query as the client sent them (not decoded).
    pub target: &'a str,
    /// The normalized path routes are matched on.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The client as the listen stage resolved it (see `listen::client_addr`).
    pub client_ip: IpAddr,
    pub route: &'a Arc<Route>,
    pub user_agent: Option<&'a str>,
    /// The login username, held in memory only for this request.
    pub username: Option<String>,
    /// The body, on routes that inspect it.
    pub body: Option<&'a [u8]>,
    /// JA4 fingerprint of the TLS ClientHello, when palisade terminated TLS.
    pub ja4: Option<&'a str>,
    /// The client address's autonomous system, when `[network]` has an MMDB file.
    pub asn: Option<crate::network::AsnInfo>,
    /// The URI's authority (HTTP/2 `:authority`), when it has one.
    pub authority: Option<&'a str>,
    /// The verified client certificate, when palisade terminated mutual TLS.
    pub client_cert: Option<&'a ClientCert>,
    /// Header names exactly as sent (wire order, case, repeats), when the
    /// listen stage could see them (HTTP/1).
    pub wire_names: Option<&'a [Box<str>]>,
    /// The request's shape, when the front door knows it (see [`Known::shape`]).
    pub shape: Option<u64>,
    /// palisade's HTTP fingerprint, computed when first asked for.
    fingerprints: std::sync::OnceLock<crate::fingerprint::Fingerprints>,
    /// The fingerprint counters key on (see [`RequestView::counter_fingerprint`]).
    counter_fingerprint: std::sync::OnceLock<Arc<str>>,
}

impl<'a> RequestView<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        method: &'a Method,
        version: Version,
        uri: &'a http::Uri,
        path: &'a str,
        headers: &'a HeaderMap,
        client_ip: IpAddr,
        route: &'a Arc<Route>,
        body: Option<&'a [u8]>,
    ) -> Self {
        let user_agent = headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok());
        let username = match (&route.login, body) {
            (Some(login), Some(body)) => {
                let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
                login.username(content_type, body)
            }
            _ => None,
        };
        RequestView {
            method,
            version,
            target: uri.path_and_query().map_or("/", |pq| pq.as_str()),
            path,
            query: uri.query(),
            headers,
            client_ip,
            route,
            user_agent,
            username,
            body,
            ja4: None,
            authority: uri.authority().map(|authority| authority.as_str()),
            client_cert: None,
            asn: None,
            wire_names: None,
            shape: None,
            fingerprints: std::sync::OnceLock::new(),
            counter_fingerprint: std::sync::OnceLock::new(),
        }
    }

    /// The header names exactly as the client sent them, when the listen
    /// stage recorded them.
    pub fn with_wire_names(mut self, names: Option<&'a [Box<str>]>) -> Self {
        self.wire_names = names;
        self
    }

    /// What the front door already knows about the request (see [`Known`]).
    pub fn with_known(mut self, known: Known) -> Self {
        if let Some(fingerprints) = known.fingerprints {
            // A new view's cell is empty: this cannot fail.
            let _ = self.fingerprints.set(fingerprints);
        }
        self.shape = known.shape;
        self
    }

    /// palisade's HTTP fingerprint of this request (see [`crate::fingerprint`]).
    pub fn fingerprint(&self) -> &str {
        self.shared_fingerprint()
    }

    /// The same, shared (what a decision keeps: no copy).
    pub fn shared_fingerprint(&self) -> &Arc<str> {
        &self.fingerprints().as_sent
    }

    /// Both HTTP fingerprints (as sent, and folded to lowercase), from one
    /// look into the remembered layouts, whichever is asked for first.
    fn fingerprints(&self) -> &crate::fingerprint::Fingerprints {
        self.fingerprints
            .get_or_init(|| crate::fingerprint::http_fingerprints(self.version, self.method, self.header_names()))
    }

    /// The fingerprint per-client counters key on: the HTTP fingerprint
    /// over header names folded to lowercase (a client's HTTP/1 and HTTP/2
    /// requests count together), joined with the TLS one when palisade
    /// terminated TLS. Computed once per request, whichever stage asks first.
    pub fn counter_fingerprint(&self) -> &str {
        self.counter_fingerprint.get_or_init(|| {
            let folded = &self.fingerprints().folded;
            match self.ja4 {
                Some(ja4) => Arc::from(format!("{folded}|{ja4}")),
                None => folded.clone(),
            }
        })
    }

    /// The client address's autonomous system, when it is known.
    pub fn with_asn(mut self, asn: Option<crate::network::AsnInfo>) -> Self {
        self.asn = asn;
        self
    }

    /// The connection's verified client certificate, when there is one.
    pub fn with_client_cert(mut self, cert: Option<&'a ClientCert>) -> Self {
        self.client_cert = cert;
        self
    }

    /// The connection's TLS fingerprint, when there is one.
    pub fn with_ja4(mut self, ja4: Option<&'a str>) -> Self {
        self.ja4 = ja4;
        self
    }

    /// Header names in wire order: as sent (case and repeats kept) when
    /// they were recorded, else lowercase in order of first appearance.
    pub fn header_names(&self) -> HeaderNames<'_> {
        HeaderNames::new(self.headers, self.wire_names)
    }
}

/// What a front door may already know about a request's view, so that it
/// is not worked out again for every request. Replay knows both per header
/// block (and target): looking the fingerprints up by the names again cost
/// ~900 instructions a request, and the signature stage's scans ~4,000.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// The request's HTTP fingerprints: what
    /// [`crate::fingerprint::http_fingerprints`] gives for the view's
    /// version, method and [`RequestView::header_names`].
    pub fingerprints: Option<crate::fingerprint::Fingerprints>,
    /// A number unique in the process that the front door gives every
    /// request with the same method, version, target and headers (the same
    /// header block, wire names included): requests of one shape have the
    /// same path, query, route, user agent, header names and fingerprint.
    /// A stage may remember what it derived from those alone by shape, for
    /// as long as its configuration lives (the signature stage does).
    pub shape: Option<u64>,
}

/// The header names of a request, in wire order when it was recorded (see
/// [`RequestView::header_names`]). An iterator that can be cloned, to go
/// over the names twice without allocating.
pub enum HeaderNames<'a> {
    Wire(std::slice::Iter<'a, Box<str>>),
    /// `http`'s key iterator cannot be cloned: a clone starts over from
    /// the map and skips the names already taken.
    Map {
        map: &'a http::HeaderMap,
        keys: http::header::Keys<'a, http::HeaderValue>,
        taken: usize,
    },
}

impl<'a> HeaderNames<'a> {
    /// The names a view of these headers gives: the wire names when they
    /// were recorded, else the map's (see [`RequestView::header_names`]).
    pub fn new(map: &'a http::HeaderMap, wire_names: Option<&'a [Box<str>]>) -> Self {
        match wire_names {
            Some(names) => HeaderNames::Wire(names.iter()),
            None => HeaderNames::of_map(map),
        }
    }

    fn of_map(map: &'a http::HeaderMap) -> Self {
        HeaderNames::Map { map, keys: map.keys(), taken: 0 }
    }
}

impl Clone for HeaderNames<'_> {
    fn clone(&self) -> Self {
        match self {
            HeaderNames::Wire(names) => HeaderNames::Wire(names.clone()),
            HeaderNames::Map { map, taken, .. } => {
                let mut keys = map.keys();
                for _ in 0..*taken {
                    keys.next();
                }
                HeaderNames::Map { map, keys, taken: *taken }
            }
        }
    }
}

impl<'a> Iterator for HeaderNames<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        match self {
            HeaderNames::Wire(names) => names.next().map(|name| &**name),
            HeaderNames::Map { keys, taken, .. } => {
                let name = keys.next()?;
                *taken += 1;
                Some(name.as_str())
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            HeaderNames::Wire(names) => names.size_hint(),
            HeaderNames::Map { keys, .. } => keys.size_hint(),
        }
    }
}

/// What palisade knows about a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub sha256: [u8; 32],
    /// The DER of the issuer's name, to compare with a CA's subject.
    pub issuer: Vec<u8>,
    pub subject_cn: Option<String>,
}

impl ClientCert {
    /// Read a certificate's facts; `None` when it cannot be parsed (rustls
    /// would not have accepted it, so that does not happen in serving).
    pub fn from_der(der: &[u8]) -> Option<ClientCert> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(ClientCert {
            sha256: Sha256::digest(der).into(),
            issuer: cert.issuer().as_raw().to_vec(),
            subject_cn: cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string),
        })
    }

    /// `sha256:<hex>` and the subject CN, for the decision log.
    pub fn describe(&self) -> String {
        match &self.subject_cn {
            Some(cn) => format!("cert sha256:{} cn={cn}", hex::encode(self.sha256)),
            None => format!("cert sha256:{}", hex::encode(self.sha256)),
        }
    }
}
