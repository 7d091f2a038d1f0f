//! `palisade.example.toml` documents the built-in defaults; this keeps the
//! two from drifting apart.

#[test]
fn example_config_is_exactly_the_defaults() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/palisade.example.toml")).unwrap();
    let parsed = palisade::config::parse_str(&text, "palisade.example.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed, palisade::config::Config::default());
    let loaded = palisade::config::load_file(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/palisade.example.toml"
    )))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(palisade::config::Config { base_dir: None, ..loaded }, palisade::config::Config::default());
}
