//! docker-compose.yml, the Dockerfile and the Prometheus/Grafana files checked against the code,
//! without Docker: every flag and environment variable a service is given exists in that
//! binary's clap definition and parses; published ports and health checks use the port the
//! service listens on; every `service:port` reference names a compose service on the port it
//! listens on; Prometheus scrapes each service binary where it listens; Grafana's datasource is
//! the prometheus service and the dashboard uses it; the Dockerfile builds every binary the
//! compose file runs; every mounted file exists.

use clap::CommandFactory;
use prefetch_e2e::*;
use serde_yaml::{Mapping, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The image the Dockerfile builds, which every service of ours runs.
const IMAGE: &str = "smart-prefetch:local";

fn yaml(rel: &str) -> Value {
    let text = std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Null => Vec::new(),
        Value::Sequence(s) => s.iter().map(text).collect(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        other => panic!("expected a list, got {other:?}"),
    }
}

/// A compose service, as far as these checks look at it.
struct Service {
    name: String,
    image: String,
    command: Vec<String>,
    env: BTreeMap<String, String>,
    /// Container side of each published port.
    ports: Vec<u16>,
    raw: Mapping,
}

fn services() -> Vec<Service> {
    let compose = yaml("docker-compose.yml");
    compose["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(name, s)| {
            let env = match &s["environment"] {
                Value::Mapping(m) => m.iter().map(|(k, v)| (text(k), text(v))).collect(),
                Value::Null => BTreeMap::new(),
                other => panic!("environment as a map, got {other:?}"),
            };
            let ports = strings(&s["ports"])
                .iter()
                .map(|p| {
                    p.rsplit(':')
                        .next()
                        .unwrap()
                        .split('/')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap_or_else(|_| panic!("port {p}"))
                })
                .collect();
            Service {
                name: text(name),
                image: s["image"].as_str().unwrap_or_default().to_owned(),
                command: strings(&s["command"]),
                env,
                ports,
                raw: s.as_mapping().unwrap().clone(),
            }
        })
        .collect()
}

/// The clap definition of what `command` runs (binary, and subcommand for `prefetch`), and
/// the arguments after it.
fn clap_of(command: &[String]) -> (clap::Command, Vec<String>) {
    let bin = command.first().expect("a command").as_str();
    match bin {
        "ingest" => (ingest::Config::command(), command.to_vec()),
        "analyzer" => (analyzer::service::Config::command(), command.to_vec()),
        "warmer" => (warmer::Config::command(), command.to_vec()),
        "prefetch" => {
            let sub = command.get(1).expect("a prefetch subcommand");
            let cmd = prefetch::Cli::command()
                .find_subcommand(sub)
                .unwrap_or_else(|| {
                    panic!("compose runs `prefetch {sub}`, which the prefetch CLI does not have")
                })
                .clone();
            (cmd, command[1..].to_vec())
        }
        other => {
            panic!("compose runs {other:?} from {IMAGE}, which is not a binary of the workspace")
        }
    }
}

/// The flags (with values) the command line plus environment amount to, after checking that
/// every flag and variable exists; parsed by the binary's clap definition, so a bad value fails.
fn parse(svc: &Service) -> clap::ArgMatches {
    let (cmd, mut argv) = clap_of(&svc.command);
    let longs: BTreeSet<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
    for a in argv.iter().filter(|a| a.starts_with("--")) {
        let flag = a.trim_start_matches("--").split('=').next().unwrap();
        assert!(
            longs.contains(flag),
            "{}: --{flag} is not a flag of `{}`",
            svc.name,
            svc.command.join(" ")
        );
    }
    for (var, value) in &svc.env {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == var.as_str()))
            .unwrap_or_else(|| {
                panic!("{}: {var} is read by no flag of `{}`", svc.name, svc.command[0])
            });
        argv.push(format!("--{}={value}", arg.get_long().expect("env flags are long flags")));
    }
    cmd.clone()
        .try_get_matches_from(&argv)
        .unwrap_or_else(|e| panic!("{}: `{}` does not parse:\n{e}", svc.name, argv.join(" ")))
}

/// Port of a `host:port` or `[::]:port` value.
fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap_or_else(|_| panic!("no port in {addr}"))
}

