//! Checks of the operations artefacts: `k8s/`, the Dockerfile, `compose.yaml` and the alert and
//! dashboard queries (issue 6, DESIGN §5.4 and §8 "Kubernetes notes").
//!
//! External tools (installed by `bash scripts/ci-tools.sh`): `kubernetes-validate` (offline
//! Kubernetes schemas), `kubectl kustomize`, `promtool check rules|test rules|check metrics`,
//! `hadolint`, `yamllint`. When one is missing a test FAILS if `CI` is set and otherwise prints a
//! skip line and returns, so a developer without the tools still gets the pure-Rust checks.
//!
//! CRD kinds (PodMonitor, PrometheusRule, ScaledObject, TriggerAuthentication) have no offline schema
//! here, so `crd_resources_have_the_shape_their_operators_expect` checks their structure and their
//! cross-references (selectors, ports, queue name, secret keys) itself; an unknown CRD kind fails
//! that test until someone writes its check.
//!
//! Gated on the default `sim` feature because it parses YAML with `serde_yaml` (an optional
//! dependency that feature enables); CI runs `cargo test` with default features.
#![cfg(feature = "sim")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

#[path = "ops_manifests/promql.rs"]
mod promql;
#[path = "ops_manifests/support.rs"]
mod support;

use promql::{metric_names, template_query_metrics};
use support::*;

/// Metrics from outside ccsync that the alerts and the dashboard may use: RabbitMQ's own
/// Prometheus plugin (per-queue metrics) and Prometheus' `up`.
const EXTERNAL_METRICS: &[&str] = &[
    "rabbitmq_queue_messages",
    "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages_unacked",
    "up",
];

/// The names the worker's registry exports, read from its own exposition (with every labelled
/// family touched once so it appears), histogram series suffixes included.
fn exported_metric_names() -> BTreeSet<String> {
    let text = registry_exposition();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            names.insert(name.to_string());
            if kind == "histogram" || kind == "summary" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    assert!(
        names.len() > 15,
        "the registry exported suspiciously few metrics: {names:?}"
    );
    names
}

/// The registry's text, after creating one child of every labelled family (a family with no
/// children is not exposed at all). Values stay 0: nothing is counted.
fn registry_exposition() -> String {
    let m = ccsync::telemetry::Metrics::isolated();
    m.expose_every_family();
    m.render()
}

/// The rules of the PrometheusRule as a plain Prometheus rules file, plus the names it records.
fn prometheus_rules() -> (Value, BTreeSet<String>) {
    let docs = manifests();
    let rule = one(&docs, "PrometheusRule", "ccsync");
    let groups = get(rule, "spec.groups").clone();
    let mut recorded = BTreeSet::new();
    for g in groups.as_sequence().expect("groups is a list") {
        for r in get(g, "rules").as_sequence().expect("rules is a list") {
            if let Some(name) = opt(r, "record").and_then(Value::as_str) {
                recorded.insert(name.to_string());
            }
        }
    }
    let mut file = serde_yaml::Mapping::new();
    file.insert("groups".into(), groups);
    (Value::Mapping(file), recorded)
}

fn rule_exprs() -> Vec<(String, String)> {
    let (file, _) = prometheus_rules();
    let mut out = Vec::new();
    for g in get(&file, "groups").as_sequence().unwrap() {
        for r in get(g, "rules").as_sequence().unwrap() {
            let name = opt(r, "alert")
                .or_else(|| opt(r, "record"))
                .and_then(Value::as_str)
                .expect("a rule is an alert or a record")
                .to_string();
            out.push((name, s(r, "expr").to_string()));
        }
    }
    out
}

fn dashboard() -> serde_json::Value {
    let raw = read("k8s/base/dashboards/ccsync.json");
    serde_json::from_str(&raw).unwrap_or_else(|e| panic!("dashboard JSON does not parse: {e}"))
}

/// `(where, PromQL)` for every query of the dashboard, nested rows and templating included.
fn dashboard_queries(d: &serde_json::Value) -> Vec<(String, String, bool)> {
    fn panels(list: &serde_json::Value, out: &mut Vec<(String, String, bool)>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {title:?} has a target without expr"));
                out.push((format!("panel {title:?}"), expr.to_string(), false));
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&d["panels"], &mut out);
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .expect("query variable has a query");
            out.push((format!("variable {}", v["name"]), q.to_string(), true));
        }
    }
    out
}

/// GitHub's anchor for a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn operations_anchors() -> BTreeSet<String> {
    read("docs/operations.md")
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Kubernetes: offline schemas and rendering
// ---------------------------------------------------------------------------------------------

/// Validate core-kind documents with `kubernetes-validate --strict` against one Kubernetes
/// version; every document must be found and pass.
fn validate_core(docs: &[Value], label: &str, version: Option<&str>) {
    let Some(tool) = require("kubernetes-validate") else {
        return;
    };
    let core: Vec<&Value> = docs.iter().filter(|d| !is_crd(d)).collect();
    assert!(!core.is_empty(), "{label}: no core documents");
    let dir = scratch("kv");
    let file = dir.join("manifests.yaml");
    let body: Vec<String> = core
        .iter()
        .map(|d| serde_yaml::to_string(d).expect("serialize"))
        .collect();
    std::fs::write(&file, body.join("---\n")).unwrap();
    let mut cmd = Command::new(tool);
    cmd.arg("--strict");
    if let Some(v) = version {
        cmd.args(["-k", v]);
    }
    let out = run(cmd.arg(&file));
    let said = text(&out);
    assert!(
        out.status.success(),
        "{label}: kubernetes-validate --strict failed:\n{said}"
    );
    assert!(
        !said.contains("Couldn't find schema"),
        "{label}: a core kind has no schema (wrong apiVersion?):\n{said}"
    );
    let passed = said.matches("passed for resource").count();
    assert_eq!(
        passed,
        core.len(),
        "{label}: {} documents, {passed} passed:\n{said}",
        core.len()
    );
}

