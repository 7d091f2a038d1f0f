//! The JSON endpoints: bans (list, lift, add), partners, reload.
//!
//! A ban is named by its counter key, as listed (`login:ROUTE:SCOPE:ID:ban`,
//! the id a keyed hash: the store never holds an address or a username),
//! or by the client address it applies to, which is hashed here with the
//! same secret the credential stage uses.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Actor;
use super::{AdminContext, Answer, Served, audit};
use crate::credential::{Counter, LoginKeys, Scope};
use crate::routes::Route;
use crate::store::{BanEntry, Key};

/// Longest ban the API adds (a week): longer is a firewall's job.
const MAX_BAN_SECS: u64 = 7 * 24 * 3600;

/// The routes whose credential stage keeps bans.
fn login_routes<A: Served>(app: &A) -> Vec<Arc<Route>> {
    app.pipeline().routes().routes().filter(|route| route.abuse.is_some()).cloned().collect()
}

/// The login route a ban key belongs to, and the key's scope.
fn route_and_scope<'k>(routes: &[Arc<Route>], key: &'k str) -> Option<(Arc<Route>, &'k str)> {
    routes.iter().find_map(|route| {
        let rest = key.strip_prefix("login:")?.strip_prefix(&*route.name)?.strip_prefix(':')?;
        let (scope, id_and_counter) = rest.split_once(':')?;
        id_and_counter.ends_with(":ban").then(|| (route.clone(), scope))
    })
}

/// The ban key of client address `ip` on `route`.
fn address_ban_key<A: Served>(app: &A, route: &Route, ip: IpAddr) -> String {
    LoginKeys::new(&app.admin_settings().hasher, &route.name, ip, "", None).key(Scope::Ip, Counter::Ban).to_string()
}

fn scope_name(scope: &str) -> &str {
    match scope {
        "ip" => "address",
        "net" => "subnet+fingerprint",
        "fp" => "fingerprint",
        other => other,
    }
}

fn ban_json(routes: &[Arc<Route>], ban: &BanEntry) -> Value {
    let (route, scope) = match route_and_scope(routes, &ban.key) {
        Some((route, scope)) => (Some(route.name.to_string()), scope_name(scope).to_string()),
        None => (None, "unknown".to_string()),
    };
    json!({
        "key": ban.key,
        "route": route,
        "scope": scope,
        "left_s": ban.left.as_secs_f64().ceil() as u64,
        "detections": [ban.reason],
    })
}

/// `GET /api/bans[?ip=ADDRESS]`: every ban in force (or those of one address).
pub async fn list_bans<A: Served>(context: &AdminContext<A>, query: &str) -> Answer {
    let app = context.app.load_full();
    let routes = login_routes(&*app);
    let only = match form_urlencoded::parse(query.as_bytes()).find(|(name, _)| name == "ip") {
        Some((_, ip)) => match ip.trim().parse::<IpAddr>() {
            Ok(ip) => Some(routes.iter().map(|route| address_ban_key(&*app, route, ip)).collect::<Vec<_>>()),
            Err(_) => return Answer::error(StatusCode::BAD_REQUEST, format!("ip={ip:?} is not an IP address")),
        },
        None => None,
    };
    let shards: Vec<Key> = routes.iter().map(|route| route.name.clone()).collect();
    let store = app.pipeline().store();
    let now = app.pipeline().clock().now();
    let bans: Vec<Value> = store
        .bans(&shards, now)
        .await
        .iter()
        .filter(|ban| only.as_ref().is_none_or(|keys| keys.contains(&ban.key)))
        .map(|ban| ban_json(&routes, ban))
        .collect();
    Answer::json(StatusCode::OK, &json!({ "store": store_name(&*app), "bans": bans }))
}

fn store_name<A: Served>(app: &A) -> &'static str {
    match &**app.pipeline().store() {
        crate::store::CounterStore::Local(_) => "in_process",
        crate::store::CounterStore::Redis(redis) if redis.is_up() => "redis",
        crate::store::CounterStore::Redis(_) => "redis_unavailable_local_view",
    }
}

/// What names a ban in a lift or add request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BanTarget {
    /// A ban key as listed.
    key: Option<String>,
    /// A client address: its address-scope ban on every login route (or `route`).
    ip: Option<String>,
    route: Option<String>,
    /// For adding: how long.
    ttl_secs: Option<u64>,
    /// For adding: why (kept with the ban and listed); `admin` by default.
    reason: Option<String>,
}

fn parse_target(body: &[u8]) -> Result<BanTarget, Answer> {
    serde_json::from_slice(body).map_err(|error| {
        Answer::error(
            StatusCode::BAD_REQUEST,
            format!("expected JSON like {{\"ip\": \"203.0.113.7\"}} or {{\"key\": \"login:…:ban\"}}: {error}"),
        )
    })
}

/// The (route, key) pairs a target names.
fn resolve<A: Served>(app: &A, target: &BanTarget) -> Result<Vec<(Arc<Route>, String)>, Answer> {
    let routes = login_routes(app);
    if routes.is_empty() {
        return Err(Answer::error(StatusCode::CONFLICT, "no login route is configured: there are no bans"));
    }
    let chosen: Vec<Arc<Route>> = match &target.route {
        Some(name) => match routes.iter().find(|route| &*route.name == name.as_str()) {
            Some(route) => vec![route.clone()],
            None => {
                let names: Vec<&str> = routes.iter().map(|route| &*route.name).collect();
                return Err(Answer::error(
                    StatusCode::BAD_REQUEST,
                    format!("route {name:?} is not a login route; login routes: {}", names.join(", ")),
                ));
            }
        },
        None => routes.clone(),
    };
    match (&target.key, &target.ip) {
        (Some(key), None) => match route_and_scope(&chosen, key) {
            Some((route, _)) => Ok(vec![(route, key.clone())]),
            None => Err(Answer::error(
                StatusCode::BAD_REQUEST,
                format!("{key:?} is not a ban key of a login route (GET /api/bans lists them)"),
            )),
        },
        (None, Some(ip)) => match ip.trim().parse::<IpAddr>() {
            Ok(ip) => Ok(chosen.iter().map(|route| (route.clone(), address_ban_key(app, route, ip))).collect()),
            Err(_) => Err(Answer::error(StatusCode::BAD_REQUEST, format!("ip {ip:?} is not an IP address"))),
        },
        _ => Err(Answer::error(StatusCode::BAD_REQUEST, "name the ban by exactly one of \"key\" or \"ip\"")),
    }
}

