//! Clerk Billing's objects (`subscription.*`, `subscriptionItem.*`, `paymentAttempt.*`), lenient
//! like the others: Billing is marked experimental by Clerk and its shapes still move.

use serde::Deserialize;

/// Who pays: a user (`user_id`) or an organization (`organization_id`).
#[derive(Debug, Default, Deserialize)]
pub struct Payer {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub organization_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Plan {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub slug: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub amount: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Money {
    #[serde(default)]
    pub amount: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Totals {
    #[serde(default)]
    pub grand_total: Option<Money>,
}

#[derive(Debug, Deserialize)]
pub struct Subscription {
    pub id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub payer_id: Option<String>,
    #[serde(default)]
    pub payer: Option<Payer>,
    #[serde(default)]
    pub latest_payment_id: Option<String>,
    #[serde(default)]
    pub payment_source_id: Option<String>,
    #[serde(default)]
    pub active_at: Option<i64>,
    #[serde(default)]
    pub past_due_at: Option<i64>,
    #[serde(default)]
    pub canceled_at: Option<i64>,
    #[serde(default)]
    pub ended_at: Option<i64>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub updated_at: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct SubscriptionItem {
    pub id: String,
    #[serde(default)]
    pub subscription_id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub plan_id: Option<String>,
    #[serde(default)]
    pub plan: Option<Plan>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub is_free_trial: Option<bool>,
    #[serde(default)]
    pub payer: Option<Payer>,
    #[serde(default)]
    pub period_start: Option<i64>,
    #[serde(default)]
    pub period_end: Option<i64>,
    #[serde(default)]
    pub canceled_at: Option<i64>,
    #[serde(default)]
    pub ended_at: Option<i64>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub updated_at: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct PaymentAttempt {
    pub id: String,
    #[serde(default)]
    pub payment_id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub charge_type: Option<String>,
    #[serde(default)]
    pub payer: Option<Payer>,
    #[serde(default)]
    pub totals: Option<Totals>,
    /// Older shape (and this project's samples): `amount: {amount, currency}`.
    #[serde(default)]
    pub amount: Option<Money>,
    #[serde(default)]
    pub billing_date: Option<i64>,
    #[serde(default)]
    pub paid_at: Option<i64>,
    #[serde(default)]
    pub failed_at: Option<i64>,
    #[serde(default)]
    pub statement_id: Option<String>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub updated_at: Option<i64>,
}

impl PaymentAttempt {
    pub fn total(&self) -> Option<&Money> {
        self.totals.as_ref().and_then(|t| t.grand_total.as_ref()).or(self.amount.as_ref())
    }
}