#[test]
fn every_core_manifest_validates_offline_with_kubernetes_validate() {
    let docs: Vec<Value> = manifests().into_iter().map(|(_, d)| d).collect();
    // The newest schemas the tool bundles, and an older release still widely run.
    validate_core(&docs, "k8s/ files", None);
    validate_core(&docs, "k8s/ files", Some("1.29.0"));
}

#[test]
fn rendered_base_and_overlay_validate_offline() {
    for dir in ["k8s/base", "k8s/overlays/example"] {
        if let Some(docs) = kustomize(dir) {
            validate_core(&docs, dir, None);
        }
    }
}

#[test]
fn kustomize_renders_base_and_example_overlay() {
    let Some(base) = kustomize("k8s/base") else {
        return;
    };
    let kinds = |docs: &[Value]| -> BTreeSet<String> {
        docs.iter().map(|d| kind_of(d).to_string()).collect()
    };
    for k in [
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "PodMonitor",
        "PrometheusRule",
        "ScaledObject",
        "TriggerAuthentication",
    ] {
        assert!(kinds(&base).contains(k), "base renders no {k}");
    }
    assert!(
        !kinds(&base).contains("Secret"),
        "the base must not ship a Secret (operators bring their own)"
    );

    // One source for the dashboard: the generated ConfigMap carries the JSON file byte for byte,
    // with the label Grafana's sidecar looks for.
    let dash = base
        .iter()
        .find(|d| kind_of(d) == "ConfigMap" && s(d, "metadata.name") == "ccsync-dashboard")
        .expect("dashboard ConfigMap rendered");
    assert_eq!(s(dash, "metadata.labels.grafana_dashboard"), "1");
    let embedded = get(dash, "data")
        .get("ccsync.json")
        .and_then(Value::as_str)
        .expect("data.ccsync.json");
    assert_eq!(embedded, read("k8s/base/dashboards/ccsync.json"));

    let Some(example) = kustomize("k8s/overlays/example") else {
        return;
    };
    assert!(kinds(&example).contains("Namespace"));
    assert!(kinds(&example).contains("Secret"));
    for d in &example {
        if kind_of(d) != "Namespace" {
            assert_eq!(
                opt(d, "metadata.namespace").and_then(Value::as_str),
                Some("ccsync"),
                "{} is not placed in the overlay's namespace",
                brief(d)
            );
        }
    }
    for deploy in example.iter().filter(|d| kind_of(d) == "Deployment") {
        assert_eq!(
            s(deploy, "spec.template.spec.containers.0.image"),
            "registry.example.com/ccsync:0.1.0",
            "the overlay's image is applied to {}",
            s(deploy, "metadata.name")
        );
    }
    let deploy = example
        .iter()
        .find(|d| kind_of(d) == "Deployment" && s(d, "metadata.name") == "ccsync")
        .unwrap();
    assert_eq!(
        s(deploy, "spec.template.spec.containers.0.image"),
        "registry.example.com/ccsync:0.1.0",
        "the overlay's image is applied"
    );
    // The overlay's NetworkPolicy lets the pods reach the broker and Redis where the example
    // Secret's URLs put them (`<service>.<namespace>.svc`).
    let secret = example
        .iter()
        .find(|d| kind_of(d) == "Secret" && s(d, "metadata.name") == "ccsync-secrets")
        .unwrap();
    let np = example
        .iter()
        .find(|d| kind_of(d) == "NetworkPolicy" && s(d, "metadata.name") == "ccsync")
        .unwrap();
    for (key, port) in [("CCSYNC_AMQP_URL", 5671), ("CCSYNC_REDIS_URL", 6379)] {
        let url = url::Url::parse(s(get(secret, "stringData"), key)).expect("example URL");
        let host = url.host_str().unwrap();
        let ns = host.split('.').nth(1).expect("<service>.<namespace>.svc");
        let allowed = get(np, "spec.egress")
            .as_sequence()
            .unwrap()
            .iter()
            .any(|r| {
                let ports_match = get(r, "ports")
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|p| n(p, "port") == port);
                let ns_match = get(r, "to").as_sequence().unwrap().iter().any(|t| {
                    opt(t, "namespaceSelector.matchLabels")
                        .and_then(|m| m.get("kubernetes.io/metadata.name"))
                        .and_then(Value::as_str)
                        == Some(ns)
                });
                ports_match && ns_match
            });
        assert!(
            allowed,
            "no egress to namespace {ns} on port {port} for {key}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes: the worker's contract, in the manifests
// ---------------------------------------------------------------------------------------------

#[test]
fn deployment_matches_the_worker_contract() {
    let docs = manifests();
    let settings = effective_settings();
    let d = one(&docs, "Deployment", "ccsync");
    let pod = get(d, "spec.template.spec");
    let c = get(pod, "containers.0");

    // Shutdown: the kubelet must not SIGKILL a worker that keeps worker.shutdown_deadline_secs;
    // leave at least 10 s for the process to exit after the deadline.
    let grace = n(pod, "terminationGracePeriodSeconds");
    let deadline = settings.worker.shutdown_deadline.as_secs() as i64;
    assert!(
        grace >= deadline + 10,
        "terminationGracePeriodSeconds {grace} must exceed shutdown_deadline_secs {deadline} by >= 10 s"
    );

    // Probes and the metrics port agree with CCSYNC_METRICS_ADDR.
    let port = get(c, "ports")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| s(p, "name") == "metrics")
        .expect("a port named metrics");
    assert_eq!(
        n(port, "containerPort"),
        i64::from(settings.metrics_addr.port()),
        "containerPort must be CCSYNC_METRICS_ADDR's port"
    );
    assert_eq!(s(c, "livenessProbe.httpGet.path"), "/healthz");
    assert_eq!(s(c, "livenessProbe.httpGet.port"), "metrics");
    assert_eq!(s(c, "readinessProbe.httpGet.path"), "/readyz");
    assert_eq!(s(c, "readinessProbe.httpGet.port"), "metrics");
    assert_eq!(s(c, "args.0"), "worker");

    // Hardening.
    assert_eq!(get(pod, "securityContext.runAsNonRoot"), &Value::Bool(true));
    assert_eq!(n(pod, "securityContext.runAsUser"), 10001);
    assert_eq!(
        s(pod, "securityContext.seccompProfile.type"),
        "RuntimeDefault"
    );
    assert_eq!(
        get(pod, "automountServiceAccountToken"),
        &Value::Bool(false)
    );
    assert_eq!(
        get(c, "securityContext.readOnlyRootFilesystem"),
        &Value::Bool(true)
    );
    assert_eq!(
        get(c, "securityContext.allowPrivilegeEscalation"),
        &Value::Bool(false)
    );
    assert_eq!(s(c, "securityContext.capabilities.drop.0"), "ALL");
    let sa = one(&docs, "ServiceAccount", s(pod, "serviceAccountName"));
    assert_eq!(get(sa, "automountServiceAccountToken"), &Value::Bool(false));

    // Resources: requests and a memory limit with headroom over the 150 MB target.
    assert_eq!(s(c, "resources.requests.cpu"), "100m");
    let limit = s(c, "resources.limits.memory");
    let mib: u64 = limit
        .strip_suffix("Mi")
        .and_then(|x| x.parse().ok())
        .expect("memory limit in Mi");
    assert!(
        mib >= 256,
        "memory limit {limit} leaves no headroom over 150 MB"
    );

    // Configuration and secrets by name, as DESIGN §5.3 puts them.
    let from: Vec<(&str, &str)> = get(c, "envFrom")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            if let Some(cm) = opt(e, "configMapRef.name") {
                ("ConfigMap", cm.as_str().unwrap())
            } else {
                ("Secret", s(e, "secretRef.name"))
            }
        })
        .collect();
    assert_eq!(
        from,
        vec![("ConfigMap", "ccsync-config"), ("Secret", "ccsync-secrets")]
    );

    // Replicas, autoscaling and the disruption budget fit together.
    let so = one(&docs, "ScaledObject", "ccsync");
    let (min, max) = (n(so, "spec.minReplicaCount"), n(so, "spec.maxReplicaCount"));
    assert!(
        min >= 1,
        "never scale to zero: keep-alive and metrics need a pod"
    );
    assert_eq!(
        n(d, "spec.replicas"),
        min,
        "Deployment replicas = KEDA's floor"
    );
    assert!(
        max <= i64::from(settings.ratelimit.expected_replicas),
        "maxReplicaCount {max} exceeds ratelimit.expected_replicas {}: the Redis-down fallback \
         split would overrun CC's limits",
        settings.ratelimit.expected_replicas
    );
    let pdb = one(&docs, "PodDisruptionBudget", "ccsync");
    assert!(
        n(pdb, "spec.minAvailable") < min,
        "a PDB minAvailable >= the replica floor blocks node drains"
    );
    assert_eq!(
        get(pdb, "spec.selector.matchLabels"),
        get(d, "spec.selector.matchLabels")
    );
    assert_eq!(
        n(d, "spec.strategy.rollingUpdate.maxSurge"),
        0,
        "a surge pod would exceed maxReplicaCount"
    );
}

