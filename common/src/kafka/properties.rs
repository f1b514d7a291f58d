//! Kafka client properties files (`--kafka-config FILE`), in the `key=value` format of the Java
//! client's `client.properties` and kcat's `-F`: one property a line, `#` or `!` starts a comment
//! line, blank lines are skipped, whitespace around key and value is trimmed. Keys are passed to
//! librdkafka as they are, so the file holds librdkafka names (`sasl.username`, not JAAS).
//!
//! Secrets (passwords, keys, SASL settings) are why the file exists: it keeps them out of argv and
//! the environment. Nothing here prints a value that [`is_sensitive`] flags.

use std::fmt;
use std::path::{Path, PathBuf};

/// A properties file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PropertiesError {
    /// The file could not be read.
    #[error("cannot read the Kafka config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A line is neither a comment, blank, nor `key=value`.
    #[error("{path}:{line}: expected key=value or a # comment; the line starts {found:?}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The line's first word (up to `=` or a space), so a secret never reaches the message.
        found: String,
    },
}

/// One `key=value` of a properties file, with the line it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Property {
    /// The librdkafka key.
    pub key: String,
    /// Its value.
    pub value: String,
    /// 1-based line number in the file.
    pub line: usize,
}

/// A parsed properties file. `Debug` shows the keys and redacts sensitive values.
#[derive(Clone)]
pub struct KafkaConfigFile {
    /// Where it was read from (named in errors).
    pub path: PathBuf,
    /// The properties, in file order (a later line overrides an earlier one).
    pub properties: Vec<Property>,
}

impl KafkaConfigFile {
    /// Reads and parses `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, PropertiesError> {
        let path = path.as_ref().to_path_buf();
        let text = std::fs::read_to_string(&path)
            .map_err(|source| PropertiesError::Read { path: path.clone(), source })?;
        Self::parse(path, &text)
    }

    /// Parses `text` as the contents of `path`.
    pub fn parse(path: PathBuf, text: &str) -> Result<Self, PropertiesError> {
        let mut properties = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let bad = || PropertiesError::BadLine {
                path: path.clone(),
                line: i + 1,
                found: line
                    .split(|c: char| c == '=' || c.is_whitespace())
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .take(60)
                    .collect(),
            };
            let (key, value) = line.split_once('=').ok_or_else(bad)?;
            let key = key.trim();
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(bad());
            }
            properties.push(Property {
                key: key.to_owned(),
                value: value.trim().to_owned(),
                line: i + 1,
            });
        }
        Ok(Self { path, properties })
    }

    /// The line of the last occurrence of `key`, if the file sets it.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        self.properties.iter().rev().find(|p| p.key == key).map(|p| p.line)
    }
}

/// Whether the value of `key` must never be printed: passwords, secrets, private keys and every
/// `sasl.*` setting (usernames and JAAS-like configs included).
pub fn is_sensitive(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k.starts_with("sasl.") || k.contains(".key")
}

/// `value`, or `[redacted]` when the key is sensitive.
pub fn shown(key: &str, value: &str) -> String {
    if is_sensitive(key) {
        "[redacted]".into()
    } else {
        value.to_owned()
    }
}

