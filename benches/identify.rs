//! The identify step's cost per request: no partner proof at all (the
//! common case), an API key, and a Web Bot Auth signature (Ed25519 and
//! P-256: parsing Signature-Input and Signature with sfv, rebuilding the
//! signature base, verifying with ring).
//!
//! `cargo bench --bench identify`

use std::hint::black_box;
use std::sync::Arc;

use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey};
use palisade::config::parse_str;
use palisade::identify::Allowlist;
use palisade::routes::RouteTable;
use palisade::view::RequestView;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

const NOW: u64 = 1_800_000_000;

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Headers of a GET signed over @method, @authority, @path and signature-agent.
fn signed(keyid: &str, sign: &dyn Fn(&[u8]) -> Vec<u8>) -> http::HeaderMap {
    let params = format!(
        "(\"@method\" \"@authority\" \"@path\" \"signature-agent\");created={NOW};keyid=\"{keyid}\";tag=\"web-bot-auth\""
    );
    let base = format!(
        "\"@method\": GET\n\"@authority\": api.example\n\"@path\": /catalog\n\"signature-agent\": \"https://bot.example\"\n\"@signature-params\": {params}"
    );
    let mut headers = http::HeaderMap::new();
    headers.insert("host", "api.example".parse().unwrap());
    headers.insert("signature-agent", "\"https://bot.example\"".parse().unwrap());
    headers.insert("signature-input", format!("sig1={params}").parse().unwrap());
    let signature = base64::engine::general_purpose::STANDARD.encode(sign(base.as_bytes()));
    headers.insert("signature", format!("sig1=:{signature}:").parse().unwrap());
    headers
}

fn bench(c: &mut Criterion) {
    let ed = SigningKey::from_bytes(&[7u8; 32]);
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let p256 = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = p256.public_key().as_ref();
    let config = format!(
        r#"
[[partner]]
name = "keyed"
api_key_sha256 = ["{}"]

[[partner]]
name = "bot"
[partner.signature]
keys = [
  {{ keyid = "ed", public_key = "{}" }},
  {{ keyid = "ec", alg = "ecdsa-p256-sha256", public_key = "{}" }},
]
components = ["@method", "@authority", "@path", "signature-agent"]
agent = "https://bot.example"
max_age_secs = 4000000000
"#,
        palisade::identify::api_key_sha256("k-123"),
        b64url(ed.verifying_key().as_bytes()),
        b64url(point)
    );
    let config = parse_str(&config, "bench.toml").unwrap();
    let allowlist = Allowlist::from_config(&config).unwrap();
    let routes = RouteTable::from_config(&config).unwrap();
    let uri: http::Uri = "/catalog".parse().unwrap();
    let route: Arc<_> = routes.find(&http::Method::GET, "/catalog").clone();
    let ip = "203.0.113.9".parse().unwrap();
    let mut keyed = http::HeaderMap::new();
    keyed.insert("x-api-key", "k-123".parse().unwrap());
    let cases = [
        ("anonymous", http::HeaderMap::new()),
        ("api_key", keyed),
        ("signature_ed25519", signed("ed", &|m| ed.sign(m).to_bytes().to_vec())),
        ("signature_p256", signed("ec", &|m| p256.sign(&rng, m).unwrap().as_ref().to_vec())),
    ];
    let mut group = c.benchmark_group("identify");
    for (name, headers) in &cases {
        let view =
            RequestView::new(&http::Method::GET, http::Version::HTTP_11, &uri, "/catalog", headers, ip, &route, None);
        let identified = allowlist.identify(&view, NOW * 1_000_000_000);
        assert_eq!(identified.signals.len(), 0, "{name}: {:?}", identified.signals);
        group
            .bench_function(*name, |b| b.iter(|| black_box(allowlist.identify(black_box(&view), NOW * 1_000_000_000))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