#[test]
fn configmap_and_secret_name_only_real_configuration_keys() {
    // A misspelt CCSYNC_ name is silently ignored by the worker; catch it here.
    let defaults: serde_json::Value = {
        use figment::providers::Format as _;
        figment::Figment::from(figment::providers::Toml::string(
            ccsync::config::DEFAULT_TOML,
        ))
    }
    .extract()
    .expect("default.toml parses");
    let docs = manifests();
    let cm = string_map(get(one(&docs, "ConfigMap", "ccsync-config"), "data"));
    let secret = string_map(get(one(&docs, "Secret", "ccsync-secrets"), "stringData"));
    for key in cm.keys().chain(secret.keys()) {
        if key == "RUST_LOG" {
            continue;
        }
        let path = key
            .strip_prefix("CCSYNC_")
            .unwrap_or_else(|| panic!("{key}: not a ccsync setting"))
            .to_ascii_lowercase();
        let mut cur = &defaults;
        for part in path.split("__") {
            cur = cur
                .get(part)
                .unwrap_or_else(|| panic!("{key} names no key of config/default.toml"));
        }
    }
    // DESIGN §5.3: these are secrets and must not sit in the ConfigMap.
    let secret_keys: BTreeSet<&str> = [
        "CCSYNC_AMQP_URL",
        "CCSYNC_REDIS_URL",
        "CCSYNC_CLIENT_ID",
        "CCSYNC_CLIENT_SECRET",
        "CCSYNC_TOKEN_ENCRYPTION_KEY",
    ]
    .into();
    assert_eq!(
        secret.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        secret_keys
    );
    for k in &secret_keys {
        assert!(!cm.contains_key(*k), "{k} belongs in the Secret");
    }
    // The effective config loads (with a well-formed key) and says what the manifests assume.
    let settings = effective_settings();
    assert_eq!(settings.queue, cm["CCSYNC_QUEUE"]);
    assert_eq!(settings.default_list_ids, Vec::<uuid::Uuid>::new());
}

