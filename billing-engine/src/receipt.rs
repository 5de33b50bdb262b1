//! 54-FZ receipts: what a Russian shop that fiscalizes through its payment provider
//! sends with every payment and every refund, and the rules the provider checks them by.
//!
//! The rules follow YooKassa's documentation of the `receipt` object ("Параметры чека",
//! `yookassa.ru/developers/payment-acceptance/receipts/54fz/parameters-values`):
//! - `customer` has an `email` or a `phone` (digits in ITU-T E.164, `79000000000`);
//! - `items` holds 1 to 100 items, each with a `description` of at most 128 characters,
//!   a positive `quantity`, an `amount` (the price of one unit), a `vat_code`
//!   (1–12), a `payment_subject` and a `payment_mode` from the documented lists;
//! - the items add up to the payment's (or the refund's) amount exactly;
//! - `tax_system_code` (1–6) is optional.
//!
//! The engine sends one item per payment: the plan, package or card binding it pays for,
//! quantity 1, with the settings of the catalog's `[receipt]` table or of the item's own
//! `receipt` (see [`crate::catalog`]). A refund's receipt repeats the item with the
//! refunded amount.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::{BillingError, Result};

/// The longest `description` a provider takes for a payment or a receipt item.
pub const MAX_DESCRIPTION_CHARS: usize = 128;
/// VAT codes: 1 no VAT, 2 0%, 3 10%, 4 20%, 5 10/110, 6 20/120, 7 5%, 8 7%, 9 5/105,
/// 10 7/107, 11 22%, 12 22/122.
pub const VAT_CODES: std::ops::RangeInclusive<u8> = 1..=12;
/// Tax systems: 1 general, 2 simplified (income), 3 simplified (income minus
/// expenses), 4 imputed income, 5 agricultural, 6 patent.
pub const TAX_SYSTEM_CODES: std::ops::RangeInclusive<u8> = 1..=6;
pub const PAYMENT_SUBJECTS: [&str; 25] = [
    "commodity",
    "excise",
    "job",
    "service",
    "gambling_bet",
    "gambling_prize",
    "lottery",
    "lottery_prize",
    "intellectual_activity",
    "payment",
    "agent_commission",
    "composite",
    "another",
    "property_right",
    "non_operating_gain",
    "insurance_premium",
    "sales_tax",
    "resort_fee",
    "fine",
    "tax",
    "lien",
    "cost",
    "pension_insurance_with_payouts",
    "casino",
    "marked",
];
pub const PAYMENT_MODES: [&str; 7] =
    ["full_prepayment", "partial_prepayment", "advance", "full_payment", "partial_payment", "credit", "credit_payment"];
const MAX_ITEMS: usize = 100;

/// How one kind of purchase appears on a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptSettings {
    pub vat_code: u8,
    /// What is sold: `service` by default.
    pub payment_subject: String,
    /// How it is paid: `full_payment` by default.
    pub payment_mode: String,
}

impl ReceiptSettings {
    /// Checks each setting against the documented lists; the error names the setting.
    pub(crate) fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        if !VAT_CODES.contains(&self.vat_code) {
            return Err(("vat_code", format!("expected 1 to 12, got {}", self.vat_code)));
        }
        if !PAYMENT_SUBJECTS.contains(&self.payment_subject.as_str()) {
            return Err(("payment_subject", format!("`{}` is not a documented subject", self.payment_subject)));
        }
        if !PAYMENT_MODES.contains(&self.payment_mode.as_str()) {
            return Err(("payment_mode", format!("`{}` is not a documented mode", self.payment_mode)));
        }
        Ok(())
    }
}

/// Where a customer's receipt is sent: an email, a phone, or both.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerContact {
    pub email: Option<String>,
    /// Digits only, country code first (`79001234567`), as the provider wants it.
    pub phone: Option<String>,
}

impl CustomerContact {
    /// A contact from what a caller gives: at least one of the two, an email that looks
    /// like one, and a phone of 7 to 15 digits (a leading `+`, spaces, dashes and
    /// brackets are dropped).
    pub fn new(email: Option<&str>, phone: Option<&str>) -> Result<Self> {
        let email = email.map(str::trim).filter(|e| !e.is_empty());
        let phone = phone.map(str::trim).filter(|p| !p.is_empty());
        if email.is_none() && phone.is_none() {
            return Err(BillingError::invalid("customer_contact", "an email or a phone is needed"));
        }
        if let Some(email) = email {
            let (local, domain) = email.split_once('@').unwrap_or_default();
            let plausible = !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !email.chars().any(|c| c.is_whitespace() || c.is_control());
            if !plausible || email.len() > 254 {
                return Err(BillingError::invalid("email", "not an email address"));
            }
        }
        let phone = phone.map(normalize_phone).transpose()?;
        Ok(Self { email: email.map(str::to_owned), phone })
    }
}

