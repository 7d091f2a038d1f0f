//! Partners proven by cryptography, through the real proxy: requests
//! signed here (RFC 9421 / Web Bot Auth) with an Ed25519 implementation
//! palisade does not use (ed25519-dalek; palisade verifies with ring), and
//! P-256 keys; replay across two replicas sharing a real Redis.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::Value;

use common::redis::RedisServer;
use common::{Palisade, Upstream, http1_client, request, send};

const SQLMAP_UA: &str = "sqlmap/1.7.2#stable (https://sqlmap.org)";
const AGENT: &str = "https://searchbot.example";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The partner's signing key (a fixed seed, so the test is repeatable).
fn partner_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

/// What to sign and how: the test's own RFC 9421 signer, written from the
/// RFC, sharing no code with palisade.
struct Sign<'a> {
    method: &'a str,
    authority: String,
    path: &'a str,
    body: &'a str,
    created: i64,
    nonce: Option<String>,
    keyid: String,
}

impl Sign<'_> {
    /// Headers of a Web Bot Auth request: Signature-Agent, Content-Digest
    /// for a body, Signature-Input and Signature, signed by `sign`.
    fn headers(&self, sign: impl Fn(&[u8]) -> Vec<u8>) -> Vec<(String, String)> {
        let mut headers = vec![("signature-agent".to_string(), format!("\"{AGENT}\""))];
        let mut components = vec!["@method", "@authority", "@path", "signature-agent"];
        let mut base = format!(
            "\"@method\": {}\n\"@authority\": {}\n\"@path\": {}\n\"signature-agent\": \"{AGENT}\"\n",
            self.method, self.authority, self.path
        );
        if !self.body.is_empty() {
            use sha2::Digest as _;
            let digest = format!("sha-256=:{}:", b64(&sha2::Sha256::digest(self.body.as_bytes())));
            base.push_str(&format!("\"content-digest\": {digest}\n"));
            components.push("content-digest");
            headers.push(("content-digest".into(), digest));
        }
        let list: Vec<String> = components.iter().map(|c| format!("\"{c}\"")).collect();
        let mut params = format!(
            "({});created={};expires={};keyid=\"{}\"",
            list.join(" "),
            self.created,
            self.created + 300,
            self.keyid
        );
        if let Some(nonce) = &self.nonce {
            params.push_str(&format!(";nonce=\"{nonce}\""));
        }
        params.push_str(";tag=\"web-bot-auth\"");
        base.push_str(&format!("\"@signature-params\": {params}"));
        headers.push(("signature-input".into(), format!("sig1={params}")));
        headers.push(("signature".into(), format!("sig1=:{}:", b64(&sign(base.as_bytes())))));
        headers
    }
}

fn signed_request(
    url: &str,
    sign: &Sign<'_>,
    signer: impl Fn(&[u8]) -> Vec<u8>,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let headers = sign.headers(signer);
    let mut all: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    all.push(("user-agent", SQLMAP_UA));
    request(sign.method, url, &all, sign.body)
}

fn ed25519(key: &SigningKey) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
    move |message| key.sign(message).to_bytes().to_vec()
}

fn partner_config(extra: &str) -> String {
    let public = b64url(partner_key().verifying_key().as_bytes());
    format!(
        r#"
decision_log.sample_allowed = 1.0

[[partner]]
name = "searchbot"
quota = {{ requests = 50, period_secs = 60 }}

[partner.signature]
keys = [{{ keyid = "searchbot-2026", public_key = "{public}" }}]
components = ["@method", "@authority", "@path", "signature-agent"]
agent = "{AGENT}"
max_age_secs = 60
clock_skew_secs = 5
{extra}
"#
    )
}

fn detections(answer_body: &str) -> Value {
    serde_json::from_str::<Value>(answer_body).unwrap()["detections"].clone()
}

fn reason(line: &Value) -> String {
    let signal = &line["signals"][0];
    signal["evidence"].as_array().unwrap().iter().find(|e| e["name"] == "reason").unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string()
}

fn line_for<'a>(lines: &'a [Value], answer_body: &str) -> &'a Value {
    let id = serde_json::from_str::<Value>(answer_body).unwrap()["request_id"].as_str().unwrap().to_string();
    lines.iter().find(|l| l["request_id"] == id.as_str()).unwrap_or_else(|| panic!("no log line for {id}"))
}