/// Where each service listens inside the compose network.
fn listen_ports(svcs: &[Service]) -> BTreeMap<String, BTreeSet<u16>> {
    let mut out = BTreeMap::new();
    for s in svcs {
        let ports: BTreeSet<u16> = if s.image == IMAGE {
            // A client (demo-traffic) has no --listen and listens nowhere.
            let m = parse(s);
            let listen = m.try_get_raw("listen").ok().flatten().and_then(|mut v| v.next());
            listen.map(|l| port_of(&l.to_string_lossy())).into_iter().collect()
        } else if s.name == "kafka" {
            s.env["KAFKA_LISTENERS"].split(',').map(port_of).collect()
        } else if s.image.starts_with("redis:") {
            BTreeSet::from([6379])
        } else if s.image.starts_with("prom/prometheus:") {
            BTreeSet::from([9090])
        } else if s.image.starts_with("grafana/grafana") {
            BTreeSet::from([3000])
        } else {
            panic!("{}: unknown image {}; teach this test where it listens", s.name, s.image)
        };
        out.insert(s.name.clone(), ports);
    }
    out
}

/// Every `service:port` in `value` whose host is a compose service.
fn references<'a>(value: &'a str, names: &'a BTreeSet<String>) -> Vec<(&'a str, u16)> {
    let mut out = Vec::new();
    for name in names {
        for (i, _) in value.match_indices(&format!("{name}:")) {
            let before = value[..i].chars().last();
            if before.is_some_and(|c| !matches!(c, '/' | '@' | ',' | ' ' | '"' | '\'')) {
                continue;
            }
            let digits: String =
                value[i + name.len() + 1..].chars().take_while(char::is_ascii_digit).collect();
            if let Ok(p) = digits.parse() {
                out.push((name.as_str(), p));
            }
        }
    }
    out
}

#[test]
fn every_flag_and_variable_exists_and_parses() {
    let svcs = services();
    let ours: Vec<&Service> = svcs.iter().filter(|s| s.image == IMAGE).collect();
    let bins: BTreeSet<&str> = ours.iter().map(|s| s.command[0].as_str()).collect();
    assert_eq!(
        bins,
        BTreeSet::from(["analyzer", "ingest", "prefetch", "warmer"]),
        "the stack runs every binary"
    );
    for s in ours {
        assert!(
            s.raw.contains_key("build"),
            "{}: runs {IMAGE}, so compose must be able to build it",
            s.name
        );
        // Defaults included: in a container, loopback is the container itself, so a default
        // such as `--warmer-url http://127.0.0.1:8082` must be overridden with a service name.
        let m = parse(s);
        for id in m.ids() {
            for v in m.try_get_raw(id.as_str()).ok().flatten().into_iter().flatten() {
                let v = v.to_string_lossy();
                assert!(
                    !["127.0.0.1", "localhost", "[::1]"].iter().any(|l| v.contains(l)),
                    "{}: --{} is {v}, a loopback address inside its container",
                    s.name,
                    id.as_str().replace('_', "-")
                );
            }
        }
    }
}

