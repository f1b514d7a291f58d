//! How a cache proxy reads the upstream's answer headers: `Retry-After` (seconds or an HTTP
//! date) on 429 and 503, and `Cache-Control` (how long a shared cache may keep an answer).

use std::time::Duration;

/// Longest `Retry-After` believed (a date years ahead would otherwise stop warming for good).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// `Retry-After` as seconds or an HTTP date, bounded by [`RETRY_AFTER_MAX`].
pub fn parse_retry_after(v: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = v.trim();
    let d = match v.parse::<u64>() {
        Ok(s) => Duration::from_secs(s),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            (at.with_timezone(&chrono::Utc) - now).to_std().unwrap_or(Duration::ZERO)
        }
    };
    Some(d.min(RETRY_AFTER_MAX))
}

/// How long a shared cache may keep an answer by its `Cache-Control`: `s-maxage` before
/// `max-age`; zero for `no-store`, `no-cache` and `private` (a shared cache must not store).
pub fn parse_cache_control(v: &str) -> Option<Duration> {
    let mut max_age = None;
    let mut s_maxage = None;
    for d in v.split(',') {
        let d = d.trim().to_ascii_lowercase();
        let (name, value) = d.split_once('=').map_or((d.as_str(), None), |(n, v)| (n, Some(v)));
        let secs = || value.and_then(|v| v.trim_matches('"').parse::<u64>().ok());
        match name.trim() {
            "no-store" | "no-cache" | "private" => return Some(Duration::ZERO),
            "max-age" => max_age = secs().map(Duration::from_secs),
            "s-maxage" => s_maxage = secs().map(Duration::from_secs),
            _ => {}
        }
    }
    s_maxage.or(max_age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_and_cache_control_are_read_as_a_proxy_reads_them() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z").unwrap().to_utc();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("99999999", now), Some(RETRY_AFTER_MAX));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_cache_control("public, max-age=30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_cache_control("max-age=30, s-maxage=5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_cache_control("no-store"), Some(Duration::ZERO));
        assert_eq!(parse_cache_control("private, max-age=600"), Some(Duration::ZERO));
        assert_eq!(parse_cache_control("public"), None);
    }
}