#[test]
fn rfc_9421_b_2_6_is_reproduced_byte_for_byte_by_the_test_signer() {
    // RFC 9421 B.1.4's Ed25519 private key (PKCS#8; the seed is its last 32 bytes).
    let pkcs8 = base64::engine::general_purpose::STANDARD
        .decode("MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF")
        .unwrap();
    let key = SigningKey::from_bytes(&pkcs8[16..].try_into().unwrap());
    assert_eq!(b64url(key.verifying_key().as_bytes()), "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs");
    let base = concat!(
        "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n",
        "\"@method\": POST\n",
        "\"@path\": /foo\n",
        "\"@authority\": example.com\n",
        "\"content-type\": application/json\n",
        "\"content-length\": 18\n",
        "\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\");created=1618884473;keyid=\"test-key-ed25519\"",
    );
    // Ed25519 is deterministic: the published signature, exactly.
    assert_eq!(
        b64(&key.sign(base.as_bytes()).to_bytes()),
        "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw=="
    );
}

#[tokio::test]
async fn signatures_prove_partners_and_failed_proofs_are_blocked_with_a_reason() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(&partner_config(""), &upstream).await;
    let client = http1_client();
    let authority = palisade.addr().to_string();
    let key = partner_key();
    let sign = |path: &'static str, body: &'static str, created: i64, nonce: Option<&str>| Sign {
        method: if body.is_empty() { "GET" } else { "POST" },
        authority: authority.clone(),
        path,
        body,
        created,
        nonce: nonce.map(str::to_string),
        keyid: "searchbot-2026".into(),
    };

    // Valid: the partner, even with an attack tool's user agent.
    let valid = signed_request(&palisade.url("/catalog"), &sign("/catalog", "", now(), Some("n-1")), ed25519(&key));
    let answer = send(&client, valid).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = upstream.last();
    assert_eq!(seen.headers["x-palisade-partner"], "searchbot");
    assert_eq!(seen.headers["x-palisade-score"], "99");
    let request_id = seen.headers["x-palisade-request-id"].to_str().unwrap().to_string();

    // A signed body: content-digest covered and checked.
    let post = sign("/orders", "{\"sku\":42}", now(), Some("n-2"));
    let answer = send(&client, signed_request(&palisade.url("/orders"), &post, ed25519(&key))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(upstream.last().body, "{\"sku\":42}");

    let mut failures = Vec::new();
    // Tampered path: signed for /catalog, sent to /admin.
    let tampered = signed_request(&palisade.url("/admin"), &sign("/catalog", "", now(), Some("n-3")), ed25519(&key));
    failures.push(("tampered path", send(&client, tampered).await, "bad_signature"));
    // Expired: created two minutes ago, older than max_age + skew.
    let old = signed_request(&palisade.url("/catalog"), &sign("/catalog", "", now() - 120, Some("n-4")), ed25519(&key));
    failures.push(("expired", send(&client, old).await, "expired"));
    // Wrong key: another key, the partner's key id.
    let stranger = SigningKey::from_bytes(&[9u8; 32]);
    let forged =
        signed_request(&palisade.url("/catalog"), &sign("/catalog", "", now(), Some("n-5")), ed25519(&stranger));
    failures.push(("wrong key", send(&client, forged).await, "bad_signature"));
    // A body swapped after signing (Content-Digest of the signed body).
    let swapped = {
        let mut request = signed_request(&palisade.url("/orders"), &post, ed25519(&key));
        *request.body_mut() = http_body_util::Full::new(bytes::Bytes::from_static(b"{\"sku\":43}"));
        // The nonce of `post` was used: a new one, re-signed, then swapped.
        let fresh = Sign { nonce: Some("n-6".into()), ..sign("/orders", "{\"sku\":42}", now(), None) };
        let mut resigned = signed_request(&palisade.url("/orders"), &fresh, ed25519(&key));
        *resigned.body_mut() = request.into_body();
        resigned
    };
    failures.push(("swapped body", send(&client, swapped).await, "content_digest_mismatch"));
    for (what, answer, _) in &failures {
        assert_eq!(answer.status, 403, "{what}: {}", answer.body);
        // Not a partner: the failed proof first, then what the bot
        // detectors say about the request like any other (an attack tool's UA).
        let ids = detections(&answer.body);
        assert_eq!(ids[0], "partner.signature_invalid", "{what}: {ids}");
        assert!(ids.as_array().unwrap().iter().any(|id| id == "ua.attack_tool"), "{what}: {ids}");
    }

    // Replayed nonce: the first valid request's exact headers again.
    let replay = signed_request(&palisade.url("/catalog"), &sign("/catalog", "", now(), Some("n-1")), ed25519(&key));
    let replayed = send(&client, replay).await;
    assert_eq!(replayed.status, 403, "{}", replayed.body);
    assert_eq!(detections(&replayed.body)[0], "partner.signature_replayed");

    // The decision log says why each failed, and how the partner was proven.
    let lines = palisade.log_lines(8).await;
    for (what, answer, expected) in &failures {
        let line = line_for(&lines, &answer.body);
        assert_eq!(reason(line), *expected, "{what}");
        assert!(line.get("partner").is_none(), "{what}: not a partner");
        assert_eq!(line["signals"][0]["evidence"][1]["value"], "searchbot", "{what}: the claimed partner");
    }
    let line = line_for(&lines, &replayed.body);
    assert_eq!(reason(line), "nonce_reused");
    let proven = lines.iter().find(|l| l["request_id"] == request_id.as_str()).unwrap();
    assert_eq!(proven["partner"], "searchbot");
    assert_eq!(proven["partner_by"], "signature");
    assert_eq!(proven["partner_proof"], "searchbot-2026");
    assert_eq!(upstream.seen().len(), 2, "no failed proof reached the upstream");
}

