//! Audit lines: every change made through the admin API goes into the
//! decision log as one JSON line saying who, what, when and how it went.

use serde_json::{Value, json};

use super::AdminContext;
use super::auth::Actor;
use crate::clock::Clock as _;

/// Write one audit line: `action` (`lift_ban`, `add_ban`, `reload`), what
/// it was applied to, and the result.
pub fn record<A>(context: &AdminContext<A>, actor: &Actor, action: &str, target: Value, result: Value) {
    let now = crate::clock::SystemClock.now();
    let line = json!({
        "time": crate::decision_log::rfc3339_millis(now),
        "audit": action,
        "operator": actor.operator,
        "peer": actor.peer.to_string(),
        "target": target,
        "result": result,
    });
    let line = line.to_string();
    tracing::info!(target: "palisade::audit", "{line}");
    context.log.write(line);
}
