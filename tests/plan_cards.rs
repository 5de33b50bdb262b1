//! Seed 002's plan card rules (`buildPlanCardState`), case by case, through `Billing::plan_cards`.

mod common;

use billing_engine::plan_card::{
    LABEL_AVAILABLE_WITH_SUBSCRIPTION, LABEL_BASIC_ACCESS, LABEL_CURRENT, LABEL_PRO_ACTIVE, LABEL_RESTORE, LABEL_SELECT,
};
use billing_engine::{Billing, CardAction, Catalog, PlanCard, WebhookStatus};
use common::yookassa::{FakeYooKassa, YOOKASSA_ADDR};
use common::{catalog, dec, tariffs_path, Fixture, TestDb};
use serde_json::json;

const USER: &str = "u1";

/// `(plan_code, is_current, disabled, action, label_key)` of every card, in display order.
fn summary(cards: &[PlanCard]) -> Vec<(&str, bool, bool, CardAction, &str)> {
    cards.iter().map(|c| (c.plan_code.as_str(), c.is_current, c.disabled, c.action, c.label_key.as_str())).collect()
}

fn card<'a>(cards: &'a [PlanCard], code: &str) -> &'a PlanCard {
    cards.iter().find(|c| c.plan_code == code).unwrap()
}

fn bind_card(fake: &FakeYooKassa, billing: &Billing) {
    let created = billing.start_card_binding(USER, Some("https://app.example/card"), None).unwrap();
    fake.pay(&created.yookassa_payment_id);
    let body = fake.notification("payment.waiting_for_capture", &created.yookassa_payment_id);
    let outcome = billing.handle_yookassa_webhook(&body, Some(YOOKASSA_ADDR), &[]).unwrap();
    assert_eq!(outcome.status, WebhookStatus::Applied);
}

#[test]
fn a_free_user_is_on_the_free_card_and_may_select_any_paid_plan() {
    let f = Fixture::new();
    f.billing.register_user(USER, true).unwrap();
    let cards = f.billing.plan_cards(USER).unwrap();
    assert_eq!(
        summary(&cards),
        vec![
            ("FREE", true, true, CardAction::None, LABEL_CURRENT),
            ("basic", false, false, CardAction::Select, LABEL_SELECT),
            ("standard", false, false, CardAction::Select, LABEL_SELECT),
            ("premium", false, false, CardAction::Select, LABEL_SELECT),
        ]
    );
    assert!(cards.iter().all(|c| c.details.is_none()));
}

#[test]
fn a_subscriber_without_a_card_is_asked_to_bind_one_and_other_plans_wait_for_the_subscription() {
    let f = Fixture::new();
    f.billing.register_user(USER, true).unwrap();
    let details = f.billing.activate_subscription(USER, "standard", "paid").unwrap();
    let cards = f.billing.plan_cards(USER).unwrap();
    assert_eq!(
        summary(&cards),
        vec![
            ("FREE", false, true, CardAction::None, LABEL_BASIC_ACCESS),
            ("basic", false, true, CardAction::None, LABEL_AVAILABLE_WITH_SUBSCRIPTION),
            ("standard", true, false, CardAction::BindCard, LABEL_CURRENT),
            ("premium", false, true, CardAction::None, LABEL_AVAILABLE_WITH_SUBSCRIPTION),
        ]
    );
    let shown = card(&cards, "standard").details.as_ref().unwrap();
    assert_eq!(Some(shown.expires_at), details.expires_at);
    assert_eq!((shown.expired, shown.autorenew_enabled, shown.payment_method.is_attached), (false, false, false));
    assert_eq!(
        serde_json::to_value(card(&cards, "basic")).unwrap(),
        json!({"plan_code": "basic", "is_current": false, "disabled": true, "action": "none",
               "label_key": "plan_card.available_with_subscription", "details": null})
    );
}

#[test]
fn with_a_card_the_current_plan_offers_renewal_then_management() {
    let fake = FakeYooKassa::start();
    let f = Fixture::with_yookassa(TestDb::new(), fake.config());
    f.billing.register_user(USER, true).unwrap();
    f.billing.activate_subscription(USER, "basic", "paid").unwrap();
    bind_card(&fake, &f.billing);

    let current = |billing: &Billing| card(&billing.plan_cards(USER).unwrap(), "basic").clone();
    let off = current(&f.billing);
    assert_eq!((off.is_current, off.action), (true, CardAction::EnableAutorenew));
    let method = &off.details.as_ref().unwrap().payment_method;
    assert_eq!((method.card_mask.as_deref(), method.card_brand.as_deref()), (Some("•••• 4444"), Some("MasterCard")));

    f.billing.set_autorenew(USER, true).unwrap();
    let on = current(&f.billing);
    assert_eq!((on.action, on.details.as_ref().unwrap().autorenew_enabled), (CardAction::ManageSubscription, true));
    f.billing.set_autorenew(USER, false).unwrap();
    assert_eq!(current(&f.billing).action, CardAction::EnableAutorenew);
}

#[test]
fn a_subscription_to_a_plan_the_catalog_no_longer_has_shows_pro_active_on_every_paid_card() {
    let text = std::fs::read_to_string(tariffs_path()).unwrap();
    let legacy = "\n[[plans]]\ncode = \"legacy_pro\"\ntier = \"pro\"\nname = \"Legacy\"\nprice = \"199.00\"\n\
                  duration_days = 30\nops_limit = 10\nperiod_days = 30\n";
    let f = Fixture::shared_with_catalog(Catalog::from_toml(&(text + legacy)).unwrap());
    f.billing.register_user(USER, true).unwrap();
    let details = f.billing.activate_subscription(USER, "legacy_pro", "paid").unwrap();

    // The tariffs file is updated and the plan removed; the paid period still runs.
    let billing = f.open_with(catalog());
    let cards = billing.plan_cards(USER).unwrap();
    assert_eq!(
        summary(&cards),
        vec![
            ("FREE", false, true, CardAction::None, LABEL_BASIC_ACCESS),
            ("basic", false, true, CardAction::None, LABEL_PRO_ACTIVE),
            ("standard", false, true, CardAction::None, LABEL_PRO_ACTIVE),
            ("premium", false, true, CardAction::None, LABEL_PRO_ACTIVE),
        ]
    );
    assert!(cards[1..].iter().all(|c| c.details.as_ref().map(|d| d.expires_at) == details.expires_at));
}

#[test]
fn an_ended_subscription_offers_to_restore_its_plan_at_its_price() {
    let f = Fixture::new();
    f.billing.register_user(USER, true).unwrap();
    let details = f.billing.activate_subscription(USER, "premium", "paid").unwrap();
    f.advance_days(366);
    let cards = f.billing.plan_cards(USER).unwrap();
    assert_eq!(
        summary(&cards),
        vec![
            ("FREE", true, true, CardAction::None, LABEL_CURRENT),
            ("basic", false, false, CardAction::Select, LABEL_SELECT),
            ("standard", false, false, CardAction::Select, LABEL_SELECT),
            ("premium", false, false, CardAction::Restore, LABEL_RESTORE),
        ]
    );
    let shown = card(&cards, "premium").details.as_ref().unwrap();
    assert_eq!(
        (Some(shown.expires_at), shown.expired, shown.restore_price),
        (details.expires_at, true, Some(dec("7990.00")))
    );
}

#[test]
fn plan_cards_of_an_unknown_user_are_refused() {
    let f = Fixture::new();
    assert_eq!(f.billing.plan_cards("ghost").unwrap_err().code(), "UNKNOWN_USER");
}