#[test]
fn example_secret_holds_placeholders_that_stop_the_worker() {
    let docs = manifests();
    let secret = one(&docs, "Secret", "ccsync-secrets");
    let file = read("k8s/overlays/example/secret.example.yaml");
    assert!(file.contains("EXAMPLE ONLY"), "the example must say so");
    let data = string_map(get(secret, "stringData"));
    for (k, v) in &data {
        assert!(v.contains("REPLACE_ME"), "{k} is not a placeholder: {v}");
    }
    // Deployed unchanged, the worker refuses to start and names the key to fix.
    let cm = string_map(get(one(&docs, "ConfigMap", "ccsync-config"), "data"));
    let pairs = cm
        .iter()
        .chain(data.iter())
        .filter(|(k, _)| k.starts_with("CCSYNC_"))
        .map(|(k, v)| (k.as_str(), v.as_str()));
    let Err(err) = ccsync::config::Settings::from_pairs(pairs) else {
        panic!("the placeholder Secret must not load");
    };
    assert!(
        err.to_string().contains("CCSYNC_TOKEN_ENCRYPTION_KEY"),
        "{err}"
    );
}

#[test]
fn crd_resources_have_the_shape_their_operators_expect() {
    let docs = manifests();
    let deploy = one(&docs, "Deployment", "ccsync");
    let pod_labels = get(deploy, "spec.template.metadata.labels")
        .as_mapping()
        .unwrap()
        .clone();
    let cm = string_map(get(one(&docs, "ConfigMap", "ccsync-config"), "data"));
    let secret = string_map(get(one(&docs, "Secret", "ccsync-secrets"), "stringData"));
    let anchors = operations_anchors();
    let mut seen = BTreeSet::new();

    for (file, d) in docs.iter().filter(|(_, d)| is_crd(d)) {
        let what = format!("{file}: {}", brief(d));
        assert!(opt(d, "metadata.name").is_some(), "{what}: no name");
        seen.insert(kind_of(d).to_string());
        match (s(d, "apiVersion"), kind_of(d)) {
            ("monitoring.coreos.com/v1", "PodMonitor") => {
                // The worker's pods, or those of another Deployment of ours (ingest).
                let selector = get(d, "spec.selector.matchLabels").as_mapping().unwrap();
                let matches = |labels: &serde_yaml::Mapping| {
                    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                };
                let target = docs
                    .iter()
                    .filter(|(_, x)| kind_of(x) == "Deployment")
                    .map(|(_, x)| x)
                    .find(|x| {
                        matches(
                            get(x, "spec.template.metadata.labels")
                                .as_mapping()
                                .unwrap(),
                        )
                    });
                let Some(target) = target else {
                    panic!("{what}: selector matches the pods of no Deployment")
                };
                if s(target, "metadata.name") == s(deploy, "metadata.name") {
                    assert!(matches(&pod_labels));
                }
                let port_names: BTreeSet<String> =
                    get(target, "spec.template.spec.containers.0.ports")
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .map(|p| s(p, "name").to_string())
                        .collect();
                let eps = get(d, "spec.podMetricsEndpoints").as_sequence().unwrap();
                assert!(!eps.is_empty(), "{what}: no endpoints");
                for ep in eps {
                    assert!(
                        port_names.contains(s(ep, "port")),
                        "{what}: port {} is not a container port name",
                        s(ep, "port")
                    );
                    assert_eq!(s(ep, "path"), "/metrics");
                }
            }
            ("monitoring.coreos.com/v1", "PrometheusRule") => {
                let groups = get(d, "spec.groups").as_sequence().unwrap();
                assert!(!groups.is_empty(), "{what}: no groups");
                for g in groups {
                    assert!(!s(g, "name").is_empty());
                    for r in get(g, "rules").as_sequence().unwrap() {
                        assert!(!s(r, "expr").trim().is_empty());
                        if let Some(alert) = opt(r, "alert").and_then(Value::as_str) {
                            let sev = s(r, "labels.severity");
                            assert!(
                                ["critical", "warning", "info"].contains(&sev),
                                "{alert}: severity {sev}"
                            );
                            assert!(!s(r, "annotations.summary").is_empty(), "{alert}: summary");
                            let url = s(r, "annotations.runbook_url");
                            let frag = url
                                .strip_prefix("docs/operations.md#")
                                .unwrap_or_else(|| panic!("{alert}: runbook_url {url}"));
                            assert!(
                                anchors.contains(frag),
                                "{alert}: docs/operations.md has no heading #{frag}"
                            );
                        } else {
                            assert!(
                                opt(r, "record").is_some(),
                                "{what}: rule without alert/record"
                            );
                        }
                    }
                }
            }
            ("keda.sh/v1alpha1", "ScaledObject") => {
                assert_eq!(s(d, "spec.scaleTargetRef.kind"), "Deployment");
                assert_eq!(s(d, "spec.scaleTargetRef.name"), s(deploy, "metadata.name"));
                let (min, max) = (n(d, "spec.minReplicaCount"), n(d, "spec.maxReplicaCount"));
                assert!(1 <= min && min <= max, "{what}: replicas {min}..{max}");
                let triggers = get(d, "spec.triggers").as_sequence().unwrap();
                assert_eq!(triggers.len(), 1);
                let t = &triggers[0];
                assert_eq!(s(t, "type"), "rabbitmq");
                assert_eq!(s(t, "metadata.queueName"), cm["CCSYNC_QUEUE"]);
                assert!(["amqp", "http"].contains(&s(t, "metadata.protocol")));
                assert!(["QueueLength", "MessageRate"].contains(&s(t, "metadata.mode")));
                assert!(
                    s(t, "metadata.value").parse::<f64>().is_ok_and(|v| v > 0.0),
                    "KEDA wants the target as a string number"
                );
                let auth = s(t, "authenticationRef.name");
                one(&docs, "TriggerAuthentication", auth);
            }
            ("keda.sh/v1alpha1", "TriggerAuthentication") => {
                let refs = get(d, "spec.secretTargetRef").as_sequence().unwrap();
                let host = refs
                    .iter()
                    .find(|r| s(r, "parameter") == "host")
                    .expect("the rabbitmq scaler needs `host`");
                assert_eq!(s(host, "name"), "ccsync-secrets");
                assert!(
                    secret.contains_key(s(host, "key")),
                    "{what}: the Secret has no key {}",
                    s(host, "key")
                );
            }
            (api, kind) => panic!("{what}: no structural check for {api} {kind}; write one"),
        }
    }
    assert_eq!(
        seen,
        [
            "PodMonitor",
            "PrometheusRule",
            "ScaledObject",
            "TriggerAuthentication"
        ]
        .map(String::from)
        .into()
    );
}

