//! A partner's quota: partners skip bot heuristics, not their quota.

use std::sync::Arc;

use super::{Audience, RequestContext, Stage};
use crate::identify::Identity;
use crate::signal::{Evidence, Signal};
use crate::store::{CounterPlan, CounterReadings, GcraReading};
use crate::view::RequestView;

pub const PARTNER_QUOTA_ID: &str = "partner.quota";

#[derive(Debug)]
pub struct PartnerQuota {
    id: Arc<str>,
}

impl Default for PartnerQuota {
    fn default() -> Self {
        PartnerQuota { id: Arc::from(PARTNER_QUOTA_ID) }
    }
}

impl PartnerQuota {
    fn partner(context: &RequestContext) -> Option<&crate::identify::Partner> {
        match &context.identity {
            Identity::Partner { partner, .. } => Some(partner),
            Identity::Anonymous => None,
        }
    }
}

impl Stage for PartnerQuota {
    fn name(&self) -> &'static str {
        "identify"
    }

    fn audience(&self) -> Audience {
        Audience::Partners
    }

    fn plan(&self, _view: &RequestView<'_>, context: &mut RequestContext, plan: &mut CounterPlan) {
        if let Some(partner) = Self::partner(context)
            && let Some(quota) = partner.quota
        {
            plan.gcra(partner.quota_key.clone(), quota);
        }
    }

    fn detect(
        &self,
        _view: &RequestView<'_>,
        context: &mut RequestContext,
        readings: &CounterReadings,
        signals: &mut Vec<Signal>,
    ) {
        let Some(partner) = Self::partner(context) else { return };
        let Some(quota) = partner.quota else { return };
        if let Some(GcraReading::Limited { retry_after }) = readings.gcra(&partner.quota_key) {
            signals.push(Signal::rate_limited(
                self.id.clone(),
                0,
                retry_after,
                [
                    Evidence::number("quota_requests", f64::from(quota.requests), None),
                    Evidence::number("quota_period_s", quota.period_secs as f64, None),
                ],
            ));
        }
    }
}
