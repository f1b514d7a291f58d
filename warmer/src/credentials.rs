//! Upstream credentials and the rule that keeps them out of everything the warmer prints.
//!
//! Data APIs take a key as a header (`--upstream-header 'Authorization: Bearer ${API_KEY}'`,
//! or lines of a secrets file, `--upstream-header-file`) or as a query parameter
//! (`--upstream-query 'apikey=${API_KEY}'`). `${NAME}` is read from the environment once, at
//! start-up; a variable that is not set is a start-up error naming it (never its value).
//!
//! Nothing that holds a secret is printed as it is: header values are marked sensitive (their
//! `Debug` says `Sensitive`), [`Secret`] prints `[redacted]`, and every URL that reaches a log
//! line, an error body or a metric goes through [`redact_url`], which drops the query and the
//! userinfo (a key in the URL template stays out of logs and 502 bodies too).

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::fmt;
use std::path::Path;

/// A flag value that may carry a secret: kept as given, printed as `[redacted]` after its
/// name (the part before `:` or `=`), so `Debug` of the config never shows a credential.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.0.split([':', '=']).next().unwrap_or_default();
        write!(f, "{name:?}=[redacted]")
    }
}

/// A token (`--api-token`, `--read-token`): `Debug` prints `[redacted]`, nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Redacted {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("a token must not be empty".into());
        }
        Ok(Self(t.to_owned()))
    }
}

/// Why the credentials could not be prepared (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// `${NAME}` names a variable that is not set.
    #[error("environment variable {var} (named in {flag}) is not set")]
    MissingVar {
        /// The variable.
        var: String,
        /// The flag or file that names it.
        flag: String,
    },
    /// `${` without its `}`.
    #[error("{flag}: `${{` without a closing `}}`")]
    Unterminated {
        /// The flag or file.
        flag: String,
    },
    /// Not `Name: value` / `name=value`, or a name or value HTTP does not allow.
    #[error("{flag}: {why}")]
    Malformed {
        /// The flag or file (with the line number).
        flag: String,
        /// What is wrong (never the value).
        why: String,
    },
    /// The secrets file could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// Replaces every `${NAME}` in `s` by the value `lookup` gives for NAME.
pub fn expand_env(
    s: &str,
    flag: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, CredentialError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(CredentialError::Unterminated { flag: flag.into() })?;
        let var = &after[..end];
        let value = lookup(var)
            .ok_or_else(|| CredentialError::MissingVar { var: var.into(), flag: flag.into() })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

/// One `Name: value` header, the value marked sensitive so no `Debug` prints it.
pub fn parse_header(line: &str, flag: &str) -> Result<(HeaderName, HeaderValue), CredentialError> {
    let malformed = |why: &str| CredentialError::Malformed { flag: flag.into(), why: why.into() };
    let (name, value) =
        line.split_once(':').ok_or_else(|| malformed("not of the form `Name: value`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| malformed("the header name is not a valid HTTP token"))?;
    let mut value = HeaderValue::from_str(value.trim())
        .map_err(|_| malformed("the header value holds characters HTTP does not allow"))?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// The headers of `--upstream-header` flags (with `${VAR}` expanded) and of the secrets file
/// (taken literally: one `Name: value` per line, blank lines and `#` comments skipped).
pub fn headers(flags: &[Secret], file: Option<&Path>) -> Result<HeaderMap, CredentialError> {
    let mut map = HeaderMap::new();
    for f in flags {
        let line = expand_env(&f.0, "--upstream-header", env)?;
        let (n, v) = parse_header(&line, "--upstream-header")?;
        map.append(n, v);
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|source| CredentialError::File { path: path.display().to_string(), source })?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (n, v) = parse_header(line, &format!("{} line {}", path.display(), i + 1))?;
            map.append(n, v);
        }
    }
    Ok(map)
}

/// The `name=value` pairs of `--upstream-query` flags, `${VAR}` expanded.
pub fn query_pairs(flags: &[Secret]) -> Result<Vec<(String, String)>, CredentialError> {
    flags
        .iter()
        .map(|f| {
            let s = expand_env(&f.0, "--upstream-query", env)?;
            let (n, v) = s.split_once('=').ok_or_else(|| CredentialError::Malformed {
                flag: "--upstream-query".into(),
                why: "not of the form `name=value`".into(),
            })?;
            if n.trim().is_empty() {
                return Err(CredentialError::Malformed {
                    flag: "--upstream-query".into(),
                    why: "empty parameter name".into(),
                });
            }
            Ok((n.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

/// `url` fit to print: no userinfo, and the query (where keys live) replaced by `[redacted]`;
/// the rest exactly as written (a template's `{module}` stays readable). Anything up to the
/// last `@` before the query counts as userinfo, so a password with a stray `/` is cut too.
pub fn redact_url(url: &str) -> String {
    let (base, had_query) = match url.split_once('?') {
        Some((b, _)) => (b, true),
        None => (url, false),
    };
    let base = base.split('#').next().unwrap_or_default();
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let host_and_path = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            format!("{scheme}://{host_and_path}")
        }
        None => base.to_owned(),
    };
    if had_query {
        out.push_str("?[redacted]");
    }
    out
}

/// A reqwest error as a sentence without the URL (its `Display` names the URL, query and
/// all): the error and its causes, joined.
pub fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_references_are_expanded_or_refused_by_name() {
        let look = |v: &str| (v == "KEY").then(|| "s3cr3t".to_owned());
        assert_eq!(expand_env("Bearer ${KEY}", "f", look).unwrap(), "Bearer s3cr3t");
        assert_eq!(expand_env("a${KEY}b${KEY}", "f", look).unwrap(), "as3cr3tbs3cr3t");
        assert_eq!(expand_env("plain", "f", look).unwrap(), "plain");
        let e = expand_env("Bearer ${NOPE}", "--upstream-header", look).unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment variable NOPE (named in --upstream-header) is not set"
        );
        assert!(matches!(
            expand_env("${KEY", "f", look),
            Err(CredentialError::Unterminated { .. })
        ));
    }

    #[test]
    fn headers_are_sensitive_and_malformed_ones_refused_without_their_value() {
        let (n, v) = parse_header("Authorization: Bearer abc", "f").unwrap();
        assert_eq!(n, "authorization");
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("abc"));
        let e = parse_header("no colon here", "f").unwrap_err().to_string();
        assert!(e.contains("Name: value") && !e.contains("colon here"), "{e}");
        assert!(parse_header("bad name: x", "f").is_err());
        assert!(format!("{:?}", Secret("X-Api-Key: abc".into())).contains("[redacted]"));
        assert_eq!(format!("{:?}", Redacted("abc=".into())), "[redacted]");
        assert!(!format!("{:?}", Secret("apikey=abc".into())).contains("abc"));
    }

    #[test]
    fn printed_urls_lose_query_and_userinfo() {
        assert_eq!(
            redact_url("https://user:pw@h:8443/api/v3/price/AAPL?apikey=SECRET&x=1"),
            "https://h:8443/api/v3/price/AAPL?[redacted]"
        );
        assert_eq!(redact_url("http://h/price/%5EGSPC"), "http://h/price/%5EGSPC");
        assert_eq!(redact_url("nonsense?key=SECRET"), "nonsense?[redacted]");
        assert_eq!(redact_url("https://u:p/w@h/x#frag"), "https://h/x");
        assert_eq!(
            redact_url("http://data-api:8000/{module}/{ticker}"),
            "http://data-api:8000/{module}/{ticker}"
        );
        assert_eq!(redact_url("redis://:PASS@r:6379/0"), "redis://r:6379/0");
    }
}