#[test]
fn network_policy_allows_only_broker_redis_https_dns_and_scrapes() {
    let docs = manifests();
    let np = one(&docs, "NetworkPolicy", "ccsync");
    let ports = |rules: &Value| -> BTreeSet<(String, i64)> {
        rules
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|r| get(r, "ports").as_sequence().unwrap().clone())
            .map(|p| (s(&p, "protocol").to_string(), n(&p, "port")))
            .collect()
    };
    let tcp = |p: i64| ("TCP".to_string(), p);
    assert_eq!(
        ports(get(np, "spec.egress")),
        [
            tcp(5672),
            tcp(5671),
            tcp(6379),
            tcp(443),
            tcp(53),
            ("UDP".into(), 53)
        ]
        .into()
    );
    assert_eq!(ports(get(np, "spec.ingress")), [tcp(9464)].into());
    // Broker and Redis by pod label, not by address.
    for (i, rule) in get(np, "spec.egress")
        .as_sequence()
        .unwrap()
        .iter()
        .enumerate()
    {
        let to = get(rule, "to.0");
        let allows_443 = ports(&Value::Sequence(vec![rule.clone()])).contains(&tcp(443));
        assert_eq!(
            opt(to, "ipBlock").is_some(),
            allows_443,
            "egress rule {i}: only CC's HTTPS rule may use an ipBlock"
        );
    }
    let policy_types: Vec<&str> = get(np, "spec.policyTypes")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(policy_types, ["Ingress", "Egress"]);
}

#[test]
fn auth_login_job_uses_the_workers_config_and_image() {
    let docs = manifests();
    let job = one(&docs, "Job", "ccsync-auth-login");
    let c = get(job, "spec.template.spec.containers.0");
    let args: Vec<&str> = get(c, "args")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(&args[..2], ["auth", "login"]);
    // The args parse with the real command line.
    use clap::Parser as _;
    let cli = ccsync::cli::Cli::try_parse_from(std::iter::once("ccsync").chain(args.clone()))
        .unwrap_or_else(|e| panic!("the Job's args do not parse: {e}"));
    assert!(matches!(
        cli.command,
        ccsync::cli::Command::Auth(ccsync::cli::AuthCommand::Login(_))
    ));
    let deploy = one(&docs, "Deployment", "ccsync");
    assert_eq!(
        get(c, "envFrom"),
        get(deploy, "spec.template.spec.containers.0.envFrom")
    );
    assert_eq!(
        n(job, "spec.backoffLimit"),
        0,
        "a retry prints a code nobody watches"
    );
    // The Job's image is the one the example overlay deploys.
    let kust = docs_of(&read("k8s/overlays/example/kustomization.yaml"), "overlay");
    let img = get(&kust[0], "images.0");
    assert_eq!(
        s(c, "image"),
        format!("{}:{}", s(img, "newName"), s(img, "newTag"))
    );
    // Not a worker: the Deployment, PDB and PodMonitor must not select it.
    let component = get(job, "spec.template.metadata.labels")
        .get("app.kubernetes.io/component")
        .and_then(Value::as_str);
    assert_eq!(component, Some("auth-login"));
}

// ---------------------------------------------------------------------------------------------
// Alerts, dashboard and the metrics registry
// ---------------------------------------------------------------------------------------------

/// Write the PrometheusRule's groups as a plain rules file in `dir`.
fn write_rules(dir: &Path) -> PathBuf {
    let (file, _) = prometheus_rules();
    let path = dir.join("ccsync.rules.yaml");
    std::fs::write(&path, serde_yaml::to_string(&file).unwrap()).unwrap();
    path
}

#[test]
fn alert_rules_pass_promtool_check_rules() {
    let Some(promtool) = require("promtool") else {
        return;
    };
    let dir = scratch("rules");
    let rules = write_rules(&dir);
    let out = run(Command::new(promtool).arg("check").arg("rules").arg(&rules));
    assert!(
        out.status.success(),
        "promtool check rules:\n{}",
        text(&out)
    );
    let alerts = rule_exprs().len();
    assert!(
        text(&out).contains(&format!("SUCCESS: {alerts} rules found")),
        "{}",
        text(&out)
    );
}

