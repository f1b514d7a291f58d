//! The Kubernetes manifests (deploy/k8s) checked against the code, without a cluster: every
//! environment variable a container gets (its own and the shared ConfigMap's) is read by a flag
//! of that binary and parses; ports, probes and scrape annotations use the port the service
//! listens on; probes ask /healthz (liveness) and /readyz (readiness); every Deployment has
//! resources; Services select their Deployment's pods and target its port; ingest reaches the
//! warmer through the warmer's Service; the Kafka client properties Secret is mounted in every
//! pod. The schema check (kustomize + kubeconform, strict) is scripts/k8s-validate.sh, run by
//! `.ci/run`.

use clap::CommandFactory;
use prefetch_e2e::*;
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};

const DIR: &str = "deploy/k8s";

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_path(&format!("{DIR}/{rel}")))
        .unwrap_or_else(|e| panic!("{DIR}/{rel}: {e}"))
}

fn kustomization() -> Value {
    serde_yaml::from_str(&read("kustomization.yaml")).unwrap()
}

/// Every document of every resource file the kustomization lists.
fn resources() -> Vec<Value> {
    let k = kustomization();
    let mut out = Vec::new();
    for file in k["resources"].as_sequence().expect("resources") {
        let text = read(file.as_str().unwrap());
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap();
            if !v.is_null() {
                out.push(v);
            }
        }
    }
    out
}

/// `KEY=value` lines of an env file (comments and blank lines skipped).
fn env_file(rel: &str) -> BTreeMap<String, String> {
    read(rel)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{rel}: {l:?}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The generated ConfigMaps by name, with their data.
fn config_maps() -> BTreeMap<String, BTreeMap<String, String>> {
    let k = kustomization();
    let mut out = BTreeMap::new();
    for g in k["configMapGenerator"].as_sequence().into_iter().flatten() {
        let mut data = BTreeMap::new();
        for f in g["envs"].as_sequence().into_iter().flatten() {
            data.extend(env_file(f.as_str().unwrap()));
        }
        out.insert(g["name"].as_str().unwrap().to_owned(), data);
    }
    out
}

fn clap_of(bin: &str) -> clap::Command {
    match bin {
        "ingest" => ingest::Config::command(),
        "analyzer" => analyzer::service::Config::command(),
        "warmer" => warmer::Config::command(),
        other => panic!("a Deployment runs {other:?}, which is not a service binary"),
    }
}

/// A Deployment's single container: the binary it runs, the environment it gets, and the
/// flags that amount to, parsed by the binary's clap definition (a bad name or value fails).
struct Pod {
    name: String,
    bin: String,
    container: Value,
    template: Value,
    matches: clap::ArgMatches,
}

fn pods() -> Vec<Pod> {
    let maps = config_maps();
    let mut out = Vec::new();
    for d in resources().into_iter().filter(|r| r["kind"] == "Deployment") {
        let name = d["metadata"]["name"].as_str().unwrap().to_owned();
        let containers = d["spec"]["template"]["spec"]["containers"].as_sequence().unwrap();
        assert_eq!(containers.len(), 1, "{name}: one container");
        let c = containers[0].clone();
        assert_eq!(c["image"], "smart-prefetch", "{name}: the image the kustomization sets");
        let bin = c["command"][0].as_str().expect("command").to_owned();
        let cmd = clap_of(&bin);
        let mut env: Vec<(String, String)> = Vec::new();
        for from in c["envFrom"].as_sequence().into_iter().flatten() {
            let map = from["configMapRef"]["name"].as_str().expect("configMapRef");
            let data =
                maps.get(map).unwrap_or_else(|| panic!("{name}: no generated ConfigMap {map}"));
            env.extend(data.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        for e in c["env"].as_sequence().into_iter().flatten() {
            let var = e["name"].as_str().unwrap().to_owned();
            // Values from the pod or a Secret are only known in the cluster.
            let value =
                e["value"].as_str().map_or_else(|| "from-the-cluster".to_owned(), str::to_owned);
            env.push((var, value));
        }
        let mut argv = vec![bin.clone()];
        for (var, value) in &env {
            for l in ["127.0.0.1", "localhost", "[::1]"] {
                assert!(!value.contains(l), "{name}: {var}={value} is the pod itself");
            }
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == var.as_str()))
                .unwrap_or_else(|| panic!("{name}: {var} is read by no flag of {bin}"));
            argv.push(format!("--{}={value}", arg.get_long().expect("env flags are long flags")));
        }
        let matches = cmd
            .try_get_matches_from(&argv)
            .unwrap_or_else(|e| panic!("{name}: `{}` does not parse:\n{e}", argv.join(" ")));
        out.push(Pod { name, bin, container: c, template: d["spec"]["template"].clone(), matches });
    }
    out
}

fn listen_port(p: &Pod) -> u16 {
    let l = p.matches.get_raw("listen").unwrap().next().unwrap().to_string_lossy().into_owned();
    l.rsplit(':').next().unwrap().parse().unwrap()
}

/// The container port a probe or Service names (by name or number).
fn container_port(p: &Pod, port: &Value) -> u16 {
    match port {
        Value::Number(n) => n.as_u64().unwrap() as u16,
        Value::String(name) => p.container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|cp| cp["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{}: no container port named {name}", p.name))
            ["containerPort"]
            .as_u64()
            .unwrap() as u16,
        other => panic!("{}: port {other:?}", p.name),
    }
}

