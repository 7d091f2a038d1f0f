//! `palisade.example.toml` documents the built-in defaults; this keeps the
//! two from drifting apart.

#[test]
fn example_config_is_exactly_the_defaults() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/palisade.example.toml")).unwrap();
    let parsed = palisade::config::parse_str(&text, "palisade.example.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed, palisade::config::Config::default());
}
