use super::*;
use crate::config::unspanned;
use crate::test_support::view_with;

fn set(rules: &str) -> SignatureSet {
    SignatureSet::from_sources(&[RuleSource { name: "t.toml".into(), text: rules.into() }], &[], &[])
        .unwrap_or_else(|e| panic!("{e:?}"))
}

fn problems(rules: &str) -> Vec<Invalid> {
    SignatureSet::from_sources(&[RuleSource { name: "t.toml".into(), text: rules.into() }], &[], &[]).unwrap_err()
}

fn fired(set: &SignatureSet, method: &str, target: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Vec<String> {
    let mut signals = Vec::new();
    view_with(method, target, headers, body, |view| set.scan(view, &mut signals));
    let mut ids: Vec<String> = signals.iter().map(|s| s.id.to_string()).collect();
    ids.sort();
    ids
}

fn builtin() -> SignatureSet {
    SignatureSet::from_config(&Config::default()).unwrap()
}

#[test]
fn builtin_rules_flag_tools_and_empty_agents() {
    let set = builtin();
    let ua = |ua: &str| fired(&set, "GET", "/", &[("user-agent", ua)], None);
    assert!(ua("sqlmap/1.7.2#stable (https://sqlmap.org)").contains(&"ua.attack_tool".to_string()));
    assert!(fired(&set, "GET", "/", &[], None).contains(&"ua.empty".to_string()));
    assert!(ua("  ").contains(&"ua.empty".to_string()), "a blank user agent is absent");
}

#[test]
fn literal_kinds_and_case() {
    let set = set(r#"
[[rule]]
id = "c"
field = "user_agent"
contains = "Bot"
score = 1
[[rule]]
id = "p"
field = "path"
prefix = "/admin"
score = 1
[[rule]]
id = "e"
field = "method"
equals = "TRACE"
score = 1
[[rule]]
id = "cs"
field = "header:x-tool"
contains = "Exact"
case_sensitive = true
score = 1
"#);
    assert_eq!(fired(&set, "GET", "/x", &[("user-agent", "my-bot/1")], None), ["c"]);
    assert_eq!(fired(&set, "GET", "/admin/x", &[("user-agent", "a")], None), ["p"]);
    assert!(fired(&set, "GET", "/x/admin", &[("user-agent", "a")], None).is_empty(), "prefix anchors at the start");
    assert_eq!(fired(&set, "TRACE", "/", &[("user-agent", "a")], None), ["e"]);
    assert!(fired(&set, "GET", "/", &[("user-agent", "a"), ("x-tool", "exact")], None).is_empty());
    assert_eq!(fired(&set, "GET", "/", &[("user-agent", "a"), ("x-tool", "Exact")], None), ["cs"]);
}

#[test]
fn all_and_any_combine_conditions() {
    let set = set(r#"
[[rule]]
id = "chrome-without-language"
all = [
  { field = "user_agent", regex = 'Chrome/\d+' },
  { field = "header:accept-language", absent = true },
]
any = [
  { field = "method", equals = "POST" },
  { field = "path", prefix = "/login" },
]
score = 20
"#);
    let chrome = ("user-agent", "Mozilla/5.0 Chrome/120.0 Safari/537.36");
    assert_eq!(fired(&set, "POST", "/x", &[chrome], None), ["chrome-without-language"]);
    assert_eq!(fired(&set, "GET", "/login", &[chrome], None), ["chrome-without-language"]);
    assert!(fired(&set, "GET", "/x", &[chrome], None).is_empty(), "no `any` condition holds");
    assert!(fired(&set, "POST", "/x", &[chrome, ("accept-language", "en")], None).is_empty());
}

#[test]
fn every_matching_regex_rule_is_reported() {
    let set = set(r#"
[[rule]]
id = "a"
field = "query"
regex = 'union\s+select'
score = 10
[[rule]]
id = "b"
field = "query"
regex = 'select'
score = 10
"#);
    assert_eq!(fired(&set, "GET", "/item?id=1%20UNION%20SELECT", &[], None), ["a", "b"], "the query is decoded");
    assert_eq!(fired(&set, "GET", "/item?id=1+union+select", &[("user-agent", "x")], None), ["a", "b"]);
}

#[test]
fn body_rules_see_inspected_bodies_and_log_only_rule_text() {
    let set = set(r#"
[[rule]]
id = "body.marker"
field = "body"
contains = "password=hunter2"
score = 10
"#);
    let headers = [("user-agent", "x"), ("content-type", "application/x-www-form-urlencoded")];
    let mut signals = Vec::new();
    view_with("POST", "/login", &headers, Some(b"username=a&password=hunter2"), |view| set.scan(view, &mut signals));
    assert_eq!(signals.len(), 1);
    let evidence = serde_json::to_string(&signals[0].evidence).unwrap();
    assert!(evidence.contains("\"body\""), "{evidence}");
    assert!(!evidence.contains("username=a"), "request text never enters the evidence: {evidence}");
}

#[test]
fn bad_rules_are_rejected_with_file_line_id_and_reason() {
    let bad = problems(
        "[[rule]]\nid = \"ok\"\nfield = \"user_agent\"\ncontains = \"x\"\nscore = 1\n\n[[rule]]\nid = \"broken\"\nfield = \"user_agent\"\nregex = \"(unclosed\"\nscore = 1\n\n[[rule]]\nid = \"nofield\"\nfield = \"colour\"\ncontains = \"x\"\nscore = 1\n",
    );
    let text: Vec<String> = bad.into_iter().map(|i| format!("{:?} {} {}", i.elsewhere, i.key, i.message)).collect();
    assert_eq!(text.len(), 2, "{text:#?}");
    assert!(
        text[0].contains("\"t.toml\", Some(7)")
            && text[0].contains("rule broken")
            && text[0].contains("unclosed group"),
        "{text:#?}"
    );
    assert!(
        text[1].contains("Some(13)")
            && text[1].contains("rule nofield")
            && text[1].contains("unknown field \"colour\""),
        "{text:#?}"
    );
}

#[test]
fn duplicate_ids_unknown_keys_and_empty_rules_are_errors() {
    let dup = problems(
        "[[rule]]\nid = \"a\"\nfield = \"path\"\nprefix = \"/\"\nscore = 1\n[[rule]]\nid = \"a\"\nfield = \"path\"\nprefix = \"/\"\nscore = 1\n",
    );
    assert!(dup[0].message.contains("duplicate rule id"), "{dup:?}");
    let unknown = problems("[[rule]]\nid = \"a\"\nfeild = \"path\"\n");
    assert_eq!(unknown[0].elsewhere, Some(("t.toml".to_string(), Some(3))), "{unknown:?}");
    let empty = problems("[[rule]]\nid = \"a\"\nscore = 1\n");
    assert!(empty[0].message.contains("no condition"), "{empty:?}");
    let two = problems("[[rule]]\nid = \"a\"\nfield = \"path\"\nprefix = \"/\"\ncontains = \"x\"\nscore = 1\n");
    assert!(two[0].message.contains("exactly one"), "{two:?}");
}

#[test]
fn configuration_can_shadow_or_disable_rules_by_id() {
    let rules = RuleSource {
        name: "t.toml".into(),
        text: "[[rule]]\nid = \"a\"\nfield = \"path\"\nprefix = \"/\"\nscore = 1\n[[rule]]\nid = \"b\"\nfield = \"path\"\nprefix = \"/\"\nscore = 1\n".into(),
    };
    let set =
        SignatureSet::from_sources(std::slice::from_ref(&rules), &[unspanned("a".into())], &[unspanned("b".into())])
            .unwrap();
    let mut signals = Vec::new();
    view_with("GET", "/", &[], None, |view| set.scan(view, &mut signals));
    assert_eq!(signals.len(), 1);
    assert!(signals[0].shadow);
    let unknown = SignatureSet::from_sources(&[rules], &[unspanned("nope".into())], &[]).unwrap_err();
    assert_eq!(unknown[0].key, "signatures.shadow[0]");
}

#[test]
fn rules_can_look_at_the_route_profile_and_version() {
    let set = set(r#"
[[rule]]
id = "shape.http10_login"
all = [
  { field = "version", equals = "HTTP/1.0" },
  { field = "profile", equals = "login" },
]
score = 30
"#);
    // The unit-test view is HTTP/1.1; the login profile alone does not fire.
    assert!(fired(&set, "POST", "/login", &[("user-agent", "x")], Some(b"")).is_empty());
}

#[test]
fn an_endless_rule_file_is_refused_after_the_size_cap() {
    let error = super::read_rule_files(std::path::Path::new("/dev/zero")).unwrap_err();
    assert!(error.to_string().contains("larger than 4194304 bytes"), "{error}");
}

#[test]
fn header_rules_see_every_value_of_a_repeated_header_and_more_headers_than_one_pass_holds() {
    let long = "x-a-header-name-longer-than-sixty-four-bytes-so-its-length-bit-is-shared";
    let mut rules = format!(
        r#"
[[rule]]
id = "first"
field = "header:x-tool"
equals = "one"
score = 1
[[rule]]
id = "second"
field = "header:x-tool"
equals = "two"
score = 1
[[rule]]
id = "no-accept"
field = "header:accept"
absent = true
score = 1
[[rule]]
id = "long"
field = "header:{long}"
contains = "y"
score = 1
"#
    );
    // More header fields than `matches` finds in its one pass.
    for i in 0..40 {
        rules.push_str(&format!("[[rule]]\nid = \"h{i}\"\nfield = \"header:x-h{i}\"\nequals = \"v\"\nscore = 1\n"));
    }
    let set = set(&rules);
    let headers = [("x-tool", "one"), ("accept", "*/*"), ("x-tool", "two"), (long, "yes"), ("x-h1", "v")];
    assert_eq!(fired(&set, "GET", "/", &headers, None), ["first", "h1", "long", "second"]);
    let headers = [("x-h39", "w"), ("x-h39", "v"), ("x-h0", "v"), ("x-tool", "two")];
    assert_eq!(fired(&set, "GET", "/", &headers, None), ["h0", "h39", "no-accept", "second"]);
}