#[test]
fn every_variable_exists_and_parses_and_every_service_runs() {
    let pods = pods();
    let bins: BTreeSet<&str> = pods.iter().map(|p| p.bin.as_str()).collect();
    assert_eq!(bins, BTreeSet::from(["analyzer", "ingest", "warmer"]), "one Deployment each");
    for p in &pods {
        let brokers = p.matches.get_raw("brokers").unwrap().next().unwrap();
        assert!(!brokers.is_empty(), "{}: PREFETCH_KAFKA_BROKERS", p.name);
    }
}

#[test]
fn ports_probes_and_scrape_annotations_use_the_listen_port() {
    for p in pods() {
        let port = listen_port(&p);
        let declared: Vec<u16> = p.container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|cp| cp["containerPort"].as_u64().unwrap() as u16)
            .collect();
        assert_eq!(declared, vec![port], "{}: the container port is where it listens", p.name);
        for (probe, path) in [
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ] {
            let get = &p.container[probe]["httpGet"];
            assert_eq!(get["path"].as_str(), Some(path), "{}: {probe}", p.name);
            assert_eq!(container_port(&p, &get["port"]), port, "{}: {probe} port", p.name);
        }
        let ann = &p.template["metadata"]["annotations"];
        assert_eq!(ann["prometheus.io/scrape"], "true", "{}: scraped", p.name);
        assert_eq!(
            ann["prometheus.io/port"].as_str(),
            Some(port.to_string().as_str()),
            "{}",
            p.name
        );
        assert_eq!(ann["prometheus.io/path"], "/metrics", "{}", p.name);
        let res = &p.container["resources"];
        for (kind, what) in [("requests", "cpu"), ("requests", "memory"), ("limits", "memory")] {
            assert!(res[kind][what].is_string(), "{}: resources.{kind}.{what}", p.name);
        }
    }
}

#[test]
fn services_select_their_pods_and_ingest_reaches_the_warmer_through_one() {
    let pods = pods();
    let services: Vec<Value> = resources().into_iter().filter(|r| r["kind"] == "Service").collect();
    let mut by_name = BTreeMap::new();
    for s in &services {
        let name = s["metadata"]["name"].as_str().unwrap();
        let selector = s["spec"]["selector"].as_mapping().expect("selector");
        let selected: Vec<&Pod> = pods
            .iter()
            .filter(|p| {
                selector.iter().all(|(k, v)| p.template["metadata"]["labels"].get(k) == Some(v))
            })
            .collect();
        assert_eq!(selected.len(), 1, "Service {name} selects one Deployment's pods");
        let pod = selected[0];
        for sp in s["spec"]["ports"].as_sequence().unwrap() {
            assert_eq!(
                container_port(pod, &sp["targetPort"]),
                listen_port(pod),
                "Service {name} targets where {} listens",
                pod.name
            );
            by_name.insert(name.to_owned(), (pod.bin.clone(), sp["port"].as_u64().unwrap()));
        }
    }
    assert_eq!(by_name.get("ingest").map(|s| s.0.as_str()), Some("ingest"), "an ingest Service");
    assert_eq!(by_name.get("warmer").map(|s| s.0.as_str()), Some("warmer"), "a warmer Service");
    let ingest = pods.iter().find(|p| p.bin == "ingest").unwrap();
    let url = ingest
        .matches
        .get_raw("warmer_url")
        .unwrap()
        .next()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(url, format!("http://warmer:{}", by_name["warmer"].1), "ingest's warmer URL");
    // Every Deployment's selector matches its own pods.
    for d in resources().into_iter().filter(|r| r["kind"] == "Deployment") {
        for (k, v) in d["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
            assert_eq!(d["spec"]["template"]["metadata"]["labels"].get(k), Some(v));
        }
    }
}

#[test]
fn the_kafka_client_properties_secret_is_mounted_in_every_pod() {
    let k = kustomization();
    let secret = k["secretGenerator"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "smart-prefetch-kafka")
        .expect("a generated Secret with the Kafka client properties");
    for f in secret["files"].as_sequence().unwrap() {
        let src = f.as_str().unwrap().split_once('=').map_or(f.as_str().unwrap(), |(_, s)| s);
        read(src);
    }
    for p in pods() {
        let volumes = p.template["spec"]["volumes"].as_sequence().expect("volumes");
        let vol = volumes
            .iter()
            .find(|v| v["secret"]["secretName"] == "smart-prefetch-kafka")
            .unwrap_or_else(|| panic!("{}: the Kafka properties Secret is not a volume", p.name));
        let mounted = p.container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|m| m["name"] == vol["name"] && m["readOnly"] == true);
        assert!(mounted, "{}: the Kafka properties Secret is not mounted read-only", p.name);
    }
}
