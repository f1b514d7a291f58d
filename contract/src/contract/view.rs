//! A valid event borrowed from the bytes it was read from: what the analyzer folds without
//! allocating a string per field.
//!
//! An [`EventRef`] is made only by the contract — from a [`QueryEvent`] ([`QueryEvent::view`])
//! or by the canonical scanner from bytes whose names are already in normal form
//! ([`super::canonical::locate`]) — so its ticker and module are as valid as a [`Ticker`] and a
//! [`Module`]; the owned newtypes are made from it only when a consumer keeps one (a new key).
//!
//! Why: parsing into owned strings cost three allocations an event on the analyzer's parse
//! thread and three frees on its fold thread, a fifth of the fold path (BENCHMARKS.md, #15).

use super::{ClientId, Module, QueryEvent, Ticker};
use chrono::{DateTime, Utc};

/// A valid event whose names borrow from elsewhere (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventRef<'a> {
    pub(super) ticker: &'a str,
    pub(super) module: &'a str,
    pub(super) client: Option<&'a str>,
    /// Whether the app's cache answered it.
    pub hit: bool,
    /// When the query happened (event time).
    pub ts: DateTime<Utc>,
    /// How long the app took to answer, in milliseconds, when known.
    pub latency_ms: Option<f64>,
}

impl<'a> EventRef<'a> {
    /// The normalised ticker (what [`Ticker::as_str`] returns).
    pub fn ticker(&self) -> &'a str {
        self.ticker
    }

    /// The normalised module (what [`Module::as_str`] returns).
    pub fn module(&self) -> &'a str {
        self.module
    }

    /// The client id as sent, when known.
    pub fn client(&self) -> Option<&'a str> {
        self.client
    }

    /// The ticker, owned.
    pub fn to_ticker(&self) -> Ticker {
        Ticker(self.ticker.to_owned())
    }

    /// The module, owned.
    pub fn to_module(&self) -> Module {
        Module(self.module.to_owned())
    }

    /// The whole event, owned.
    pub fn to_event(&self) -> QueryEvent {
        QueryEvent {
            ticker: self.to_ticker(),
            module: self.to_module(),
            hit: self.hit,
            ts: self.ts,
            client: self.client.map(|c| ClientId(c.to_owned())),
            latency_ms: self.latency_ms,
        }
    }
}

impl QueryEvent {
    /// The event as an [`EventRef`] borrowing its names.
    pub fn view(&self) -> EventRef<'_> {
        EventRef {
            ticker: self.ticker.as_str(),
            module: self.module.as_str(),
            client: self.client.as_ref().map(ClientId::as_str),
            hit: self.hit,
            ts: self.ts,
            latency_ms: self.latency_ms,
        }
    }
}

// A map keyed by the owned names can be read with a borrowed one (the derived `Hash` of a
// one-field newtype hashes the `String`, which hashes as its `str`).
impl std::borrow::Borrow<str> for Ticker {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Module {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Ticker {
    /// Whether `raw` is a ticker already in normal form: exactly what [`Ticker::parse`] would
    /// return for it (valid, trimmed, upper-case).
    pub fn is_normal(raw: &str) -> bool {
        normal(raw, super::TICKER_MAX_LEN, |c| c.is_ascii_uppercase() || b".-^=".contains(c))
    }
}

impl Module {
    /// Whether `raw` is a module name already in normal form: exactly what [`Module::parse`]
    /// would return for it (valid, trimmed, lower-case).
    pub fn is_normal(raw: &str) -> bool {
        normal(raw, super::MODULE_MAX_LEN, |c| c.is_ascii_lowercase() || b"_-".contains(c))
    }
}

/// 1–`max` bytes, each a digit or `allowed`, at least one a letter or digit.
fn normal(raw: &str, max: usize, allowed: impl Fn(&u8) -> bool) -> bool {
    let b = raw.as_bytes();
    (1..=max).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_digit() || allowed(c))
        && b.iter().any(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `is_normal` holds exactly when `parse` accepts the text and leaves it as it is.
    #[test]
    fn normal_form_is_what_parse_returns_unchanged() {
        let tickers = [
            "AAPL",
            "BRK.B",
            "^GSPC",
            "EURUSD=X",
            "aapl",
            " AAPL",
            "AAPL ",
            "..",
            "",
            "A B",
            "É",
            "ABCDEFGHIJKLMNOPQRST",
            "ABCDEFGHIJKLMNOPQRSTU",
            "1",
            "-",
            "a.b",
            "X\t",
        ];
        for t in tickers {
            let same = Ticker::parse(t).is_ok_and(|p| p.as_str() == t);
            assert_eq!(Ticker::is_normal(t), same, "ticker {t:?}");
        }
        let long = "m".repeat(65);
        let modules = [
            "price",
            "fundamentals_q-2",
            "Price",
            " price",
            "",
            "_",
            "a b",
            "news\n",
            &long[1..],
            &long,
            "K",
        ];
        for m in modules {
            let same = Module::parse(m).is_ok_and(|p| p.as_str() == m);
            assert_eq!(Module::is_normal(m), same, "module {m:?}");
        }
    }

    #[test]
    fn a_view_owns_back_into_the_same_event() {
        let e = QueryEvent {
            ticker: Ticker::parse("brk.b").unwrap(),
            module: Module::parse("News").unwrap(),
            hit: true,
            ts: Utc::now(),
            client: Some(ClientId::parse("c 1").unwrap()),
            latency_ms: Some(2.5),
        };
        let v = e.view();
        assert_eq!((v.ticker(), v.module(), v.client()), ("BRK.B", "news", Some("c 1")));
        assert_eq!(v.to_event(), e);
        let none = QueryEvent { client: None, ..e };
        assert_eq!(none.view().to_event(), none);
    }
}