#[test]
fn ports_health_checks_and_references_match_where_services_listen() {
    let svcs = services();
    let listen = listen_ports(&svcs);
    let names: BTreeSet<String> = listen.keys().cloned().collect();
    let by_name =
        |n: &str| svcs.iter().find(|s| s.name == n).unwrap_or_else(|| panic!("no {n} service"));
    for s in &svcs {
        for p in &s.ports {
            assert!(
                listen[&s.name].contains(p),
                "{}: publishes container port {p}, but listens on {:?}",
                s.name,
                listen[&s.name]
            );
        }
        if let Some(hc) = s.raw.get("healthcheck") {
            for part in strings(&hc["test"]) {
                if let Some(rest) = part.strip_prefix("http://localhost:") {
                    let p: u16 = rest.split('/').next().unwrap().parse().unwrap();
                    assert!(
                        listen[&s.name].contains(&p),
                        "{}: health check on port {p}, listens on {:?}",
                        s.name,
                        listen[&s.name]
                    );
                }
            }
        }
        let values = s.env.values().chain(s.command.iter());
        for v in values {
            for (target, port) in references(v, &names) {
                assert!(
                    listen[target].contains(&port),
                    "{}: {v:?} names {target}:{port}, but {target} listens on {:?}",
                    s.name,
                    listen[target]
                );
                if target == "kafka" && s.name != "kafka" {
                    // A client bootstraps there, then uses what the broker advertises for it.
                    let adv = &by_name("kafka").env["KAFKA_ADVERTISED_LISTENERS"];
                    assert!(
                        adv.contains(&format!("//kafka:{port}")),
                        "{}: kafka:{port} is not advertised as kafka:{port} ({adv})",
                        s.name
                    );
                }
            }
        }
        if let Some(Value::Mapping(deps)) = s.raw.get("depends_on") {
            for d in deps.keys() {
                assert!(names.contains(&text(d)), "{}: depends on unknown service {d:?}", s.name);
            }
        }
    }
    // Each service reaches the others by the names used: the services' brokers are Kafka's
    // internal listener, the warmer's cache is the redis service, its upstream the demo data-api.
    for n in ["ingest", "analyzer", "warmer"] {
        assert!(
            parse(by_name(n))
                .get_raw("brokers")
                .unwrap()
                .any(|b| b.to_string_lossy().starts_with("kafka:")),
            "{n} uses the kafka service"
        );
    }
    let warmer = parse(by_name("warmer"));
    let raw = |m: &clap::ArgMatches, id: &str| {
        m.get_raw(id).unwrap().next().unwrap().to_string_lossy().into_owned()
    };
    assert!(
        raw(&warmer, "cache").starts_with("redis://redis:"),
        "the warmer caches in the redis service"
    );
    assert!(
        raw(&warmer, "upstream_url").starts_with("http://data-api:"),
        "the warmer's upstream is the data-api service"
    );
    let demo = by_name("demo-traffic");
    assert!(
        demo.command
            .iter()
            .any(|a| a.starts_with("http://warmer:") || a.starts_with("http://ingest:")),
        "demo traffic goes to the warmer or ingest"
    );
    for n in ["data-api", "demo-traffic"] {
        assert_eq!(
            strings(&by_name(n).raw["profiles"]),
            vec!["demo"],
            "{n} is in the demo profile only"
        );
    }
    for s in svcs.iter().filter(|s| !s.raw.contains_key("profiles")) {
        if let Some(Value::Mapping(deps)) = s.raw.get("depends_on") {
            for d in deps.keys() {
                assert!(
                    !by_name(&text(d)).raw.contains_key("profiles"),
                    "{} (always on) depends on {d:?} (a profile)",
                    s.name
                );
            }
        }
    }
}

#[test]
fn prometheus_scrapes_every_service_where_it_listens() {
    let svcs = services();
    let listen = listen_ports(&svcs);
    let prom = yaml("deploy/prometheus/prometheus.yml");
    let mut scraped = BTreeSet::new();
    for job in prom["scrape_configs"].as_sequence().expect("scrape_configs") {
        let path = job["metrics_path"].as_str().unwrap_or("/metrics");
        assert_eq!(path, "/metrics", "the services expose /metrics");
        for sc in job["static_configs"].as_sequence().unwrap() {
            for t in strings(&sc["targets"]) {
                let (host, port) = t.rsplit_once(':').unwrap();
                let port: u16 = port.parse().unwrap();
                if host == "localhost" {
                    assert_eq!(port, 9090, "only Prometheus scrapes itself on localhost");
                    continue;
                }
                let ports = listen
                    .get(host)
                    .unwrap_or_else(|| panic!("scrape target {t} is not a compose service"));
                assert!(ports.contains(&port), "scrape target {t}: {host} listens on {ports:?}");
                scraped.insert(host.to_owned());
            }
        }
    }
    for s in svcs.iter().filter(|s| s.image == IMAGE && s.command[0] != "prefetch") {
        assert!(scraped.contains(&s.name), "Prometheus does not scrape {}", s.name);
    }
    // The prometheus service reads this very file and its rules from the mounted directory.
    let p = svcs
        .iter()
        .find(|s| s.image.starts_with("prom/prometheus:"))
        .expect("a prometheus service");
    let config =
        p.command.iter().find_map(|a| a.strip_prefix("--config.file=")).expect("--config.file");
    let mounts = strings(&p.raw["volumes"]);
    let dir = config.rsplit_once('/').unwrap().0;
    assert!(
        mounts.iter().any(|m| m.starts_with(&format!("./deploy/prometheus:{dir}"))),
        "{dir} is deploy/prometheus: {mounts:?}"
    );
    for f in strings(&prom["rule_files"]) {
        assert!(
            !f.starts_with('/'),
            "rule file {f} relative to the config, so promtool and the container agree"
        );
        assert!(repo_path(&format!("deploy/prometheus/{f}")).is_file(), "rule file {f}");
    }
}