fn normalize_phone(text: &str) -> Result<String> {
    let digits: String = text.trim_start_matches('+').chars().filter(|c| !" -()".contains(*c)).collect();
    if !(7..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BillingError::invalid("phone", "expected 7 to 15 digits, country code first"));
    }
    Ok(digits)
}

/// A receipt to send with a payment or a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub customer: CustomerContact,
    pub items: Vec<ReceiptItem>,
    pub tax_system_code: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptItem {
    pub description: String,
    pub quantity: Decimal,
    /// The price of one unit.
    pub amount: Decimal,
    pub currency: String,
    pub settings: ReceiptSettings,
}

impl Receipt {
    /// One item, bought once, for `amount`.
    pub fn single(
        customer: CustomerContact,
        description: &str,
        amount: Decimal,
        currency: &str,
        settings: ReceiptSettings,
        tax_system_code: Option<u8>,
    ) -> Self {
        let item = ReceiptItem {
            description: description.to_owned(),
            quantity: Decimal::ONE,
            amount,
            currency: currency.to_owned(),
            settings,
        };
        Self { customer, items: vec![item], tax_system_code }
    }

    /// Checks the documented rules for a receipt of a payment or refund of `total`.
    pub fn check(&self, total: Decimal) -> Result<()> {
        let bad = |message: String| BillingError::invalid("receipt", message);
        if self.customer.email.is_none() && self.customer.phone.is_none() {
            return Err(bad("the customer needs an email or a phone".into()));
        }
        if self.items.is_empty() || self.items.len() > MAX_ITEMS {
            return Err(bad(format!("1 to {MAX_ITEMS} items, got {}", self.items.len())));
        }
        if let Some(code) = self.tax_system_code.filter(|code| !TAX_SYSTEM_CODES.contains(code)) {
            return Err(bad(format!("tax_system_code: expected 1 to 6, got {code}")));
        }
        let mut sum = Decimal::ZERO;
        for item in &self.items {
            let chars = item.description.chars().count();
            if chars == 0 || chars > MAX_DESCRIPTION_CHARS {
                return Err(bad(format!("an item's description has {chars} characters, 1 to 128 allowed")));
            }
            if item.quantity <= Decimal::ZERO || item.amount < Decimal::ZERO {
                return Err(bad("an item needs a positive quantity and an amount of zero or more".into()));
            }
            item.settings.check().map_err(|(field, message)| bad(format!("{field}: {message}")))?;
            sum += item.quantity * item.amount;
        }
        if sum != total {
            return Err(bad(format!("the items add up to {sum}, the total is {total}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ReceiptSettings {
        ReceiptSettings { vat_code: 1, payment_subject: "service".into(), payment_mode: "full_payment".into() }
    }

    #[test]
    fn a_contact_needs_an_email_or_a_phone_in_a_form_the_provider_takes() {
        assert_eq!(CustomerContact::new(None, Some(" ")).unwrap_err().details()["field"], "customer_contact");
        assert_eq!(CustomerContact::new(Some("a@b"), None).unwrap_err().details()["field"], "email");
        assert_eq!(CustomerContact::new(Some("a @b.ru"), None).unwrap_err().details()["field"], "email");
        assert_eq!(CustomerContact::new(None, Some("+7 900 12")).unwrap_err().details()["field"], "phone");
        assert_eq!(CustomerContact::new(None, Some("7900x234567")).unwrap_err().details()["field"], "phone");
        let contact = CustomerContact::new(Some("anna@example.ru"), Some("+7 (900) 123-45-67")).unwrap();
        assert_eq!(contact.phone.as_deref(), Some("79001234567"));
    }

    #[test]
    fn a_receipt_must_add_up_and_follow_the_documented_lists() {
        let contact = CustomerContact::new(Some("anna@example.ru"), None).unwrap();
        let receipt = |amount: &str, settings: ReceiptSettings, description: &str| {
            Receipt::single(contact.clone(), description, amount.parse().unwrap(), "RUB", settings, Some(2))
        };
        let total: Decimal = "299.00".parse().unwrap();
        assert!(receipt("299.00", settings(), "Pro plan").check(total).is_ok());
        assert!(receipt("298.99", settings(), "Pro plan").check(total).is_err(), "must add up");
        assert!(receipt("299.00", settings(), &"x".repeat(129)).check(total).is_err());
        assert!(receipt("299.00", ReceiptSettings { vat_code: 13, ..settings() }, "Pro").check(total).is_err());
        let subject = ReceiptSettings { payment_subject: "services".into(), ..settings() };
        assert!(receipt("299.00", subject, "Pro").check(total).is_err());
        let mode = ReceiptSettings { payment_mode: "prepayment".into(), ..settings() };
        assert!(receipt("299.00", mode, "Pro").check(total).is_err());
        let mut no_tax = receipt("299.00", settings(), "Pro");
        no_tax.tax_system_code = Some(7);
        assert!(no_tax.check(total).is_err());
    }
}
