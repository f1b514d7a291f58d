//! The one duration syntax of every flag, config field and environment variable: a number with
//! a unit, or several in a row from the largest down (`250ms`, `5s`, `2m`, `1h30m`, `1d12h`);
//! a bare number is seconds (`1.5` is 1.5 s, `120` is two minutes), so settings written in
//! seconds before stay valid.

use std::time::Duration;

/// Parses a duration (see the module doc). Errors say what was wrong in words a user can act on.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let hint = "use e.g. 500ms, 5s, 2m, 1h30m or 1d";
    if t.is_empty() {
        return Err(format!("{s:?} is not a duration ({hint})"));
    }
    if let Ok(secs) = t.parse::<f64>() {
        return to_duration(s, secs);
    }
    let mut rest = t;
    let mut total = 0.0;
    let mut last_rank = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, tail) = rest.split_at(digits);
        let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration ({hint})"))?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let (rank, scale) = match unit {
            "d" => (0, 86_400.0),
            "h" => (1, 3_600.0),
            "m" => (2, 60.0),
            "s" => (3, 1.0),
            "ms" => (4, 0.001),
            "" => return Err(format!("{s:?}: {num} needs a unit after another part ({hint})")),
            _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)")),
        };
        if last_rank != usize::MAX && rank <= last_rank {
            return Err(format!("{s:?}: units must go from the largest down, each once ({hint})"));
        }
        last_rank = rank;
        total += n * scale;
        rest = next;
    }
    to_duration(s, total)
}

fn to_duration(s: &str, secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_compound_durations() {
        let ok = [
            ("250ms", 0.25),
            ("5s", 5.0),
            ("2m", 120.0),
            ("1h", 3600.0),
            ("1.5", 1.5),
            ("120", 120.0),
            ("1h30m", 5400.0),
            ("2m30s", 150.0),
            ("1d12h", 129_600.0),
            ("1s500ms", 1.5),
            (" 1.5d ", 129_600.0),
        ];
        for (s, secs) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_secs_f64(secs)), "{s}");
        }
        assert!(parse_duration("soon").unwrap_err().contains("is not a duration"));
        assert!(parse_duration("5w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("30m1h").unwrap_err().contains("largest down"));
        assert!(parse_duration("1m1m").unwrap_err().contains("largest down"));
        assert!(parse_duration("1h30").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }
}