#[test]
fn alerts_fire_when_they_should_and_stay_quiet_otherwise() {
    // Unit tests of the alert expressions on synthetic series (tests/fixtures/ops/alerts_test.yaml):
    // each alert fires on the situation it names and not on a healthy or paused neighbour.
    let Some(promtool) = require("promtool") else {
        return;
    };
    let dir = scratch("rules-test");
    write_rules(&dir);
    let test_file = dir.join("alerts_test.yaml");
    std::fs::copy(
        root().join("tests/fixtures/ops/alerts_test.yaml"),
        &test_file,
    )
    .unwrap();
    let out = run(Command::new(promtool)
        .arg("test")
        .arg("rules")
        .arg(&test_file));
    assert!(out.status.success(), "promtool test rules:\n{}", text(&out));
    // Every alert has at least one test case that expects it to fire.
    let tests = read("tests/fixtures/ops/alerts_test.yaml");
    let (file, _) = prometheus_rules();
    for g in get(&file, "groups").as_sequence().unwrap() {
        for r in get(g, "rules").as_sequence().unwrap() {
            if let Some(a) = opt(r, "alert").and_then(Value::as_str) {
                assert!(
                    tests.contains(&format!("alertname: {a}")),
                    "no promtool test for {a}"
                );
            }
        }
    }
}

#[test]
fn alert_expressions_name_only_exported_metrics() {
    let exported = exported_metric_names();
    let (_, recorded) = prometheus_rules();
    for (rule, expr) in rule_exprs() {
        let names = metric_names(&expr);
        if !expr.contains("vector(") {
            assert!(!names.is_empty(), "{rule}: found no metric in {expr:?}");
        }
        for m in names {
            assert!(
                exported.contains(&m)
                    || recorded.contains(&m)
                    || EXTERNAL_METRICS.contains(&m.as_str()),
                "{rule}: {m} is not exported by the worker (nor recorded, nor allow-listed)"
            );
        }
    }
    // The daily-quota constant agrees with the effective configuration.
    let (file, _) = prometheus_rules();
    let constant = get(&file, "groups")
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| get(g, "rules").as_sequence().unwrap().clone())
        .find(|r| opt(r, "record").and_then(Value::as_str) == Some("ccsync:daily_quota:configured"))
        .expect("the quota recording rule");
    assert_eq!(
        s(&constant, "expr"),
        format!("vector({})", effective_settings().ratelimit.daily_quota)
    );
}

#[test]
fn dashboard_queries_name_only_exported_metrics() {
    let d = dashboard();
    let exported = exported_metric_names();
    let queries = dashboard_queries(&d);
    assert!(queries.len() >= 20, "only {} queries", queries.len());
    let mut used = BTreeSet::new();
    for (place, q, is_template) in &queries {
        let names = if *is_template {
            template_query_metrics(q)
        } else {
            metric_names(q)
        };
        assert!(!names.is_empty(), "{place}: no metric in {q:?}");
        for m in names {
            assert!(
                exported.contains(&m) || EXTERNAL_METRICS.contains(&m.as_str()),
                "{place}: {m} is not exported by the worker (nor allow-listed)"
            );
            used.insert(m);
        }
    }
    // The dashboard covers what operators look at (issue 6): throughput, quota, token health,
    // batch sizes, latencies, 429s, dead letters, pauses.
    for m in [
        "ccsync_messages_total",
        "ccsync_contacts_synced_total",
        "ccsync_daily_quota_remaining",
        "ccsync_daily_quota_projected",
        "ccsync_auth_state",
        "ccsync_access_token_expiry_timestamp_seconds",
        "ccsync_token_refresh_total",
        "ccsync_refresh_token_age_seconds",
        "ccsync_batch_size_bucket",
        "ccsync_api_request_duration_seconds_bucket",
        "ccsync_rate_limited_total",
        "ccsync_dead_letters_total",
        "ccsync_paused",
    ] {
        assert!(used.contains(m), "the dashboard shows nothing of {m}");
    }
    // Grafana basics: a stable uid, a datasource variable, unique panel ids.
    assert_eq!(d["uid"], "ccsync");
    let mut ids = BTreeSet::new();
    fn collect(list: &serde_json::Value, ids: &mut BTreeSet<i64>) {
        for p in list.as_array().into_iter().flatten() {
            let id = p["id"].as_i64().expect("panel id");
            assert!(ids.insert(id), "duplicate panel id {id}");
            collect(&p["panels"], ids);
        }
    }
    collect(&d["panels"], &mut ids);
}

