//! The validated names an event carries ([`Ticker`], [`Module`], [`ClientId`]) and the
//! [`FieldError`] that says which field was wrong and why.

use super::{CLIENT_MAX_LEN, MODULE_MAX_LEN, TICKER_MAX_LEN};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A problem with one field of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field at fault (`ticker`, `module`, `hit`, `ts`, `client`, `latency_ms`, or `event`
    /// when the value is not a JSON object at all).
    pub field: &'static str,
    /// What is wrong, in words a producer can act on.
    pub message: String,
}

impl FieldError {
    pub(super) fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// A ticker symbol: trimmed, upper-cased, 1–20 characters of `A–Z 0–9 . - ^ =` with at least
/// one letter or digit (so `BRK.B`, `^GSPC` and `EURUSD=X` pass, and `.` or `..` — which would
/// address the upstream's directories once substituted into a URL — do not).
///
/// Only ASCII is case-mapped: Unicode case mapping turns `ſpy` into `SPY` and `ıbm` into `IBM`,
/// so a non-ASCII character is refused before any mapping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Ticker(pub(super) String);

impl Ticker {
    /// Normalises and validates a ticker.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let t = raw.trim();
        check_len("ticker", t, TICKER_MAX_LEN)?;
        if let Some(bad) = t.chars().find(|c| !(c.is_ascii_alphanumeric() || ".-^=".contains(*c))) {
            return Err(FieldError::new(
                "ticker",
                format!("character {bad:?} is not allowed (use A-Z 0-9 . - ^ =)"),
            ));
        }
        if !t.chars().any(|c| c.is_ascii_alphanumeric()) {
            return Err(FieldError::new("ticker", "must contain a letter or a digit"));
        }
        Ok(Self(t.to_ascii_uppercase()))
    }

    /// The normalised symbol.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A data module such as `price`, `news` or `fundamentals`: trimmed, lower-cased,
/// 1–64 characters of `a–z 0–9 _ -` with at least one letter or digit. Only ASCII is
/// case-mapped (the Kelvin sign `K` would otherwise become `k`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Module(pub(super) String);

impl Module {
    /// Normalises and validates a module name.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let m = raw.trim();
        check_len("module", m, MODULE_MAX_LEN)?;
        if let Some(bad) = m.chars().find(|c| !(c.is_ascii_alphanumeric() || "_-".contains(*c))) {
            return Err(FieldError::new(
                "module",
                format!("character {bad:?} is not allowed (use a-z 0-9 _ -)"),
            ));
        }
        if !m.chars().any(|c| c.is_ascii_alphanumeric()) {
            return Err(FieldError::new("module", "must contain a letter or a digit"));
        }
        Ok(Self(m.to_ascii_lowercase()))
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An opaque client id (a session, a user, an API key's hash): 1–128 characters, no control
/// characters. Used to learn which query follows which for the same client.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ClientId(pub(super) String);

impl ClientId {
    /// Validates a client id; it is kept exactly as sent.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Self::check(raw)?;
        Ok(Self(raw.to_owned()))
    }

    /// Validates a client id without keeping it.
    pub fn check(raw: &str) -> Result<(), FieldError> {
        check_len("client", raw, CLIENT_MAX_LEN)?;
        // ASCII's control characters are its bytes below 0x20 and 0x7f (the others are C1,
        // U+0080–U+009F, never ASCII): no char decoding for the common id (the analyzer's
        // parse thread checks every event's).
        let control = if raw.is_ascii() {
            raw.bytes().any(|b| b < 0x20 || b == 0x7f)
        } else {
            raw.chars().any(char::is_control)
        };
        if control {
            return Err(FieldError::new("client", "control characters are not allowed"));
        }
        Ok(())
    }

    /// The id as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! try_from_string {
    ($($t:ty),*) => {$(
        impl TryFrom<String> for $t {
            type Error = FieldError;
            fn try_from(s: String) -> Result<Self, FieldError> {
                Self::parse(&s)
            }
        }
    )*};
}
// Deserialising a Ticker or Module validates it, so a typed message read from a topic is as
// trustworthy as one built at the HTTP boundary.
try_from_string!(Ticker, Module);

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
display_as_str!(Ticker, Module, ClientId);

fn check_len(field: &'static str, s: &str, max: usize) -> Result<(), FieldError> {
    // No more characters than bytes: a short name needs no count.
    if !s.is_empty() && s.len() <= max {
        return Ok(());
    }
    let n = s.chars().count();
    if n == 0 {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if n > max {
        return Err(FieldError::new(field, format!("is {n} characters long; the limit is {max}")));
    }
    Ok(())
}
