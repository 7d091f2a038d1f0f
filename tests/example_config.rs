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

/// Every ```toml block of the README and of the `docs/` pages is real
/// configuration (or a rule file): parsed with the same schema, so a renamed
/// key breaks this test instead of a reader's deployment. Values that point
/// at files are not checked here (the blocks use example paths).
#[test]
fn documented_toml_blocks_use_real_keys() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    let mut blocks = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let mut current: Option<String> = None;
        for line in text.lines() {
            match (&mut current, line.trim()) {
                (None, "```toml") => current = Some(String::new()),
                (Some(_), "```") => blocks.push((page.clone(), current.take().unwrap())),
                (Some(block), _) => {
                    block.push_str(line);
                    block.push('\n');
                }
                _ => {}
            }
        }
    }
    assert!(blocks.len() >= 5, "found only {} toml blocks", blocks.len());
    for (page, block) in &blocks {
        let page = page.display();
        if block.contains("[[rule]]") {
            if let Err(error) = toml::from_str::<palisade::signatures::rule::RuleFile>(block) {
                panic!("{page}: rule example does not match the rule format: {error}\n{block}");
            }
            continue;
        }
        if let Err(error) = toml::from_str::<palisade::config::Config>(block) {
            panic!("{page}: block does not match the schema: {error}\n{block}");
        }
    }
}

/// The commented checkout route of the example compiles, uncommented: a
/// payment route with its card, account and outcome settings.
#[test]
fn the_example_checkout_route_compiles() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/palisade.example.toml")).unwrap();
    let start = text.find("# [[route]]\n# name = \"checkout\"").expect("the example shows a checkout route");
    let block: String = text[start..]
        .lines()
        .take_while(|line| line.starts_with('#'))
        .map(|line| line.strip_prefix("# ").unwrap_or(line.trim_start_matches('#')))
        .collect::<Vec<_>>()
        .join("\n");
    let config = palisade::config::parse_str(&block, "checkout.toml").unwrap_or_else(|e| panic!("{e}\n{block}"));
    let routes = palisade::routes::RouteTable::from_config(&config).unwrap_or_else(|e| panic!("{e:?}"));
    let checkout = routes.find(&http::Method::POST, "/api/checkout");
    assert_eq!(&*checkout.name, "checkout");
    let payment = checkout.payment.as_ref().expect("payment settings");
    assert_eq!(payment.account_header.as_deref(), Some("X-User-Id"));
    assert_eq!(payment.abuse.card_accounts, 3);
    assert!(checkout.inspects_body() && checkout.reads_response_body());
}
