//! Reading the canonical form of an event without serde, for the hot paths: the analyzer's
//! consume path and ingest's batches (which forward a line that is already canonical as it is).
//!
//! The query-events topic carries the canonical JSON that [`QueryEvent::to_json`] writes: the
//! fields in one order, no whitespace, `ts` as UTC RFC 3339 with milliseconds. [`event`] reads
//! exactly that shape with a byte scanner and validates each field with the contract's own
//! newtype parsers ([`Ticker::parse`] and the others); anything else — another field order,
//! whitespace, an escaped string, a number it cannot read exactly, an invalid field —
//! goes to [`QueryEvent::from_json`], which stays the one definition of what is valid and the
//! one source of error messages. The tests check that both agree on every shape.
//!
//! Why: serde's generic path (struct visitor, the untagged `ts`, chrono's RFC 3339 parser) was
//! measured at ~0.5 µs an event, the largest single cost of the analyzer's consume path
//! (BENCHMARKS.md, analyzer); for ingest, building a JSON tree and writing the event again
//! cost more than producing it (issue #15).

use super::{
    ClientId, EventError, EventRef, Module, QueryEvent, Ticker, MAX_FUTURE_SKEW, MAX_LATENCY_MS,
    MIN_EPOCH_MS,
};
use chrono::{DateTime, NaiveDate, Utc};

/// Parses and validates one message payload, as [`QueryEvent::from_json`] does.
pub fn event(bytes: &[u8], now: DateTime<Utc>) -> Result<QueryEvent, EventError> {
    match canonical(bytes, now) {
        Some(e) => Ok(e),
        None => QueryEvent::from_json(bytes, now),
    }
}

/// A valid event read by the scanner.
#[derive(Debug, Clone, PartialEq)]
pub struct Scanned {
    /// The event.
    pub event: QueryEvent,
    /// Whether the bytes are exactly what [`QueryEvent::to_json`] writes for it (names already
    /// normalised, `latency_ms` spelled as serde_json spells it), so they can be forwarded as
    /// they are instead of being written again.
    pub exact: bool,
}

/// The canonical shape's fields as they lie in the bytes, the timestamp read and in range;
/// names not yet validated.
struct Fields<'a> {
    ticker: &'a str,
    module: &'a str,
    hit: bool,
    ts: DateTime<Utc>,
    client: Option<&'a str>,
    /// The value and its text.
    latency_ms: Option<(f64, &'a [u8])>,
}

/// Reads the canonical shape; `None` for anything else or a timestamp or latency out of range.
fn fields(bytes: &[u8], now: DateTime<Utc>) -> Option<Fields<'_>> {
    let mut s = Scan { b: bytes, i: 0 };
    s.lit(b"{\"ticker\":")?;
    let ticker = s.string()?;
    s.lit(b",\"module\":")?;
    let module = s.string()?;
    s.lit(b",\"hit\":")?;
    let hit = if s.lit(b"true").is_some() {
        true
    } else {
        s.lit(b"false")?;
        false
    };
    s.lit(b",\"ts\":")?;
    let ts = s.ts()?;
    // Out of the contract's range: the contract parser says why. Compared in whole
    // milliseconds, which `ts` is in (so `ts > now + skew` exactly when its milliseconds exceed
    // those of `now + skew`, the skew being whole milliseconds too): `now + skew` as a
    // `DateTime` was a tenth of `locate` (BENCHMARKS.md #15).
    let ms = ts.timestamp_millis();
    if ms > now.timestamp_millis() + MAX_FUTURE_SKEW.num_milliseconds() || ms < MIN_EPOCH_MS {
        return None;
    }
    let client = match s.lit(b",\"client\":") {
        Some(()) => Some(s.string()?),
        None => None,
    };
    let latency_ms = match s.lit(b",\"latency_ms\":") {
        Some(()) => {
            let start = s.i;
            let x = s.number().filter(|x| *x <= MAX_LATENCY_MS)?;
            Some((x, &bytes[start..s.i]))
        }
        None => None,
    };
    s.lit(b"}")?;
    (s.i == bytes.len()).then_some(Fields { ticker, module, hit, ts, client, latency_ms })
}

/// Reads the canonical shape: the valid event and whether the bytes are exactly canonical;
/// `None` for any other shape or an invalid event (read those with [`QueryEvent::from_json`]
/// or the tree-based parser, which name every problem).
pub fn scan(bytes: &[u8], now: DateTime<Utc>) -> Option<Scanned> {
    let f = fields(bytes, now)?;
    let ticker = Ticker::parse(f.ticker).ok()?;
    let module = Module::parse(f.module).ok()?;
    // A string without escapes or control characters is written back unchanged.
    let client = match f.client {
        Some(c) => Some(ClientId::parse(c).ok()?),
        None => None,
    };
    let exact = ticker.as_str() == f.ticker
        && module.as_str() == f.module
        && f.latency_ms.is_none_or(|(x, text)| same_as_serde(x, text));
    let event = QueryEvent {
        ticker,
        module,
        hit: f.hit,
        ts: f.ts,
        client,
        latency_ms: f.latency_ms.map(|(x, _)| x),
    };
    Some(Scanned { event, exact })
}