#[test]
fn metrics_registry_passes_promtool_check_metrics() {
    let Some(promtool) = require("promtool") else {
        return;
    };
    let text_out = registry_exposition();
    let dir = scratch("metrics");
    let file = dir.join("metrics.txt");
    std::fs::write(&file, &text_out).unwrap();
    let out = run(Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap()));
    assert!(
        out.status.success(),
        "promtool check metrics (exit {:?}):\n{}",
        out.status.code(),
        text(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// Image and local stack
// ---------------------------------------------------------------------------------------------

#[test]
fn dockerfile_passes_hadolint() {
    let Some(hadolint) = require("hadolint") else {
        return;
    };
    // hadolint exits non-zero on warnings too: a clean file is the bar.
    let out = run(Command::new(hadolint).arg(root().join("Dockerfile")));
    assert!(out.status.success(), "hadolint Dockerfile:\n{}", text(&out));
}

#[test]
fn dockerfile_builds_the_worker_without_the_simulator() {
    let df = read("Dockerfile");
    let worker_stage = df
        .rsplit_once("\nFROM ")
        .map(|(_, last)| last)
        .expect("stages");
    assert!(
        worker_stage.starts_with("runtime AS worker"),
        "the last stage (the default target) must be the worker image, got: {}",
        worker_stage.lines().next().unwrap_or("")
    );
    assert!(worker_stage.contains("USER 10001"));
    assert!(worker_stage.contains("EXPOSE 9464"));
    assert!(worker_stage.contains(r#"ENTRYPOINT ["/usr/local/bin/ccsync"]"#));
    assert!(worker_stage.contains(r#"CMD ["worker"]"#));
    assert!(worker_stage.contains("--from=build-worker"));
    // The worker build leaves the simulator out and uses the lock file as is.
    let build_worker = df
        .split("\nFROM ")
        .find(|s| s.contains("AS build-worker"))
        .expect("a build-worker stage");
    for flag in ["--no-default-features", "--release", "--locked"] {
        assert!(build_worker.contains(flag), "build-worker lacks {flag}");
    }
    assert!(read(".dockerignore").lines().any(|l| l.trim() == "target"));
    // Cargo loads every workspace member's manifest even for `-p ccsync`: the dependency stage
    // must copy each one (and stub its sources), or the image build fails at once.
    let cargo = read("Cargo.toml");
    let members = cargo
        .lines()
        .find_map(|l| l.trim().strip_prefix("members = ["))
        .and_then(|l| l.strip_suffix(']'))
        .expect("Cargo.toml lists the workspace members on one line");
    let members: Vec<&str> = members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .collect();
    assert!(members.contains(&"kit"), "members parsed: {members:?}");
    for m in members.into_iter().filter(|m| *m != "." && !m.is_empty()) {
        assert!(
            df.contains(&format!("COPY {m}/Cargo.toml ./{m}/")),
            "the Dockerfile does not copy workspace member {m}'s Cargo.toml"
        );
        assert!(
            df.contains(&format!("{m}/src/lib.rs")),
            "the Dockerfile does not stub workspace member {m}'s sources"
        );
    }
}

#[test]
fn compose_runs_broker_redis_simulator_and_two_workers() {
    let mut compose = docs_of(&read("compose.yaml"), "compose.yaml").remove(0);
    // The file shares settings through YAML merge keys (`<<: *worker-env`).
    compose.apply_merge().expect("merge keys resolve");
    let services = get(&compose, "services").as_mapping().unwrap();
    let names: BTreeSet<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    for svc in ["rabbitmq", "redis", "sim", "worker-1", "worker-2"] {
        assert!(names.contains(svc), "compose has no {svc}");
        assert!(
            opt(&services[svc], "healthcheck.test").is_some(),
            "{svc} has no healthcheck"
        );
    }
    assert_eq!(s(&services["sim"], "build.target"), "sim");
    let redis_cmd = format!("{:?}", get(&services["redis"], "command"));
    assert!(redis_cmd.contains("appendonly"), "Redis without AOF");
    for w in ["worker-1", "worker-2"] {
        let svc = &services[w];
        assert_eq!(s(svc, "build.target"), "worker");
        let env = get(svc, "environment");
        let api = s(env, "CCSYNC_API_BASE_URL");
        assert!(
            api.starts_with("http://127.0.0.1:8089"),
            "{w} is not pointed at the simulator: {api}"
        );
        assert_eq!(s(env, "CCSYNC_QUEUE"), "ccsync.contacts");
    }
    // Two workers share the simulator's network namespace, so their metrics ports differ.
    assert_ne!(
        s(
            get(&services["worker-1"], "environment"),
            "CCSYNC_METRICS_ADDR"
        ),
        s(
            get(&services["worker-2"], "environment"),
            "CCSYNC_METRICS_ADDR"
        )
    );
}

#[test]
fn yaml_files_pass_yamllint() {
    let Some(yamllint) = require("yamllint") else {
        return;
    };
    let out = run(Command::new(yamllint)
        .arg("--strict")
        .arg("-c")
        .arg(root().join("tests/fixtures/ops/yamllint.yaml"))
        .arg(root().join("k8s"))
        .arg(root().join("compose.yaml"))
        .arg(root().join("tests/fixtures/ops/alerts_test.yaml")));
    assert!(out.status.success(), "yamllint:\n{}", text(&out));
}

// ---------------------------------------------------------------------------------------------
// Kubernetes: `ccsync ingest` (issue 16)
// ---------------------------------------------------------------------------------------------

#[test]
fn ingest_manifests_match_the_ingest_contract() {
    let docs = manifests();
    let settings = effective_settings();
    let d = one(&docs, "Deployment", "ccsync-ingest");
    let pod = get(d, "spec.template.spec");
    let c = get(pod, "containers.0");
    assert_eq!(
        get(c, "args").as_sequence().unwrap()[0].as_str(),
        Some("ingest")
    );
    let labels = get(d, "spec.template.metadata.labels")
        .as_mapping()
        .unwrap();
    assert_eq!(
        labels
            .get("app.kubernetes.io/component")
            .and_then(Value::as_str),
        Some("ingest")
    );
    // The worker's selector, PDB and PodMonitor do not pick ingest pods up (and the reverse).
    for (kind, name, path) in [
        ("Deployment", "ccsync", "spec.selector.matchLabels"),
        ("PodDisruptionBudget", "ccsync", "spec.selector.matchLabels"),
        ("PodMonitor", "ccsync", "spec.selector.matchLabels"),
    ] {
        let sel = get(one(&docs, kind, name), path).as_mapping().unwrap();
        assert!(
            !sel.iter().all(|(k, v)| labels.get(k) == Some(v)),
            "{kind}/{name} selects ingest pods"
        );
    }
    // The container listens where CCSYNC_INGEST__ADDR says, and the probes use that port.
    let port = get(c, "ports").as_sequence().unwrap()[0].clone();
    assert_eq!(s(&port, "name"), "http");
    assert_eq!(
        n(&port, "containerPort"),
        i64::from(settings.ingest.addr.port())
    );
    assert_eq!(s(c, "readinessProbe.httpGet.path"), "/readyz");
    assert_eq!(s(c, "livenessProbe.httpGet.path"), "/healthz");
    assert_eq!(s(c, "readinessProbe.httpGet.port"), "http");
    // Ingest reads the broker URL and, for connect links (issue 14), what the workers read the
    // token sets with (Redis, the encryption key, the CC app) from the worker's Secret, key by key
    // (never the whole Secret); the public URL is its own, empty by default (links off).
    let env = get(c, "env").as_sequence().unwrap();
    let by_name = |name: &str| {
        env.iter()
            .find(|e| s(e, "name") == name)
            .unwrap_or_else(|| panic!("ingest env lacks {name}"))
    };
    for key in [
        "CCSYNC_AMQP_URL",
        "CCSYNC_REDIS_URL",
        "CCSYNC_TOKEN_ENCRYPTION_KEY",
        "CCSYNC_CLIENT_ID",
        "CCSYNC_CLIENT_SECRET",
    ] {
        let e = by_name(key);
        assert_eq!(s(e, "valueFrom.secretKeyRef.name"), "ccsync-secrets");
        assert_eq!(s(e, "valueFrom.secretKeyRef.key"), key);
        // Only the client secret may be missing (public apps); a missing encryption key would
        // store sets the workers cannot read.
        let optional = opt(e, "valueFrom.secretKeyRef.optional").and_then(Value::as_bool);
        assert_eq!(
            optional == Some(true),
            key == "CCSYNC_CLIENT_SECRET",
            "{key}"
        );
    }
    assert_eq!(s(by_name("CCSYNC_INGEST__PUBLIC_URL"), "value"), "");
    assert_eq!(env.len(), 6);
    let from: Vec<String> = get(c, "envFrom")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            opt(e, "secretRef.name")
                .or_else(|| opt(e, "configMapRef.name"))
                .and_then(Value::as_str)
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(from, ["ccsync-config", "ccsync-ingest-secrets"]);
    // In-flight requests (each bounded by the publish timeout) finish before SIGKILL.
    assert!(
        n(pod, "terminationGracePeriodSeconds")
            > settings.ingest.publish_timeout.as_secs() as i64 + 5
    );
    // The Service reaches the ingest pods on the named port.
    let svc = one(&docs, "Service", "ccsync-ingest");
    for (k, v) in get(svc, "spec.selector").as_mapping().unwrap() {
        assert_eq!(labels.get(k), Some(v), "Service selector {k:?}");
    }
    assert_eq!(
        s(
            &get(svc, "spec.ports").as_sequence().unwrap()[0],
            "targetPort"
        ),
        "http"
    );
    // Scaled on CPU, from the Deployment's replica count, with a CPU request to scale against.
    let hpa = one(&docs, "HorizontalPodAutoscaler", "ccsync-ingest");
    assert_eq!(s(hpa, "spec.scaleTargetRef.name"), "ccsync-ingest");
    assert_eq!(n(hpa, "spec.minReplicas"), n(d, "spec.replicas"));
    assert!(n(hpa, "spec.maxReplicas") >= n(hpa, "spec.minReplicas"));
    let m = &get(hpa, "spec.metrics").as_sequence().unwrap()[0];
    assert_eq!(s(m, "resource.name"), "cpu");
    assert!(opt(c, "resources.requests.cpu").is_some());
    // A PDB keeps one answering; the NetworkPolicy lets traffic in on the port.
    let pdb = one(&docs, "PodDisruptionBudget", "ccsync-ingest");
    for (k, v) in get(pdb, "spec.selector.matchLabels").as_mapping().unwrap() {
        assert_eq!(labels.get(k), Some(v));
    }
    assert!(n(pdb, "spec.minAvailable") < n(hpa, "spec.minReplicas"));
    let np = one(&docs, "NetworkPolicy", "ccsync-ingest");
    let ports = get(&get(np, "spec.ingress").as_sequence().unwrap()[0], "ports");
    assert_eq!(
        n(&ports.as_sequence().unwrap()[0], "port"),
        i64::from(settings.ingest.addr.port())
    );
    // The example Secret's placeholders stop ingest at start, naming the key.
    let secret = string_map(get(
        one(&docs, "Secret", "ccsync-ingest-secrets"),
        "stringData",
    ));
    for v in secret.values() {
        assert!(v.contains("REPLACE_ME"));
    }
    let err =
        ccsync::config::Settings::from_pairs(secret.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .unwrap_err();
    assert!(err.to_string().contains("CCSYNC_INGEST__SECRETS"), "{err}");
    // The invite secret's placeholder is refused too, naming its key.
    let invite = secret
        .get("CCSYNC_AUTH__INVITE_SECRET")
        .expect("the example Secret holds the invite secret");
    let err =
        ccsync::config::Settings::from_pairs([("CCSYNC_AUTH__INVITE_SECRET", invite.as_str())])
            .unwrap_err();
    assert!(
        err.to_string().contains("CCSYNC_AUTH__INVITE_SECRET"),
        "{err}"
    );
}
