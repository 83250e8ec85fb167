//! Helpers of the operations tests: paths, external tools, YAML navigation, the manifests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize as _;
use serde_yaml::Value;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// A fresh scratch directory for one test (tests run in parallel), removed when dropped.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Keep the files of a failing test for a look; clean up otherwise.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn scratch(tag: &str) -> Scratch {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ops-{tag}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).expect("create scratch dir");
    Scratch(d)
}

pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The tool's path, or `None` (skip) outside CI. Under CI (`CI` set) a missing tool fails the test.
pub fn require(name: &str) -> Option<PathBuf> {
    if let Some(p) = on_path(name) {
        return Some(p);
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if ci {
        panic!(
            "{name} is not installed; CI must run `bash scripts/ci-tools.sh` before `cargo test`"
        );
    }
    eprintln!("SKIP: {name} is not installed (run `bash scripts/ci-tools.sh`); CI would fail here");
    None
}

pub fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn docs_of(yaml: &str, origin: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| {
            Value::deserialize(d).unwrap_or_else(|e| panic!("{origin}: YAML does not parse: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Every manifest file under `k8s/` (kustomization files are kustomize's, not the cluster's).
pub fn manifest_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
            {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("k8s"), &mut out);
    assert!(
        out.len() >= 10,
        "expected the k8s/ manifests, found {out:?}"
    );
    out
}

/// `(file, document)` for every document of every manifest file.
pub fn manifests() -> Vec<(String, Value)> {
    manifest_files()
        .into_iter()
        .flat_map(|p| {
            let rel = p.strip_prefix(root()).unwrap().display().to_string();
            let body = std::fs::read_to_string(&p).expect("read manifest");
            docs_of(&body, &rel)
                .into_iter()
                .map(move |d| (rel.clone(), d))
        })
        .collect()
}

pub fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    get(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string in {}", brief(v)))
}

pub fn n(v: &Value, path: &str) -> i64 {
    let x = get(v, path);
    x.as_i64()
        .unwrap_or_else(|| panic!("{path} is not an integer in {}", brief(v)))
}

/// Follow a dotted path (`spec.template.spec`, list items as `containers.0`).
pub fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    opt(v, path).unwrap_or_else(|| panic!("{path} missing in {}", brief(v)))
}

pub fn opt<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for part in path.split('.') {
        cur = match part.parse::<usize>() {
            Ok(i) => cur.as_sequence()?.get(i)?,
            Err(_) => cur.get(part)?,
        };
    }
    Some(cur)
}

pub fn brief(v: &Value) -> String {
    format!(
        "{}/{}",
        opt(v, "kind").and_then(Value::as_str).unwrap_or("?"),
        opt(v, "metadata.name")
            .and_then(Value::as_str)
            .unwrap_or("?")
    )
}

pub fn kind_of(v: &Value) -> &str {
    opt(v, "kind").and_then(Value::as_str).unwrap_or("")
}

pub fn one<'a>(docs: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    let found: Vec<_> = docs
        .iter()
        .filter(|(_, d)| kind_of(d) == kind && s(d, "metadata.name") == name)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}/{name}");
    &found[0].1
}

pub fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .expect("a mapping")
        .iter()
        .map(|(k, v)| {
            let val = match v {
                Value::String(s) => s.clone(),
                other => panic!("{k:?}: values must be strings, got {other:?}"),
            };
            (k.as_str().expect("string key").to_string(), val)
        })
        .collect()
}

/// API groups whose kinds are CRDs (no offline schema): checked structurally below.
pub fn is_crd(doc: &Value) -> bool {
    let api = opt(doc, "apiVersion").and_then(Value::as_str).unwrap_or("");
    api.starts_with("monitoring.coreos.com/") || api.starts_with("keda.sh/")
}

pub fn kustomize(dir: &str) -> Option<Vec<Value>> {
    let kubectl = require("kubectl")?;
    let out = run(Command::new(kubectl).arg("kustomize").arg(root().join(dir)));
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed:\n{}",
        text(&out)
    );
    Some(docs_of(&String::from_utf8_lossy(&out.stdout), dir))
}

/// The configuration the Deployment runs with: defaults + ConfigMap + the example Secret, with the
/// placeholder encryption key swapped for a well-formed one.
pub fn effective_settings() -> ccsync::config::Settings {
    let docs = manifests();
    let cm = string_map(get(one(&docs, "ConfigMap", "ccsync-config"), "data"));
    let mut secret = string_map(get(one(&docs, "Secret", "ccsync-secrets"), "stringData"));
    secret.insert(
        "CCSYNC_TOKEN_ENCRYPTION_KEY".into(),
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into(),
    );
    let pairs: Vec<(&str, &str)> = cm
        .iter()
        .chain(secret.iter())
        .filter(|(k, _)| k.starts_with("CCSYNC_"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    ccsync::config::Settings::from_pairs(pairs)
        .unwrap_or_else(|e| panic!("the ConfigMap + Secret do not load: {e}"))
}