#[tokio::test]
async fn p256_keys_and_a_local_key_directory_prove_partners() {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let p256 = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = p256.public_key().as_ref().to_vec();
    // The partner publishes a JWKS key directory; palisade reads a local copy.
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("searchbot.jwks.json");
    let jwk = serde_json::json!({"keys": [
        {"kty": "EC", "crv": "P-256", "x": b64url(&point[1..33]), "y": b64url(&point[33..]), "kid": "ec-1"},
        {"kty": "OKP", "crv": "Ed25519", "x": b64url(partner_key().verifying_key().as_bytes())},
    ]});
    std::fs::write(&jwks, jwk.to_string()).unwrap();
    let upstream = Upstream::start().await;
    let config = format!(
        r#"
[[partner]]
name = "searchbot"
[partner.signature]
key_directory = "{}"
agent = "{AGENT}"
"#,
        jwks.display()
    );
    let palisade = Palisade::start(&config, &upstream).await;
    let client = http1_client();
    let sign = |keyid: &str, nonce: &str| Sign {
        method: "GET",
        authority: palisade.addr().to_string(),
        path: "/catalog",
        body: "",
        created: now(),
        nonce: Some(nonce.into()),
        keyid: keyid.into(),
    };
    let ecdsa = |message: &[u8]| p256.sign(&rng, message).unwrap().as_ref().to_vec();
    let answer = send(&client, signed_request(&palisade.url("/catalog"), &sign("ec-1", "a"), ecdsa)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(upstream.last().headers["x-palisade-partner"], "searchbot");
    // The Ed25519 key of the directory, named by its JWK thumbprint as Web Bot Auth does.
    let thumbprint = {
        use sha2::Digest as _;
        let canonical =
            format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64url(partner_key().verifying_key().as_bytes()));
        b64url(&sha2::Sha256::digest(canonical.as_bytes()))
    };
    let key = partner_key();
    let answer = send(&client, signed_request(&palisade.url("/catalog"), &sign(&thumbprint, "b"), ed25519(&key))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // The P-256 key id with an Ed25519 signature: refused.
    let answer = send(&client, signed_request(&palisade.url("/catalog"), &sign("ec-1", "c"), ed25519(&key))).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
}

/// Two replicas share one Redis: a nonce used on one is a replay on the other.
#[tokio::test]
async fn a_nonce_replayed_on_another_replica_is_caught_through_redis() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let store = format!(
        "[store]\nredis_url = \"{}\"\nhash_key = \"replicas share this secret\"\ntimeout_ms = 1000\n",
        redis.url()
    );
    let config = format!("{}\n{store}", partner_config(""));
    let first = Palisade::start(&config, &upstream).await;
    let second = Palisade::start(&config, &upstream).await;
    let client = http1_client();
    let key = partner_key();
    // Both replicas are reached under one name, as behind a load balancer.
    let sign = |nonce: &str| Sign {
        method: "GET",
        authority: "api.example".into(),
        path: "/catalog",
        body: "",
        created: now(),
        nonce: Some(nonce.into()),
        keyid: "searchbot-2026".into(),
    };
    let to = |palisade: &Palisade, nonce: &str| {
        let mut request = signed_request(&palisade.url("/catalog"), &sign(nonce), ed25519(&key));
        request.headers_mut().insert("host", "api.example".parse().unwrap());
        request
    };
    let answer = send(&client, to(&first, "shared-nonce")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = send(&client, to(&second, "shared-nonce")).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(detections(&answer.body)[0], "partner.signature_replayed");
    // A fresh nonce passes on either.
    assert_eq!(send(&client, to(&second, "other-nonce")).await.status, 200);
    // The nonce is in Redis only as a hash.
    let keys = redis.keys();
    assert!(keys.iter().any(|k| k.contains("sn:")), "{keys:?}");
    assert!(!redis.dump().contains("shared-nonce"));
}

// === mutual TLS ===

mod mtls {
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

    use super::common::{Palisade, Upstream};
    use super::{SQLMAP_UA, Value};

    /// A client certificate issued by the test CA.
    pub struct ClientCert {
        pub der: CertificateDer<'static>,
        key: Vec<u8>,
    }

    impl ClientCert {
        pub fn sha256(&self) -> String {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(&self.der))
        }
    }

    /// The partner CA, written as PEM, and certificates it issues.
    pub struct Pki {
        pub dir: tempfile::TempDir,
        ca: CertifiedIssuer<'static, KeyPair>,
        server: CertificateDer<'static>,
    }

    impl Pki {
        pub fn new() -> Pki {
            let dir = tempfile::tempdir().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, "Partner CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
            let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
            std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
            let server = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            std::fs::write(dir.path().join("server.pem"), server.cert.pem()).unwrap();
            std::fs::write(dir.path().join("server.key"), server.signing_key.serialize_pem()).unwrap();
            Pki { dir, ca, server: server.cert.der().clone() }
        }

        pub fn issue(&self, common_name: &str) -> ClientCert {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, common_name);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.ca).unwrap();
            ClientCert { der: cert.der().clone(), key: key.serialize_der() }
        }

        pub fn path(&self, name: &str) -> String {
            self.dir.path().join(name).display().to_string()
        }

        /// One GET over a new TLS connection, presenting `cert` (or none);
        /// the status and the partner header the upstream saw.
        pub async fn get(&self, palisade: &Palisade, upstream: &Upstream, cert: Option<&ClientCert>) -> (u16, String) {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.server.clone()).unwrap();
            let builder =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots);
            let config = match cert {
                Some(cert) => builder
                    .with_client_auth_cert(
                        vec![cert.der.clone()],
                        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key.clone())),
                    )
                    .unwrap(),
                None => builder.with_no_client_auth(),
            };
            let tcp = tokio::net::TcpStream::connect(palisade.addr()).await.unwrap();
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .expect("TLS handshake");
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.expect("HTTP/1.1 over TLS");
            tokio::spawn(connection);
            let before = upstream.seen().len();
            let request = http::Request::get("/catalog")
                .header("host", "localhost")
                .header("user-agent", SQLMAP_UA)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status().as_u16();
            let _ = response.into_body().collect().await;
            let partner = if upstream.seen().len() > before {
                let seen = upstream.last();
                seen.headers.get("x-palisade-partner").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
            } else {
                String::new()
            };
            (status, partner)
        }
    }

    pub fn log_partner(lines: &[Value]) -> Vec<(String, String, String)> {
        lines
            .iter()
            .filter(|l| l.get("partner").is_some())
            .map(|l| {
                (
                    l["partner"].as_str().unwrap().to_string(),
                    l["partner_by"].as_str().unwrap().to_string(),
                    l["partner_proof"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

#[tokio::test]
async fn a_pinned_client_certificate_is_the_partner_and_another_from_the_same_ca_is_not() {
    let pki = mtls::Pki::new();
    let pinned = pki.issue("connector-1.bank.example");
    let sibling = pki.issue("connector-2.bank.example");
    let upstream = Upstream::start().await;
    let config = format!(
        r#"
[tls]
cert_path = "{server}"
key_path = "{key}"

[decision_log]
sample_allowed = 1.0

[[partner]]
name = "bank"
[partner.mtls]
ca_path = "{ca}"
cert_sha256 = ["{pin}"]
"#,
        server = pki.path("server.pem"),
        key = pki.path("server.key"),
        ca = pki.path("ca.pem"),
        pin = pinned.sha256(),
    );
    let palisade = Palisade::start(&config, &upstream).await;
    // The pinned certificate: the partner, even with an attack tool's UA.
    assert_eq!(pki.get(&palisade, &upstream, Some(&pinned)).await, (200, "bank".to_string()));
    // Another certificate of the same CA: not the partner (and sqlmap is sqlmap).
    assert_eq!(pki.get(&palisade, &upstream, Some(&sibling)).await.0, 403);
    // No certificate at all: an ordinary anonymous client.
    assert_eq!(pki.get(&palisade, &upstream, None).await.0, 403);
    let lines = palisade.log_lines(3).await;
    let partners = mtls::log_partner(&lines);
    assert_eq!(partners.len(), 1, "{lines:?}");
    assert_eq!(partners[0].0, "bank");
    assert_eq!(partners[0].1, "mtls");
    assert_eq!(partners[0].2, format!("cert sha256:{} cn=connector-1.bank.example", pinned.sha256()));

    // CA-wide trust, said in the configuration: the sibling is the partner too.
    let ca_wide = config.replace(&format!("cert_sha256 = [\"{}\"]", pinned.sha256()), "any_from_ca = true");
    let palisade = Palisade::start(&ca_wide, &upstream).await;
    assert_eq!(pki.get(&palisade, &upstream, Some(&sibling)).await, (200, "bank".to_string()));
    // By subject: only the named connector.
    let by_subject = config
        .replace(&format!("cert_sha256 = [\"{}\"]", pinned.sha256()), "subject_cn = \"connector-2.bank.example\"");
    let palisade = Palisade::start(&by_subject, &upstream).await;
    assert_eq!(pki.get(&palisade, &upstream, Some(&sibling)).await, (200, "bank".to_string()));
    assert_eq!(pki.get(&palisade, &upstream, Some(&pinned)).await.0, 403);
}

#[test]
fn palisade_check_names_the_line_of_every_bad_partner_proof() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.jwks.json"),
        "{\n  \"keys\": [\n    {\"kty\": \"OKP\", \"crv\": \"Ed25519\"\n  ]\n}\n",
    )
    .unwrap();
    let config = r#"
[[partner]]
name = "searchbot"
[partner.signature]
keys = [{ alg = "rsa-v1_5-sha256", public_key = "AAAA" }, { public_key = "not base64!" }]
key_directory = "bad.jwks.json"
components = ["@method", "@target-uri"]

[[partner]]
name = "bank"
[partner.mtls]
ca_path = "missing-ca.pem"
cert_sha256 = ["abcd"]
"#;
    let path = dir.path().join("palisade.toml");
    std::fs::write(&path, config).unwrap();
    let error = palisade::app::load_file(&path).unwrap_err().to_string();
    for expected in [
        "palisade.toml:5: partner[0].signature.keys[0].alg",
        "palisade.toml:5: partner[0].signature.keys[1].public_key",
        "bad.jwks.json:4: partner[0].signature.key_directory",
        "palisade.toml:7: partner[0].signature.components",
        "palisade.toml:12: partner[1].mtls.ca_path: client certificates need a `[tls]` section",
        "palisade.toml:12: partner[1].mtls.ca_path: cannot read",
        "palisade.toml:13: partner[1].mtls.cert_sha256[0]",
    ] {
        assert!(error.contains(expected), "missing {expected:?} in:\n{error}");
    }
}