#[test]
fn grafana_reads_prometheus_and_the_dashboard_uses_that_datasource() {
    let svcs = services();
    let listen = listen_ports(&svcs);
    let ds = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let ds = &ds["datasources"][0];
    let url = ds["url"].as_str().unwrap();
    let (host, port) = url.strip_prefix("http://").unwrap().split_once(':').unwrap();
    assert_eq!(
        listen.get(host).map(|p| p.contains(&port.parse().unwrap())),
        Some(true),
        "datasource {url} is the prometheus service"
    );
    assert!(svcs.iter().find(|s| s.name == host).unwrap().image.starts_with("prom/prometheus:"));
    // The dashboard names no datasource uid of ours: it asks for one through `__inputs` on
    // import and, when provisioned, its datasource variable resolves to the default
    // Prometheus datasource, which must therefore be this one.
    assert_eq!(ds["type"].as_str(), Some("prometheus"));
    assert_eq!(ds["isDefault"].as_bool(), Some(true), "the provisioned datasource is the default");
    let uid = "${DS_PROMETHEUS}";

    let g =
        svcs.iter().find(|s| s.image.starts_with("grafana/grafana")).expect("a grafana service");
    let mounts = strings(&g.raw["volumes"]);
    let mount_of = |src: &str| {
        mounts
            .iter()
            .find_map(|m| m.strip_prefix(&format!("{src}:")))
            .map(|t| t.trim_end_matches(":ro").to_owned())
            .unwrap_or_else(|| panic!("{src} not mounted: {mounts:?}"))
    };
    assert_eq!(mount_of("./deploy/grafana/provisioning"), "/etc/grafana/provisioning");
    let dashboards = mount_of("./deploy/grafana/dashboards");
    let provider = yaml("deploy/grafana/provisioning/dashboards/smart-prefetch.yml");
    assert_eq!(
        provider["providers"][0]["options"]["path"].as_str(),
        Some(dashboards.as_str()),
        "the provider reads the mounted dashboards"
    );
    let home = &g.env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"];
    let file =
        home.strip_prefix(&format!("{dashboards}/")).expect("home dashboard in the mounted folder");
    assert!(repo_path(&format!("deploy/grafana/dashboards/{file}")).is_file(), "{home}");

    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_path("deploy/grafana/dashboards/smart-prefetch.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(dash["__inputs"][0]["name"], "DS_PROMETHEUS", "a datasource input for import");
    assert_eq!(dash["__inputs"][0]["pluginId"], "prometheus");
    let ds_var = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "DS_PROMETHEUS")
        .expect("a datasource variable for provisioning");
    assert_eq!((&ds_var["type"], &ds_var["query"]), (&"datasource".into(), &"prometheus".into()));
    let mut exprs = 0;
    for p in dash["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], uid, "panel {}", p["title"]);
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {} has no queries", p["title"]));
        assert!(!targets.is_empty(), "panel {} has no queries", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], uid, "a query of panel {}", p["title"]);
            assert!(
                t["expr"].as_str().is_some_and(|e| e.contains("smart_prefetch_")),
                "panel {}: {t}",
                p["title"]
            );
            exprs += 1;
        }
    }
    assert!(exprs >= 20, "{exprs} queries");
}

