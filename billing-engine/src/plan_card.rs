//! What each plan card of a pricing screen shows and lets the user do: seed 002's
//! `buildPlanCardState`, decided here once as data (no UI text), so the web, Android and
//! iOS clients all render the same decision.
//!
//! For each plan of the catalog, in display order:
//! 1. The free plan: the current one for a user without an active subscription; for a
//!    subscriber, disabled as "basic access".
//! 2. Paid plans while a subscription to a plan the catalog no longer has is active: all
//!    disabled as "PRO active", with the subscription's details.
//! 3. The subscribed plan: current, with its details, and the one action that matters now:
//!    bind a card, else turn on renewal, else manage the subscription.
//! 4. Another paid plan while subscribed: disabled, "available with the subscription".
//! 5. The plan of a subscription that has ended: restore it, at its price.
//! 6. Any other paid plan: select it.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::account::Account;
use crate::catalog::{Catalog, Plan, Tier};
use crate::payment::{PaymentMethodView, SavedMethod};
use crate::subscription::Subscription;

/// One plan card. `label_key` names the button's text for the client's translations.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct PlanCard {
    pub plan_code: String,
    pub is_current: bool,
    /// The button can't be pressed.
    pub disabled: bool,
    pub action: CardAction,
    pub label_key: String,
    /// What goes under the button (seed 002's `bottomContent`), when anything does.
    pub details: Option<CardDetails>,
}

/// What pressing the card's button (or the button under it) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum CardAction {
    None,
    /// Buy this plan (`create_payment` with its code).
    Select,
    /// Renewal is on with a saved card: open the subscription settings.
    ManageSubscription,
    /// A card is saved but renewal is off: `set_autorenew(true)`.
    EnableAutorenew,
    /// No card is saved: `start_card_binding`.
    BindCard,
    /// The subscription to this plan has ended: buy it again.
    Restore,
}

impl CardAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Select => "select",
            Self::ManageSubscription => "manage_subscription",
            Self::EnableAutorenew => "enable_autorenew",
            Self::BindCard => "bind_card",
            Self::Restore => "restore",
        }
    }
}

/// The subscription facts shown under a card.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct CardDetails {
    #[serde(with = "crate::time_util::serde_iso")]
    pub expires_at: OffsetDateTime,
    /// The subscription has ended (the card shows a warning).
    pub expired: bool,
    pub autorenew_enabled: bool,
    pub payment_method: PaymentMethodView,
    /// The price of restoring an ended subscription.
    pub restore_price: Option<Decimal>,
}

pub const LABEL_CURRENT: &str = "plan_card.current";
pub const LABEL_BASIC_ACCESS: &str = "plan_card.basic_access";
pub const LABEL_PRO_ACTIVE: &str = "plan_card.pro_active";
pub const LABEL_AVAILABLE_WITH_SUBSCRIPTION: &str = "plan_card.available_with_subscription";
pub const LABEL_SELECT: &str = "plan_card.select";
pub const LABEL_RESTORE: &str = "plan_card.restore";

/// The cards of every plan of `catalog` for `account` at `now`.
pub fn plan_cards(
    catalog: &Catalog,
    account: &Account,
    now: OffsetDateTime,
    card: Option<&SavedMethod>,
) -> Vec<PlanCard> {
    let active = account.active_subscription(now);
    let ended = account.subscription.as_ref().filter(|sub| !sub.is_active(now));
    let method = PaymentMethodView::from(card);
    let details = |sub: &Subscription, restore_price: Option<Decimal>| CardDetails {
        expires_at: sub.expires_at,
        expired: !sub.is_active(now),
        autorenew_enabled: sub.is_active(now) && sub.autorenew,
        payment_method: method.clone(),
        restore_price,
    };
    catalog
        .plans
        .iter()
        .map(|plan| match (plan.tier, active) {
            (Tier::Free, Some(_)) => PlanCard::disabled(plan, LABEL_BASIC_ACCESS, None),
            (Tier::Free, None) => PlanCard { is_current: true, ..PlanCard::disabled(plan, LABEL_CURRENT, None) },
            (Tier::Pro, Some(sub)) if catalog.plan(&sub.plan_code).is_none() => {
                PlanCard::disabled(plan, LABEL_PRO_ACTIVE, Some(details(sub, None)))
            }
            (Tier::Pro, Some(sub)) if sub.plan_code == plan.code => {
                let action = if !method.is_attached {
                    CardAction::BindCard
                } else if sub.autorenew {
                    CardAction::ManageSubscription
                } else {
                    CardAction::EnableAutorenew
                };
                let card = PlanCard::open(plan, action, LABEL_CURRENT, Some(details(sub, None)));
                PlanCard { is_current: true, ..card }
            }
            (Tier::Pro, Some(_)) => PlanCard::disabled(plan, LABEL_AVAILABLE_WITH_SUBSCRIPTION, None),
            (Tier::Pro, None) => match ended.filter(|sub| sub.plan_code == plan.code) {
                Some(sub) => {
                    PlanCard::open(plan, CardAction::Restore, LABEL_RESTORE, Some(details(sub, Some(plan.price))))
                }
                None => PlanCard::open(plan, CardAction::Select, LABEL_SELECT, None),
            },
        })
        .collect()
}

impl PlanCard {
    fn disabled(plan: &Plan, label_key: &str, details: Option<CardDetails>) -> Self {
        Self {
            plan_code: plan.code.clone(),
            is_current: false,
            disabled: true,
            action: CardAction::None,
            label_key: label_key.to_owned(),
            details,
        }
    }

    fn open(plan: &Plan, action: CardAction, label_key: &str, details: Option<CardDetails>) -> Self {
        Self { disabled: false, action, ..Self::disabled(plan, label_key, details) }
    }
}

#[cfg(test)]
mod tests {
    use super::CardAction::{self, *};

    #[test]
    fn an_action_s_name_is_its_json_name() {
        let all: [CardAction; 6] = [None, Select, ManageSubscription, EnableAutorenew, BindCard, Restore];
        for action in all {
            assert_eq!(serde_json::to_value(action).unwrap(), action.as_str());
        }
    }
}