impl fmt::Debug for KafkaConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let props: Vec<String> = self
            .properties
            .iter()
            .map(|p| format!("{}={}", p.key, shown(&p.key, &p.value)))
            .collect();
        f.debug_struct("KafkaConfigFile")
            .field("path", &self.path)
            .field("properties", &props)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KafkaConfigFile, PropertiesError> {
        KafkaConfigFile::parse("client.properties".into(), text)
    }

    #[test]
    fn comments_blanks_and_whitespace() {
        let f = parse(
            "# managed Kafka\n\n  security.protocol = SASL_SSL\n! also a comment\n\
             sasl.password=p=a ss\nssl.ca.location=/etc/ca.pem\n",
        )
        .unwrap();
        let kv: Vec<_> =
            f.properties.iter().map(|p| (p.key.as_str(), p.value.as_str(), p.line)).collect();
        assert_eq!(
            kv,
            [
                ("security.protocol", "SASL_SSL", 3),
                ("sasl.password", "p=a ss", 5),
                ("ssl.ca.location", "/etc/ca.pem", 6)
            ]
        );
        assert_eq!(f.line_of("sasl.password"), Some(5));
        assert_eq!(f.line_of("acks"), None);
    }

    #[test]
    fn bad_lines_name_the_line_and_hide_values() {
        let e = parse("acks=all\nsasl.password hunter2\n").unwrap_err().to_string();
        assert!(e.contains("client.properties:2"), "{e}");
        assert!(e.contains("\"sasl.password\"") && !e.contains("hunter2"), "{e}");
        let e = parse("=hunter2\n").unwrap_err().to_string();
        assert!(e.contains(":1:") && !e.contains("hunter2"), "{e}");
        let e = parse("a b=c\n").unwrap_err().to_string();
        assert!(e.contains(":1:"), "{e}");
    }

    #[test]
    fn unreadable_file_is_named() {
        let e = KafkaConfigFile::load("/nonexistent/kafka.properties").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/kafka.properties"), "{e}");
    }

    /// Property (seeded; a failure names its case): no text makes the parser panic; what it
    /// accepts re-renders as `key=value` lines that parse back to the same properties; an
    /// error never quotes anything after a line's first `=` or space (where a secret sits);
    /// `Debug` shows no sensitive value.
    #[test]
    fn any_text_parses_without_panic_round_trips_and_never_leaks_a_value() {
        use prefetch_contract::testgen::Gen;
        const KEYS: [&str; 7] = [
            "sasl.password",
            "ssl.key.password",
            "sasl.username",
            "acks",
            "bootstrap.servers",
            "a b",
            "",
        ];
        let seps = ["=", " = ", " ", "\t", "==", ": "];
        let mut accepted = 0;
        for case in 0..5_000u64 {
            let mut g = Gen::new(case);
            let mut text = String::new();
            let mut secrets = Vec::new();
            for i in 0..g.below(6) {
                match g.below(4) {
                    0 => text.push_str(&String::from_utf8_lossy(&g.bytes(6))),
                    1 => text.push_str(["# c", "! c", "", "   "][g.below(4)]),
                    _ => {
                        let key = KEYS[g.below(KEYS.len())];
                        let secret = format!("s3cr3t{case}x{i}");
                        // A line that is only a value (`  s3cr3t`) is quoted by design: its
                        // first word is all the error can name.
                        let sep = if key.is_empty() { "=" } else { seps[g.below(seps.len())] };
                        text.push_str(&format!("{key}{sep}{secret}"));
                        secrets.push((key, sep, secret));
                    }
                }
                text.push_str(["\n", "\r\n"][g.below(2)]);
            }
            match parse(&text) {
                Err(e) => {
                    let e = e.to_string();
                    for (_, _, secret) in &secrets {
                        assert!(!e.contains(secret.as_str()), "case {case}: {e}");
                    }
                }
                Ok(f) => {
                    accepted += 1;
                    for p in &f.properties {
                        assert!(!p.key.is_empty() && !p.key.contains(char::is_whitespace));
                        assert!(!p.key.contains('=') && p.value.trim() == p.value, "case {case}");
                    }
                    let rendered: String =
                        f.properties.iter().map(|p| format!("{}={}\n", p.key, p.value)).collect();
                    let again = parse(&rendered).unwrap_or_else(|e| panic!("case {case}: {e}"));
                    let kv = |f: &KafkaConfigFile| -> Vec<(String, String)> {
                        f.properties.iter().map(|p| (p.key.clone(), p.value.clone())).collect()
                    };
                    assert_eq!(kv(&again), kv(&f), "case {case}");
                    let debug = format!("{f:?}");
                    for p in &f.properties {
                        if is_sensitive(&p.key) && p.value.starts_with("s3cr3t") {
                            assert!(!debug.contains(&p.value), "case {case}: {debug}");
                        }
                    }
                }
            }
        }
        assert!(accepted > 500, "the generator reached the accepting path {accepted} times");
    }

    #[test]
    fn debug_redacts_secrets() {
        let f = parse("sasl.username=alice\nsasl.password=hunter2\nssl.key.password=k\nacks=all\n")
            .unwrap();
        let d = format!("{f:?}");
        assert!(!d.contains("hunter2") && !d.contains("alice") && !d.contains("=k\""), "{d}");
        assert!(d.contains("acks=all") && d.contains("sasl.password=[redacted]"), "{d}");
    }
}
