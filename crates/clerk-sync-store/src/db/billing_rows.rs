//! The rows of Clerk Billing's tables (`clerk.subscriptions`, `clerk.subscription_items`,
//! `clerk.payment_attempts`), named by column, built from the plan's newest version of each
//! object. See `resources.rs` for the contract with SQL.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;

use super::ms;
use super::plan::Newest;
use crate::event::billing::{Payer, PaymentAttempt, Subscription, SubscriptionItem};

fn at(ms_value: Option<i64>) -> Option<DateTime<Utc>> {
    ms_value.and_then(ms)
}

#[derive(Debug, Serialize)]
pub struct SubscriptionRow<'a> {
    pub id: &'a str,
    pub status: Option<&'a str>,
    pub payer_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub organization_id: Option<&'a str>,
    pub latest_payment_id: Option<&'a str>,
    pub payment_source_id: Option<&'a str>,
    pub active_at: Option<DateTime<Utc>>,
    pub past_due_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub raw: &'a RawValue,
    pub version_at: Option<DateTime<Utc>>,
    pub version_svix_id: &'a str,
}

#[derive(Debug, Serialize)]
pub struct SubscriptionItemRow<'a> {
    pub id: &'a str,
    pub subscription_id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub plan_id: Option<&'a str>,
    pub plan_slug: Option<&'a str>,
    pub plan_name: Option<&'a str>,
    pub amount: Option<i64>,
    pub currency: Option<&'a str>,
    pub interval: Option<&'a str>,
    pub is_free_trial: Option<bool>,
    pub payer_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub organization_id: Option<&'a str>,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub raw: &'a RawValue,
    pub version_at: Option<DateTime<Utc>>,
    pub version_svix_id: &'a str,
}

#[derive(Debug, Serialize)]
pub struct PaymentAttemptRow<'a> {
    pub id: &'a str,
    pub payment_id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub charge_type: Option<&'a str>,
    pub payer_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub organization_id: Option<&'a str>,
    pub amount: Option<i64>,
    pub currency: Option<&'a str>,
    pub billing_date: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub statement_id: Option<&'a str>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub raw: &'a RawValue,
    pub version_at: Option<DateTime<Utc>>,
    pub version_svix_id: &'a str,
}

fn payer(p: &Option<Payer>) -> (Option<&str>, Option<&str>, Option<&str>) {
    p.as_ref().map_or((None, None, None), |p| (p.id.as_deref(), p.user_id.as_deref(), p.organization_id.as_deref()))
}

pub fn subscription<'a>(n: &Newest<'a, Subscription>) -> SubscriptionRow<'a> {
    let s = n.object;
    let (payer_id, user_id, organization_id) = payer(&s.payer);
    SubscriptionRow {
        id: &s.id,
        status: s.status.as_deref(),
        payer_id: s.payer_id.as_deref().or(payer_id),
        user_id,
        organization_id,
        latest_payment_id: s.latest_payment_id.as_deref(),
        payment_source_id: s.payment_source_id.as_deref(),
        active_at: at(s.active_at),
        past_due_at: at(s.past_due_at),
        canceled_at: at(s.canceled_at),
        ended_at: at(s.ended_at),
        created_at: at(s.created_at),
        updated_at: ms(n.version.updated_at),
        raw: n.raw,
        version_at: at(n.version.at),
        version_svix_id: n.version.svix_id,
    }
}

pub fn subscription_item<'a>(n: &Newest<'a, SubscriptionItem>) -> SubscriptionItemRow<'a> {
    let i = n.object;
    let (payer_id, user_id, organization_id) = payer(&i.payer);
    let plan = i.plan.as_ref();
    SubscriptionItemRow {
        id: &i.id,
        subscription_id: i.subscription_id.as_deref(),
        status: i.status.as_deref(),
        plan_id: i.plan_id.as_deref().or_else(|| plan.and_then(|p| p.id.as_deref())),
        plan_slug: plan.and_then(|p| p.slug.as_deref()),
        plan_name: plan.and_then(|p| p.name.as_deref()),
        amount: plan.and_then(|p| p.amount),
        currency: plan.and_then(|p| p.currency.as_deref()),
        interval: i.interval.as_deref(),
        is_free_trial: i.is_free_trial,
        payer_id,
        user_id,
        organization_id,
        period_start: at(i.period_start),
        period_end: at(i.period_end),
        canceled_at: at(i.canceled_at),
        ended_at: at(i.ended_at),
        created_at: at(i.created_at),
        updated_at: ms(n.version.updated_at),
        raw: n.raw,
        version_at: at(n.version.at),
        version_svix_id: n.version.svix_id,
    }
}

pub fn payment_attempt<'a>(n: &Newest<'a, PaymentAttempt>) -> PaymentAttemptRow<'a> {
    let p = n.object;
    let (payer_id, user_id, organization_id) = payer(&p.payer);
    let total = p.total();
    PaymentAttemptRow {
        id: &p.id,
        payment_id: p.payment_id.as_deref(),
        status: p.status.as_deref(),
        charge_type: p.charge_type.as_deref(),
        payer_id,
        user_id,
        organization_id,
        amount: total.and_then(|m| m.amount),
        currency: total.and_then(|m| m.currency.as_deref()),
        billing_date: at(p.billing_date),
        paid_at: at(p.paid_at),
        failed_at: at(p.failed_at),
        statement_id: p.statement_id.as_deref(),
        created_at: at(p.created_at),
        updated_at: ms(n.version.updated_at),
        raw: n.raw,
        version_at: at(n.version.at),
        version_svix_id: n.version.svix_id,
    }
}
