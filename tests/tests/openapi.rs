//! docs/openapi.yaml against the code, without running anything: every route ingest and the
//! warmer register (their routers' `.route(path, method(...))` calls) is documented with the
//! same methods under the service's tag, and every documented path is a route of the services
//! its tags name. Whether the answers match the document is checked against the running
//! services by scripts/api-fuzz.sh (schemathesis, in `.ci/run`).

use prefetch_e2e::*;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Routes as (path, methods) from a router's source: each `.route("PATH", get(..).post(..))`.
fn routes(rel: &str) -> BTreeMap<String, BTreeSet<String>> {
    let src = std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let mut out = BTreeMap::new();
    for (i, _) in src.match_indices(".route(") {
        let rest = &src[i + ".route(".len()..];
        let rest = rest.trim_start();
        let Some(rest) = rest.strip_prefix('"') else { continue };
        let end = rest.find('"').unwrap();
        let path = rest[..end].to_owned();
        // The method router is the rest of the call, up to its closing parenthesis.
        let mut depth = 1;
        let call: String = rest[end + 1..]
            .chars()
            .take_while(|c| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth > 0
            })
            .collect();
        let methods: BTreeSet<String> = ["get", "post", "put", "delete", "patch", "options"]
            .iter()
            .filter(|m| {
                call.match_indices(&format!("{m}("))
                    .any(|(at, _)| !call[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
            })
            .map(|m| m.to_string())
            .collect();
        assert!(!methods.is_empty(), "{rel}: no method for route {path}: {call}");
        out.insert(path, methods);
    }
    assert!(out.len() >= 5, "{rel}: only {} routes found", out.len());
    out
}

/// Documented operations as path -> method -> tags.
fn documented() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let text = std::fs::read_to_string(repo_path("docs/openapi.yaml")).unwrap();
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "an OpenAPI 3 document");
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_mapping().unwrap() {
        let mut ops = BTreeMap::new();
        for (method, op) in item.as_mapping().unwrap() {
            let tags = op["tags"]
                .as_sequence()
                .unwrap_or_else(|| panic!("{path:?} {method:?} has no tags"))
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect();
            assert!(
                op["responses"].as_mapping().is_some_and(|r| !r.is_empty()),
                "{path:?} {method:?} documents no response"
            );
            ops.insert(method.as_str().unwrap().to_owned(), tags);
        }
        out.insert(path.as_str().unwrap().to_owned(), ops);
    }
    out
}

#[test]
fn every_route_is_documented_and_every_documented_path_is_a_route() {
    let doc = documented();
    let services =
        [("ingest", routes("ingest/src/http.rs")), ("warmer", routes("warmer/src/http.rs"))];
    for (svc, routes) in &services {
        for (path, methods) in routes {
            let ops = doc.get(path).unwrap_or_else(|| {
                panic!("{svc} serves {path}, which docs/openapi.yaml does not document")
            });
            for m in methods {
                let tags = ops.get(m).unwrap_or_else(|| {
                    panic!(
                        "{svc} serves {} {path}; the document lacks that method",
                        m.to_uppercase()
                    )
                });
                assert!(tags.contains(*svc), "{} {path} is not tagged {svc}", m.to_uppercase());
            }
        }
    }
    for (path, ops) in &doc {
        for (m, tags) in ops {
            for tag in tags {
                let (_, routes) = services
                    .iter()
                    .find(|(s, _)| s == tag)
                    .unwrap_or_else(|| panic!("{path}: unknown tag {tag}"));
                assert!(
                    routes.get(path).is_some_and(|ms| ms.contains(m)),
                    "the document says {tag} serves {} {path}; it does not",
                    m.to_uppercase()
                );
            }
        }
    }
}