#[test]
fn the_dockerfile_builds_every_binary_the_stack_runs() {
    let dockerfile = std::fs::read_to_string(repo_path("Dockerfile")).unwrap();
    let build = dockerfile.lines().find(|l| l.contains("cargo build")).expect("a cargo build");
    let copy = dockerfile
        .lines()
        .find(|l| l.contains("cp target/release/"))
        .expect("binaries copied out of the cache mount");
    for s in services().iter().filter(|s| s.image == IMAGE) {
        let bin = &s.command[0];
        assert!(
            build.contains(&format!("-p {bin}")),
            "{}: the Dockerfile does not build {bin}",
            s.name
        );
        assert!(
            copy.contains(&format!("target/release/{bin} "))
                || copy.contains(&format!("target/release/{bin}\t")),
            "{}: {bin} is not copied",
            s.name
        );
        // The package of that name exists and has a binary of that name.
        let members = ["ingest", "analyzer", "warmer", "cli"];
        let has = members.iter().any(|m| {
            let toml = std::fs::read_to_string(repo_path(&format!("{m}/Cargo.toml"))).unwrap();
            toml.contains(&format!("name = \"{bin}\""))
                && repo_path(&format!("{m}/src/main.rs")).is_file()
        });
        assert!(has, "no workspace package builds a binary {bin}");
    }
    assert!(dockerfile.contains("--locked"), "the image builds from Cargo.lock");
    let runtime = dockerfile.split("AS runtime").nth(1).expect("a runtime stage");
    assert!(runtime.contains(" curl"), "the compose health checks run curl in the image");
    // Nothing the build needs is excluded from the context.
    let ignore = std::fs::read_to_string(repo_path(".dockerignore")).unwrap();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "common",
        "ingest",
        "analyzer",
        "warmer",
        "cli",
        "tests",
        "testkit",
        "bench",
        "docs",
    ] {
        assert!(
            !ignore.lines().any(|l| l.trim().trim_end_matches('/') == needed),
            ".dockerignore drops {needed}"
        );
    }
}

#[test]
fn every_mounted_file_is_in_the_repository() {
    for s in services() {
        if let Some(v) = s.raw.get("volumes") {
            for m in strings(v).iter().filter(|m| m.starts_with("./")) {
                let src = m.split(':').next().unwrap();
                assert!(
                    repo_path(src.trim_start_matches("./")).exists(),
                    "{}: mounts missing {src}",
                    s.name
                );
            }
        }
    }
}

/// The broker addresses the README gives to clients of the compose stack (issue #14.1): every
/// `localhost:PORT` or `kafka:PORT` it names next to Kafka is a listener compose advertises (the
/// host's and the compose network's), and the confluent-kafka snippet bootstraps from the
/// host's side and names the network's side for a container.
#[test]
fn the_readmes_kafka_addresses_are_the_listeners_compose_advertises() {
    let svcs = services();
    let kafka = svcs.iter().find(|s| s.name == "kafka").expect("a kafka service");
    let adv = &kafka.env["KAFKA_ADVERTISED_LISTENERS"];
    let advertised: BTreeSet<String> =
        adv.split(',').filter_map(|l| l.split_once("://").map(|(_, a)| a.to_owned())).collect();
    let host_side = advertised.iter().find(|a| a.starts_with("localhost:")).expect("host listener");
    let net_side = advertised.iter().find(|a| a.starts_with("kafka:")).expect("network listener");

    let readme = std::fs::read_to_string(repo_path("README.md")).unwrap();
    let mut named = 0;
    // Lines about Kafka only: `localhost:8080` and the like are other services'.
    let about_kafka =
        |l: &&str| l.contains("Kafka") || l.contains("bootstrap") || l.contains("broker");
    for line in readme.lines().filter(about_kafka) {
        for host in ["localhost:", "kafka:"] {
            for (at, _) in line.match_indices(host) {
                let port: String =
                    line[at + host.len()..].chars().take_while(char::is_ascii_digit).collect();
                // `localhost:9092` is the broker's; another localhost port on a line that names
                // Kafka is a service of ours (ingest, Redis…).
                if port.is_empty() || (host == "localhost:" && port != "9092") {
                    continue;
                }
                let addr = format!("{host}{port}");
                assert!(
                    advertised.contains(&addr),
                    "README names {addr} for Kafka, compose advertises {adv}: {line}"
                );
                named += 1;
            }
        }
    }
    assert!(named >= 3, "the README names compose's Kafka addresses ({named} found)");

    let snippet = readme
        .lines()
        .find(|l| l.contains("\"bootstrap.servers\""))
        .expect("the confluent-kafka snippet sets bootstrap.servers");
    assert!(snippet.contains(&format!("\"bootstrap.servers\": \"{host_side}\"")), "{snippet}");
    assert!(snippet.contains(&format!("\"{net_side}\" from a compose container")), "{snippet}");
}