/// A valid event in the canonical shape with its names in normal form, held as where its
/// names lie in the bytes it was read from ([`locate`]), so it can travel with those bytes
/// (the analyzer's parse thread hands a chunk's buffer and these to its fold thread).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Located {
    ticker: (u32, u32),
    module: (u32, u32),
    client: Option<(u32, u32)>,
    hit: bool,
    ts: DateTime<Utc>,
    latency_ms: Option<f64>,
}

/// Reads a valid canonical event whose ticker and module are already in normal form, without
/// allocating; `None` for anything else (read that with [`event`]). `base` is where `bytes`
/// start in the buffer the result will be viewed in ([`Located::view`]).
pub fn locate(bytes: &[u8], base: usize, now: DateTime<Utc>) -> Option<Located> {
    let f = fields(bytes, now)?;
    if !Ticker::is_normal(f.ticker) || !Module::is_normal(f.module) {
        return None;
    }
    if let Some(c) = f.client {
        ClientId::check(c).ok()?;
    }
    let span = |s: &str| -> Option<(u32, u32)> {
        let start = base + (s.as_ptr() as usize - bytes.as_ptr() as usize);
        Some((u32::try_from(start).ok()?, u32::try_from(start + s.len()).ok()?))
    };
    Some(Located {
        ticker: span(f.ticker)?,
        module: span(f.module)?,
        client: match f.client {
            Some(c) => Some(span(c)?),
            None => None,
        },
        hit: f.hit,
        ts: f.ts,
        latency_ms: f.latency_ms.map(|(x, _)| x),
    })
}

impl Located {
    /// The event, borrowing its names from `buf`: the buffer [`locate`] was given the bytes of
    /// (at its `base`). Panics if `buf` is not that buffer's contents.
    pub fn view<'a>(&self, buf: &'a [u8]) -> EventRef<'a> {
        let s = |(a, b): (u32, u32)| -> &'a str {
            std::str::from_utf8(&buf[a as usize..b as usize]).expect("the buffer it was located in")
        };
        EventRef {
            ticker: s(self.ticker),
            module: s(self.module),
            client: self.client.map(s),
            hit: self.hit,
            ts: self.ts,
            latency_ms: self.latency_ms,
        }
    }
}

/// Whether serde_json writes `x` as `text` (`3` is written `3.0`), without allocating.
fn same_as_serde(x: f64, text: &[u8]) -> bool {
    let mut w = std::io::Cursor::new([0u8; 32]);
    if serde_json::to_writer(&mut w, &x).is_err() {
        return false;
    }
    let n = w.position() as usize;
    &w.get_ref()[..n] == text
}

/// A cursor over the payload; every method returns `None` on anything unexpected.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn lit(&mut self, s: &[u8]) -> Option<()> {
        let end = self.i.checked_add(s.len())?;
        (self.b.get(self.i..end)? == s).then(|| self.i = end)
    }

    /// A string with no escapes and no control characters (both are left to serde).
    fn string(&mut self) -> Option<&'a str> {
        self.lit(b"\"")?;
        let rest = self.b.get(self.i..)?;
        let len = rest.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        if rest[len] != b'"' {
            return None;
        }
        self.i += len + 1;
        std::str::from_utf8(&rest[..len]).ok()
    }

    /// A plain decimal (`123`, `12.5`): short enough that its digits and power of ten are exact
    /// in an f64, so every correct parser reads the same value.
    fn number(&mut self) -> Option<f64> {
        let rest = self.b.get(self.i..)?;
        let len = rest.iter().position(|c| !(c.is_ascii_digit() || *c == b'.'))?;
        let s = std::str::from_utf8(&rest[..len]).ok()?;
        let (int, frac) = s.split_once('.').unwrap_or((s, "1"));
        let plain = !int.is_empty()
            && !frac.is_empty()
            && !frac.contains('.')
            && (int == "0" || !int.starts_with('0'));
        if !plain || int.len() + frac.len() > 15 {
            return None;
        }
        self.i += len;
        s.parse().ok()
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    fn ts(&mut self) -> Option<DateTime<Utc>> {
        let s = self.string()?.as_bytes();
        if s.len() != 24
            || s[4] != b'-'
            || s[7] != b'-'
            || s[10] != b'T'
            || s[13] != b':'
            || s[16] != b':'
            || s[19] != b'.'
            || s[23] != b'Z'
        {
            return None;
        }
        let n = |r: std::ops::Range<usize>| -> Option<u32> {
            s[r].iter().try_fold(0u32, |acc, &c| {
                c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
            })
        };
        let date = NaiveDate::from_ymd_opt(n(0..4)? as i32, n(5..7)?, n(8..10)?)?;
        // A leap second (`:60`) is left to chrono's parser.
        (n(17..19)? < 60).then_some(())?;
        Some(date.and_hms_milli_opt(n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?)?.and_utc())
    }
}

/// The canonical shape, valid; `None` for anything else (the caller falls back to serde).
fn canonical(bytes: &[u8], now: DateTime<Utc>) -> Option<QueryEvent> {
    scan(bytes, now).map(|s| s.event)
}

#[cfg(test)]
mod tests;