/// The target as the audit line shows it (the address as given: the
/// decision log already names client addresses).
fn target_json(target: &BanTarget) -> Value {
    json!({ "key": target.key, "ip": target.ip, "route": target.route, "ttl_secs": target.ttl_secs })
}

/// `POST /api/bans/lift`: lift a ban everywhere.
pub async fn lift_ban<A: Served>(context: &AdminContext<A>, app: &A, actor: &Actor, body: &[u8]) -> Answer {
    let target = match parse_target(body) {
        Ok(target) => target,
        Err(answer) => return answer,
    };
    if target.ttl_secs.is_some() || target.reason.is_some() {
        return Answer::error(StatusCode::BAD_REQUEST, "lifting takes only \"key\" or \"ip\" (and \"route\")");
    }
    let pairs = match resolve(app, &target) {
        Ok(pairs) => pairs,
        Err(answer) => return answer,
    };
    let store = app.pipeline().store();
    let now = app.pipeline().clock().now();
    let mut lifted = Vec::new();
    let mut problems = Vec::new();
    for (route, key) in &pairs {
        match store.lift_ban(&route.name, key, now).await {
            Ok(true) => lifted.push(key.clone()),
            Ok(false) => {}
            Err(problem) => problems.push(problem.to_string()),
        }
    }
    let result = json!({ "lifted": lifted, "problems": problems });
    audit::record(context, actor, "lift_ban", target_json(&target), result.clone());
    let status = if !problems.is_empty() {
        StatusCode::SERVICE_UNAVAILABLE
    } else if lifted.is_empty() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    Answer::json(status, &result)
}

/// `POST /api/bans`: ban a client address (or a listed key) for a while.
pub async fn add_ban<A: Served>(context: &AdminContext<A>, app: &A, actor: &Actor, body: &[u8]) -> Answer {
    let target = match parse_target(body) {
        Ok(target) => target,
        Err(answer) => return answer,
    };
    let ttl_secs = match target.ttl_secs {
        Some(secs) if (1..=MAX_BAN_SECS).contains(&secs) => secs,
        _ => {
            return Answer::error(StatusCode::BAD_REQUEST, format!("\"ttl_secs\" must be 1 to {MAX_BAN_SECS}"));
        }
    };
    let reason = target.reason.clone().unwrap_or_else(|| "admin".to_string());
    if reason.is_empty() || reason.len() > 64 || reason.chars().any(|c| c.is_control()) {
        return Answer::error(StatusCode::BAD_REQUEST, "\"reason\" must be 1 to 64 printable characters");
    }
    let pairs = match resolve(app, &target) {
        Ok(pairs) => pairs,
        Err(answer) => return answer,
    };
    let store = app.pipeline().store();
    let now = app.pipeline().clock().now();
    for (route, key) in &pairs {
        store.add_ban(&route.name, key, Duration::from_secs(ttl_secs), &reason, now).await;
    }
    let keys: Vec<&String> = pairs.iter().map(|(_, key)| key).collect();
    let result = json!({ "banned": keys, "ttl_secs": ttl_secs, "reason": reason });
    audit::record(context, actor, "add_ban", target_json(&target), result.clone());
    Answer::json(StatusCode::OK, &result)
}

/// `GET /api/partners`: partners, how they are identified, their quota and use.
pub fn partners<A: Served>(context: &AdminContext<A>) -> Answer {
    let app = context.app.load_full();
    let partners: Vec<Value> = app
        .pipeline()
        .allowlist()
        .partners()
        .map(|partner| {
            let (requests, limited) = context.metrics.partner_requests(&partner.name);
            json!({
                "name": &*partner.name,
                "api_keys": partner.api_key_count(),
                "networks": partner.networks(),
                "quota": partner.quota.map(|q| json!({
                    "requests": q.requests,
                    "period_secs": q.period_secs,
                    "burst": q.burst.unwrap_or(q.requests),
                })),
                "requests_total": requests,
                "quota_limited_total": limited,
            })
        })
        .collect();
    Answer::json(StatusCode::OK, &json!({ "partners": partners }))
}

/// `POST /api/reload`: what SIGHUP does; a configuration with problems is
/// answered with every problem and its line, and the running one stays.
pub async fn reload<A: Served>(context: &AdminContext<A>, actor: &Actor) -> Answer {
    let Some(reloader) = context.reloader.get().cloned() else {
        return Answer::error(StatusCode::NOT_IMPLEMENTED, "this process has no configuration file to reload");
    };
    let _one_at_a_time = context.reloading.lock().await;
    let (status, result) = match reloader().await {
        Ok(app) => {
            A::swap_in(&context.app, app, &context.metrics);
            (StatusCode::OK, json!({ "reloaded": true }))
        }
        Err(problems) => {
            context.metrics.reloads_failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let text = problems.to_string();
            let lines: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "reloaded": false, "error": "the configuration was rejected; the running one stays", "problems": lines }),
            )
        }
    };
    audit::record(context, actor, "reload", Value::Null, result.clone());
    Answer::json(status, &result)
}
