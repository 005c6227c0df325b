//! The deployable artefacts held against the binary they ship: the `Dockerfile` (parsed
//! line by line) and the Kubernetes manifests in `deploy/kubernetes/` (every YAML
//! document parsed). The ConfigMap's config passes `--check-config`; ports, probes, the
//! grace period, the Secret's keys and the selectors agree with it and with each other;
//! the probes answer 200 on a real admin listener run with that config. Also the
//! `healthcheck` subcommand the image's `HEALTHCHECK` runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yaml_rust2::{Yaml, YamlLoader};

use crate::support::process::{base_config, ProxyProcess};
use crate::support::redis::{RedisServer, STORE_KEYS};
use crate::support::{API_KEY, SECRET};
use refold_mock::MockUpstream;

const BIN: &str = env!("CARGO_BIN_EXE_refold-proxy");
/// The proxy's container in the Deployment's pod.
const CONTAINER: &str = "refold-proxy";
/// The file the manifests never apply: a template of the real Secret.
const SECRET_TEMPLATE: &str = "secret.example.yaml";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn kubernetes_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// YAML as JSON, so documents can be indexed with `value["a"]["b"]` (missing: `Null`).
fn to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Real(text) => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Yaml::Integer(n) => Value::from(*n),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(n) => n.to_string(),
                        other => panic!("a mapping key that is not a string: {other:?}"),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Alias(_) | Yaml::BadValue => panic!("unsupported YAML node: {yaml:?}"),
        Yaml::Null => Value::Null,
    }
}

/// Every `*.yaml` file of the directory and its documents, by file name.
fn manifest_files() -> BTreeMap<String, Vec<Value>> {
    let dir = kubernetes_dir();
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{} is missing: {e}", dir.display()));
    let mut files = BTreeMap::new();
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let docs =
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let docs: Vec<Value> = docs.iter().map(to_json).collect();
        for doc in &docs {
            assert!(
                doc["kind"].is_string() && doc["metadata"]["name"].is_string()
                    || name == "kustomization.yaml",
                "{name}: a document without kind or metadata.name: {doc}"
            );
        }
        files.insert(name, docs);
    }
    files
}

/// The documents kustomize applies (everything but the Secret template).
fn applied() -> Vec<Value> {
    manifest_files()
        .into_iter()
        .filter(|(name, _)| name != SECRET_TEMPLATE && name != "kustomization.yaml")
        .flat_map(|(_, docs)| docs)
        .collect()
}

/// The one applied document of `kind` named `name`.
fn object(kind: &str, name: &str) -> Value {
    let found: Vec<Value> = applied()
        .into_iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} named {name}");
    found.into_iter().next().unwrap()
}

/// Every applied workload (Deployment, StatefulSet).
fn workloads() -> Vec<Value> {
    applied()
        .into_iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
        .collect()
}

fn deployment() -> Value {
    object("Deployment", "refold-proxy")
}

fn proxy_container(deployment: &Value) -> Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == CONTAINER)
        .unwrap_or_else(|| panic!("no container {CONTAINER}"))
        .clone()
}

/// The ConfigMap's `proxy.toml`, as text.
fn configmap_toml() -> String {
    object("ConfigMap", "refold-proxy")["data"]["proxy.toml"]
        .as_str()
        .expect("the ConfigMap holds proxy.toml")
        .to_owned()
}

fn parse_toml(text: &str) -> toml::Table {
    text.parse().unwrap()
}

/// The port of a `host:port` listen address.
fn port_of(listen: &str) -> u16 {
    listen.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// The secrets of the config, each a `*_file` key (its table and key): none comes from a
/// variable in the manifests.
const SECRET_FILE_KEYS: [[&str; 2]; 6] = [
    ["server", "fingerprint_key_file"],
    ["admin", "admin_token_file"],
    ["upstream", "api_key_file"],
    ["identity", "hs_secret_file"],
    ["redis", "url_file"],
    ["redis", "encryption_keys_file"],
];

/// Every `*_file` key of a config, anywhere: its tables and key -> the file it names.
fn file_keys(table: &toml::Table) -> BTreeMap<Vec<String>, String> {
    let mut found = BTreeMap::new();
    for (key, value) in table {
        match value {
            toml::Value::Table(inner) => {
                for (mut path, file) in file_keys(inner) {
                    path.insert(0, key.clone());
                    found.insert(path, file);
                }
            }
            toml::Value::String(file) if key.ends_with("_file") => {
                found.insert(vec![key.clone()], file.clone());
            }
            _ => {}
        }
    }
    found
}

/// Every `*_env` key of a config, anywhere, dotted.
fn env_keys(table: &toml::Table) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (key, value) in table {
        match value {
            toml::Value::Table(inner) => {
                names.extend(env_keys(inner).into_iter().map(|k| format!("{key}.{k}")));
            }
            _ if key.ends_with("_env") => {
                names.insert(key.clone());
            }
            _ => {}
        }
    }
    names
}

/// The environment override of the config key at `path`, the way an operator spells it.
fn override_variable(path: &[String]) -> String {
    format!("REFOLD_PROXY__{}", path.join("__").to_ascii_uppercase())
}

/// The Secret mounted into a workload's container: where, with which file mode, and each
/// file's name -> the Secret key it holds.
struct SecretMount {
    path: String,
    mode: u32,
    files: BTreeMap<String, String>,
}

impl SecretMount {
    /// The one mount of the Secret `secret` (a volume, read-only) in `container` of
    /// `workload`.
    fn of(workload: &Value, container: &str, secret: &str) -> Self {
        let pod = &workload["spec"]["template"]["spec"];
        let container = pod["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == container)
            .unwrap_or_else(|| panic!("no container {container}"));
        let volumes = pod["volumes"].as_array().expect("volumes");
        let mounts: Vec<(&Value, &Value)> = container["volumeMounts"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|m| {
                let volume = volumes.iter().find(|v| v["name"] == m["name"])?;
                (volume["secret"]["secretName"] == secret).then_some((m, volume))
            })
            .collect();
        assert_eq!(mounts.len(), 1, "one mount of the Secret {secret}");
        let (mount, volume) = mounts[0];
        assert_eq!(mount["readOnly"], true, "{mount}");
        assert!(
            mount["subPath"].is_null(),
            "a subPath mount is never updated"
        );
        let items = volume["secret"]["items"]
            .as_array()
            .expect("the Secret's files listed (items): only those the container reads");
        Self {
            path: mount["mountPath"].as_str().unwrap().to_owned(),
            mode: u32::try_from(
                volume["secret"]["defaultMode"]
                    .as_u64()
                    .expect("defaultMode"),
            )
            .unwrap(),
            files: items
                .iter()
                .map(|item| {
                    assert!(item["mode"].is_null(), "defaultMode for every file: {item}");
                    (
                        item["path"].as_str().unwrap().to_owned(),
                        item["key"].as_str().unwrap().to_owned(),
                    )
                })
                .collect(),
        }
    }

    /// The proxy container's.
    fn proxy() -> Self {
        Self::of(&deployment(), CONTAINER, &secret_template().0)
    }

    /// The Secret key the file at `path` holds, when it is one of this mount's files.
    fn key_of(&self, path: &str) -> Option<&String> {
        let name = path.strip_prefix(&format!("{}/", self.path))?;
        self.files.get(name)
    }
}

/// The ConfigMap's secret files written to a fresh directory with the Secret volume's file
/// mode (or `mode`), each holding a valid stand-in for its Secret key (`redis_url`: the
/// Redis URL): the directory and the overrides pointing the config's `*_file` keys there.
fn secret_files(
    config: &toml::Table,
    mode: Option<u32>,
    redis_url: Option<&str>,
) -> (PathBuf, Vec<(String, String)>) {
    use std::os::unix::fs::PermissionsExt;
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "refold-proxy-deploy-secrets-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mount = SecretMount::proxy();
    let mode = mode.unwrap_or(mount.mode);
    let mut overrides = Vec::new();
    for (path, file) in file_keys(config) {
        let key = mount
            .key_of(&file)
            .unwrap_or_else(|| panic!("{file} is not a file of the Secret volume"));
        let written = dir.join(key);
        let value = match redis_url {
            Some(url) if key.contains("REDIS_URL") => url.to_owned(),
            _ => dummy_secret(key),
        };
        std::fs::write(&written, value).unwrap();
        std::fs::set_permissions(&written, std::fs::Permissions::from_mode(mode)).unwrap();
        overrides.push((
            override_variable(&path),
            written.to_string_lossy().into_owned(),
        ));
    }
    (dir, overrides)
}

/// The Secret template: its name and its keys with their placeholder values.
fn secret_template() -> (String, BTreeMap<String, String>) {
    let files = manifest_files();
    let docs = files.get(SECRET_TEMPLATE).expect("a Secret template");
    assert_eq!(docs.len(), 1);
    let secret = &docs[0];
    assert_eq!(secret["kind"], "Secret");
    let data = secret["stringData"].as_object().expect("stringData");
    (
        secret["metadata"]["name"].as_str().unwrap().to_owned(),
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect(),
    )
}

/// A valid stand-in for the secret under the Secret key `variable` (the template holds
/// placeholders): the API key the stand-in Refold accepts, the JWT secret the tests sign
/// with.
fn dummy_secret(variable: &str) -> String {
    if variable.contains("STORE_KEYS") {
        STORE_KEYS.to_owned()
    } else if variable.contains("REDIS_URL") {
        "redis://refold-proxy:dummy-password@127.0.0.1:6390".to_owned()
    } else if variable.contains("API_KEY") {
        API_KEY.to_owned()
    } else if variable.contains("JWT_SECRET") {
        // The one `app_jwt` signs with.
        SECRET.to_owned()
    } else {
        "dummy-secret-of-at-least-32-bytes-0123456789".to_owned()
    }
}

/// The secret env vars of a container: variable name -> (Secret, key).
fn secret_env(container: &Value) -> BTreeMap<String, (String, String)> {
    container["env"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|e| {
            let from = &e["valueFrom"]["secretKeyRef"];
            from.is_object().then(|| {
                (
                    e["name"].as_str().unwrap().to_owned(),
                    (
                        from["name"].as_str().unwrap().to_owned(),
                        from["key"].as_str().unwrap().to_owned(),
                    ),
                )
            })
        })
        .collect()
}

/// The container port named `name`.
fn container_port(container: &Value, name: &str) -> u16 {
    let port = container["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no container port named {name}"));
    u16::try_from(port["containerPort"].as_u64().unwrap()).unwrap()
}

/// The stand-in Refold and its URL (kept running while the value lives).
async fn stand_in() -> (String, MockUpstream) {
    stand_in_with(&[]).await
}

/// [`stand_in`] knowing the linked `accounts`.
async fn stand_in_with(accounts: &[&str]) -> (String, MockUpstream) {
    let (addr, mock) = crate::support::stand_in_with(accounts).await;
    (format!("http://{addr}"), mock)
}

/// Whether every label of `selector` is on `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("a selector");
    !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
}

/// `--check-config` (and `--print-config`) of the ConfigMap's config with an empty
/// environment but the `REFOLD_PROXY__*` overrides pointing its secret files at copies
/// with the Secret volume's mode: stdout, stderr and whether it passed.
fn check_configmap_config(mode: Option<u32>) -> (String, String, bool) {
    let config = parse_toml(&configmap_toml());
    let (dir, overrides) = secret_files(&config, mode, None);
    let path = dir.join("proxy.toml");
    std::fs::write(&path, configmap_toml()).unwrap();
    let out = Command::new(BIN)
        .arg("--check-config")
        .arg(&path)
        .arg("--print-config")
        .env_clear()
        .envs(overrides)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

/// Every secret from a file, none from a variable: the config checks with an empty
/// environment, and files with the Secret volume's mode draw no permission warning.
#[test]
fn the_configmap_config_passes_check_config() {
    let config = parse_toml(&configmap_toml());
    assert_eq!(
        env_keys(&config),
        BTreeSet::new(),
        "no secret from a variable"
    );
    let files = file_keys(&config);
    for [table, key] in SECRET_FILE_KEYS {
        assert!(
            files.contains_key(&vec![table.to_owned(), key.to_owned()]),
            "{table}.{key} in the ConfigMap's config"
        );
    }
    assert_eq!(config["tokens"]["store"].as_str(), Some("redis"));

    let (stdout, stderr, passed) = check_configmap_config(None);
    assert!(passed, "{stderr}");
    assert!(
        !stderr.contains("readable by every user"),
        "the Secret volume's mode draws a warning: {stderr}"
    );
    // The effective config names no variable for any secret (no default left over).
    let effective = parse_toml(&stdout);
    assert_eq!(env_keys(&effective), BTreeSet::new(), "{stdout}");
    // The warning the mode avoids is there for a file every user may read.
    let (_, stderr, passed) = check_configmap_config(Some(0o444));
    assert!(
        passed && stderr.contains("readable by every user"),
        "{stderr}"
    );
}

#[test]
fn container_ports_are_the_configs_listeners_and_the_service_hides_admin() {
    let config = parse_toml(&configmap_toml());
    let listen = config["server"]["listen"].as_str().unwrap();
    let admin = config["admin"]["listen"].as_str().unwrap();
    // The kubelet's probes come from outside the pod's loopback.
    assert!(admin.starts_with("0.0.0.0:"), "admin.listen {admin}");
    let container = proxy_container(&deployment());
    assert_eq!(container_port(&container, "http"), port_of(listen));
    assert_eq!(container_port(&container, "admin"), port_of(admin));

    let service = object("Service", "refold-proxy");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    let ports = service["spec"]["ports"].as_array().unwrap();
    assert!(!ports.is_empty());
    for port in ports {
        let target = &port["targetPort"];
        assert!(
            target == "http" || target.as_u64() == Some(u64::from(port_of(listen))),
            "the public Service targets the proxy port only: {port}"
        );
        assert_ne!(port["port"].as_u64(), Some(u64::from(port_of(admin))));
    }
}

#[test]
fn termination_grace_outlasts_the_drain_and_the_prestop_pause() {
    let config = parse_toml(&configmap_toml());
    let grace = config["server"]["shutdown_grace_s"]
        .as_integer()
        .unwrap_or(30);
    let deployment = deployment();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = proxy_container(&deployment);
    let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .expect("a preStop sleep action");
    assert!(pause > 0);
    let termination = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(
        termination > grace + pause,
        "terminationGracePeriodSeconds {termination} <= shutdown_grace_s {grace} + preStop {pause}"
    );
}

/// Every secret file the config names lies in the proxy's Secret volume and is a key of
/// the Secret template; every key of the template is mounted where it is read (the proxy's
/// files, Valkey's password), nothing more; no secret reaches a container's environment.
#[test]
fn the_secret_volume_holds_every_file_the_config_names_and_nothing_unused() {
    let config = parse_toml(&configmap_toml());
    let (secret_name, template) = secret_template();
    let deployment = deployment();
    let mount = SecretMount::proxy();
    let mut used = BTreeSet::new();
    let mut read = BTreeSet::new();
    for (path, file) in file_keys(&config) {
        let key = mount.key_of(&file).unwrap_or_else(|| {
            panic!(
                "{} = {file:?}: not a file of the Secret volume at {}",
                path.join("."),
                mount.path
            )
        });
        assert!(template.contains_key(key), "{key} in {SECRET_TEMPLATE}");
        used.insert(key.clone());
        read.insert(file.rsplit_once('/').unwrap().1.to_owned());
    }
    let mounted: BTreeSet<String> = mount.files.keys().cloned().collect();
    assert_eq!(
        mounted, read,
        "the proxy's Secret volume holds the files it reads"
    );

    let valkey = object("StatefulSet", "valkey");
    let valkey_mount = SecretMount::of(&valkey, "valkey", &secret_name);
    let script = valkey["spec"]["template"]["spec"]["containers"][0]["args"][0]
        .as_str()
        .unwrap();
    for (file, key) in &valkey_mount.files {
        assert!(
            script.contains(&format!("{}/{file}", valkey_mount.path)),
            "Valkey reads {file}: {script}"
        );
        used.insert(key.clone());
    }
    let keys: BTreeSet<String> = template.keys().cloned().collect();
    assert_eq!(used, keys, "the Secret template's keys are the keys used");
    // The template says where its keys turn up.
    let header = std::fs::read_to_string(kubernetes_dir().join(SECRET_TEMPLATE)).unwrap();
    for path in [&mount.path, &valkey_mount.path] {
        assert!(
            header.contains(path.as_str()),
            "{SECRET_TEMPLATE} names {path}"
        );
    }

    // Readable by the pod's group only: the kubelet gives the files to the fsGroup, the
    // non-root user reads them through it, and the proxy's world-readable warning stays off.
    for (workload, mount) in [(&deployment, &mount), (&valkey, &valkey_mount)] {
        let pod = &workload["spec"]["template"]["spec"];
        assert_eq!(mount.mode, 0o440, "defaultMode 0440 (288 in decimal)");
        assert!(
            pod["securityContext"]["fsGroup"].as_u64().is_some(),
            "fsGroup"
        );
        for container in pod["containers"].as_array().unwrap() {
            assert_eq!(secret_env(container), BTreeMap::new(), "no secret in env");
            assert!(container["envFrom"].is_null(), "no envFrom");
        }
    }

    // The Redis URL's host and port are the Valkey Service's.
    let url_key = mount.key_of(config["redis"]["url_file"].as_str().unwrap());
    let url = &template[url_key.unwrap()];
    let host_port = url.rsplit_once('@').unwrap().1.trim_end_matches('/');
    let (host, port) = host_port.split_once(':').unwrap();
    let valkey_service = object("Service", host);
    assert!(valkey_service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["port"].as_u64().map(|p| p.to_string()).as_deref() == Some(port)));
}

#[test]
fn selectors_match_the_pod_labels() {
    for workload in workloads() {
        let labels = &workload["spec"]["template"]["metadata"]["labels"];
        assert!(selects(
            &workload["spec"]["selector"]["matchLabels"],
            labels
        ));
        let name = &workload["metadata"]["name"];
        let services: Vec<Value> = applied()
            .into_iter()
            .filter(|d| d["kind"] == "Service" && selects(&d["spec"]["selector"], labels))
            .collect();
        assert!(!services.is_empty(), "a Service for {name}");
        // Each Service selects this workload's pods only.
        for service in &services {
            for other in workloads()
                .iter()
                .filter(|w| &w["metadata"]["name"] != name)
            {
                let other_labels = &other["spec"]["template"]["metadata"]["labels"];
                assert!(!selects(&service["spec"]["selector"], other_labels));
            }
        }
        if workload["kind"] == "StatefulSet" {
            assert_eq!(
                workload["spec"]["serviceName"],
                services[0]["metadata"]["name"]
            );
        }
    }
    let deployment = deployment();
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pdb = object("PodDisruptionBudget", "refold-proxy");
    assert!(selects(
        &pdb["spec"]["selector"]["matchLabels"],
        &deployment["spec"]["template"]["metadata"]["labels"]
    ));
}

#[test]
fn every_workload_is_hardened() {
    for workload in workloads() {
        let name = &workload["metadata"]["name"];
        let pod = &workload["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert!(pod["securityContext"]["runAsUser"].as_u64().unwrap() > 0);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        for container in pod["containers"].as_array().unwrap() {
            let security = &container["securityContext"];
            assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
            for bound in ["requests", "limits"] {
                assert!(
                    container["resources"][bound]["memory"].is_string(),
                    "{name}: resources.{bound}.memory"
                );
            }
        }
    }
    let pod = &deployment()["spec"]["template"]["spec"];
    assert!(
        pod["topologySpreadConstraints"].is_array()
            || pod["affinity"]["podAntiAffinity"].is_object(),
        "the replicas spread across nodes"
    );
}

#[test]
fn kustomization_lists_every_manifest_but_the_secret_template() {
    let files = manifest_files();
    let kustomization = &files.get("kustomization.yaml").expect("kustomization.yaml")[0];
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = files
        .keys()
        .filter(|name| *name != "kustomization.yaml" && *name != SECRET_TEMPLATE)
        .cloned()
        .collect();
    assert_eq!(listed, expected);
}

/// The probes answer 200 on the admin listener of a proxy run with the ConfigMap's
/// config: only the listen addresses (to free loopback ports), the upstream (the
/// stand-in), the Redis URL (a test server) and where the secret files are (overridden
/// from the environment) differ.
#[tokio::test]
async fn probe_paths_answer_200_on_a_real_admin_listener() {
    let deployment = deployment();
    let container = proxy_container(&deployment);
    let mut config = parse_toml(&configmap_toml());
    let admin_port = port_of(config["admin"]["listen"].as_str().unwrap());
    assert_eq!(container_port(&container, "admin"), admin_port);

    let (upstream, _mock) = stand_in().await;
    let redis = RedisServer::start();
    let set = |table: &mut toml::Table, path: [&str; 2], value: String| {
        table[path[0]].as_table_mut().unwrap()[path[1]] = toml::Value::String(value);
    };
    set(&mut config, ["server", "listen"], "127.0.0.1:0".into());
    set(&mut config, ["admin", "listen"], "127.0.0.1:0".into());
    set(&mut config, ["upstream", "base_url"], upstream);
    // The secrets as the Secret volume holds them (its file mode), where the
    // `REFOLD_PROXY__*__*_FILE` overrides say.
    let (secrets, overrides) = secret_files(&config, None, Some(&redis.url()));
    let env: Vec<(&str, String)> = overrides
        .iter()
        .map(|(name, value)| (name.as_str(), value.clone()))
        .collect();
    let mut process = ProxyProcess::spawn_with_env(&config.to_string(), &env).await;
    process.serving().await;
    let warned: Vec<Value> = process
        .logs()
        .into_iter()
        .filter(|e| e.to_string().contains("readable by every user"))
        .collect();
    assert_eq!(warned, Vec::<Value>::new());

    let client = reqwest::Client::new();
    let mut probed = 0;
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        let get = &container[probe]["httpGet"];
        if get.is_null() {
            continue;
        }
        assert_eq!(get["port"], "admin", "{probe} on the admin port");
        let path = get["path"].as_str().unwrap();
        let status = client
            .get(process.admin_url(path))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{probe} {path}");
        probed += 1;
    }
    assert!(probed >= 2, "readiness and liveness probes");
    assert_ne!(
        container["readinessProbe"]["httpGet"]["path"],
        container["livenessProbe"]["httpGet"]["path"],
        "readiness drains (503 while draining), liveness restarts: not the same endpoint"
    );
    drop(process);
    let _ = std::fs::remove_dir_all(&secrets);
}

/// One Dockerfile instruction: its keyword and arguments, continuation lines joined.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

/// The Dockerfile's instructions by stage (comments and blank lines dropped).
fn dockerfile_stages() -> Vec<Vec<Instruction>> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("a Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for line in logical.iter().filter(|l| !l.trim().is_empty()) {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let instruction = Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_owned(),
        };
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push(instruction);
        }
    }
    stages
}

fn args_of<'a>(stage: &'a [Instruction], keyword: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|i| i.keyword == keyword)
        .map(|i| i.args.as_str())
        .collect()
}

/// An exec-form (JSON array) argument list.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not exec form: {args}: {e}"))
}

#[test]
fn the_dockerfile_builds_a_distroless_non_root_image_of_the_binary() {
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "multi-stage");
    let builder = &stages[0];
    let from = args_of(builder, "FROM")[0];
    let image = from.split_whitespace().next().unwrap();
    let version = image
        .strip_prefix("rust:")
        .and_then(|tag| tag.strip_suffix("-bookworm"))
        .unwrap_or_else(|| panic!("an official rust:<ver>-bookworm builder: {image}"));
    let manifest = parse_toml(&std::fs::read_to_string(repo().join("Cargo.toml")).unwrap());
    let needed = manifest["workspace"]["package"]["rust-version"]
        .as_str()
        .unwrap();
    let numbers = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    assert!(
        numbers(version) >= numbers(needed),
        "builder {version} older than rust-version {needed}"
    );
    let build = builder
        .iter()
        .find(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .expect("a cargo build");
    assert!(build.args.contains("--release") && build.args.contains("--locked"));
    let package = build
        .args
        .split_whitespace()
        .skip_while(|w| *w != "-p")
        .nth(1)
        .expect("cargo build -p <package>");
    assert_eq!(manifest["package"]["name"].as_str(), Some(package));

    let last = stages.last().unwrap();
    let from = args_of(last, "FROM")[0];
    assert!(
        from.starts_with("gcr.io/distroless/cc-debian12:nonroot"),
        "a distroless final stage: {from}"
    );
    assert!(args_of(last, "RUN").is_empty(), "no shell at run time");
    let user = *args_of(last, "USER").last().expect("USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("a numeric USER: {user}"));
    assert_ne!(uid, 0);
    assert_eq!(args_of(last, "STOPSIGNAL"), ["SIGTERM"]);

    // The default config the image carries is the repository's proxy.toml.
    let default_config = "/etc/refold-proxy/proxy.toml";
    assert!(
        args_of(last, "COPY")
            .iter()
            .any(|c| c.ends_with(&format!("proxy.toml {default_config}"))),
        "COPY proxy.toml {default_config}"
    );
    let config = parse_toml(&std::fs::read_to_string(repo().join("proxy.toml")).unwrap());
    let listen = port_of(config["server"]["listen"].as_str().unwrap());
    let admin = port_of(config["admin"]["listen"].as_str().unwrap());
    let exposed: BTreeSet<u16> = args_of(last, "EXPOSE")
        .iter()
        .flat_map(|a| a.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    assert_eq!(exposed, BTreeSet::from([listen, admin]));

    let entrypoint = exec_form(args_of(last, "ENTRYPOINT")[0]);
    assert_eq!(entrypoint.len(), 1, "{entrypoint:?}");
    assert_eq!(
        exec_form(args_of(last, "CMD")[0]),
        ["--config", default_config]
    );
    // The subcommand's own default is that URL too.
    let help = Command::new(BIN)
        .args(["healthcheck", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains(&format!("http://127.0.0.1:{admin}/healthz")),
        "{help}"
    );
    let healthcheck = args_of(last, "HEALTHCHECK")[0];
    let command = healthcheck
        .split_once("CMD ")
        .expect("HEALTHCHECK ... CMD [...]")
        .1;
    assert_eq!(
        exec_form(command),
        [
            entrypoint[0].as_str(),
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{admin}/healthz"),
        ]
    );
}

#[test]
fn the_dockerignore_keeps_build_output_and_secrets_out() {
    let text = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    let lines: BTreeSet<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for pattern in [
        "target",
        ".git",
        "**/node_modules",
        "fuzz/artifacts",
        "**/.env",
    ] {
        assert!(lines.contains(pattern), "{pattern} in .dockerignore");
    }
    // What the build needs stays in.
    for needed in ["src", "proxy", "Cargo.lock", "proxy.toml"] {
        assert!(!lines.contains(needed), "{needed} must reach the build");
    }
}

fn healthcheck(url: &str) -> std::process::Output {
    Command::new(BIN)
        .args(["healthcheck", "--url", url, "--timeout", "2s"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test]
async fn healthcheck_exits_0_on_a_live_admin_listener() {
    let (upstream, _mock) = stand_in().await;
    let toml = format!(
        "{}[identity]\nhs_secret_env = \"APP_JWT_SECRET\"\n",
        base_config(&upstream)
    );
    let (process, _) = ProxyProcess::start(&toml).await;
    let url = process.admin_url("/healthz");
    let out = tokio::task::spawn_blocking(move || healthcheck(&url))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn healthcheck_fails_on_a_closed_port_and_on_a_503() {
    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("http://{closed}/healthz");
    let out = tokio::task::spawn_blocking(move || healthcheck(&url))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let why = String::from_utf8_lossy(&out.stderr);
    assert_eq!(why.trim().lines().count(), 1, "one line: {why}");

    // A listener that answers 503.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    let url = format!("http://{addr}/healthz");
    let out = tokio::task::spawn_blocking(move || healthcheck(&url))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("503"), "{why}");
}

/// A `redis-server` run with the Valkey container's own command line (the binary's
/// name, the port, the bind address and where its Secret volume is aside). Killed when
/// dropped.
struct ValkeyCommand {
    child: std::process::Child,
    port: u16,
    secrets: PathBuf,
}

impl ValkeyCommand {
    /// Runs it with `password` as the Secret volume's password file (with its mode), in an
    /// environment without secrets.
    fn start(password: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let valkey = object("StatefulSet", "valkey");
        let mount = SecretMount::of(&valkey, "valkey", &secret_template().0);
        let container = &valkey["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["command"], serde_json::json!(["sh", "-c"]));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let secrets = std::env::temp_dir().join(format!(
            "refold-proxy-deploy-valkey-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&secrets).unwrap();
        let (file, key) = mount.files.iter().next().expect("Valkey's password file");
        assert_eq!(key, "VALKEY_PASSWORD");
        let written = secrets.join(file);
        std::fs::write(&written, password).unwrap();
        std::fs::set_permissions(&written, std::fs::Permissions::from_mode(mount.mode)).unwrap();
        let script = container["args"][0].as_str().unwrap();
        assert!(script.contains(&mount.path), "{script}");
        // The password never in the command line, only its hash.
        assert!(!script.contains('>'), "{script}");
        let script = script.replace(&mount.path, &secrets.to_string_lossy());
        let script = script
            .replacen("exec valkey-server", "exec redis-server", 1)
            .replacen("--port 6379", &format!("--port {port} --bind 127.0.0.1"), 1);
        assert!(script.contains(&format!("--port {port}")), "{script}");
        let child = Command::new("sh")
            .args(["-c", &script])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        let server = Self {
            child,
            port,
            secrets,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // Up once the default user is refused (it is off): the server answers.
        while !server.cli(&[], &["PING"]).contains("NOAUTH") {
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        server
    }

    /// `redis-cli` on this server with `auth` options; stdout and stderr together.
    fn cli(&self, auth: &[&str], args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "--no-auth-warning",
            ])
            .args(auth)
            .args(args)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for ValkeyCommand {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.secrets);
    }
}

/// The Valkey container's command line, run as it is written, gives the proxy (on the
/// ConfigMap's config) a working store through the ACL user, and nobody else anything.
#[tokio::test]
async fn the_valkey_command_line_serves_the_proxy_through_its_acl_user() {
    let readme = std::fs::read_to_string(repo().join("deploy/replicas/README.md")).unwrap();
    let documented = readme
        .split('`')
        .find(|s| s.starts_with("~refold-proxy:*"))
        .expect("the ACL deploy/replicas/README.md documents");
    let valkey = object("StatefulSet", "valkey");
    let script = valkey["spec"]["template"]["spec"]["containers"][0]["args"][0]
        .as_str()
        .unwrap()
        .replace('\'', "");
    for rule in documented.split_whitespace() {
        assert!(script.contains(rule), "the ACL rule {rule} in: {script}");
    }

    let password = "valkey-acl-test-password-0123456789";
    let server = ValkeyCommand::start(password);
    let (upstream, _mock) = stand_in_with(&["alice"]).await;
    let mut config = parse_toml(&configmap_toml());
    for (table, key, value) in [
        ("server", "listen", "127.0.0.1:0".to_owned()),
        ("admin", "listen", "127.0.0.1:0".to_owned()),
        ("upstream", "base_url", upstream),
    ] {
        config[table].as_table_mut().unwrap()[key] = toml::Value::String(value);
    }
    let (_, template) = secret_template();
    let url_key = SecretMount::proxy()
        .key_of(config["redis"]["url_file"].as_str().unwrap())
        .cloned()
        .unwrap();
    // The template's URL, its password and host made this server's.
    let url = template[&url_key]
        .replace("CHANGE-ME", password)
        .replace("@valkey:6379", &format!("@127.0.0.1:{}", server.port));
    let (secrets, overrides) = secret_files(&config, None, Some(&url));
    let env: Vec<(&str, String)> = overrides
        .iter()
        .map(|(name, value)| (name.as_str(), value.clone()))
        .collect();
    let mut process = ProxyProcess::spawn_with_env(&config.to_string(), &env).await;
    let addr = process.serving().await;

    let status = reqwest::Client::new()
        .get(format!("http://{addr}/api/v2/public/workflow"))
        .bearer_auth(crate::support::app_jwt("alice"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let ready: Value = reqwest::get(process.admin_url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["store"], "up", "{ready}");
    let auth = ["--user", "refold-proxy", "--pass", password];
    let keys = server.cli(&auth, &["--scan"]);
    assert!(
        !keys.trim().is_empty() && keys.lines().all(|k| k.starts_with("refold-proxy:")),
        "{keys}"
    );
    // Outside its prefix the proxy's user is refused; the default user is off.
    assert!(server.cli(&auth, &["GET", "other"]).contains("NOPERM"));
    assert!(server
        .cli(&[], &["GET", "refold-proxy:x"])
        .contains("NOAUTH"));
    drop(process);
    let _ = std::fs::remove_dir_all(&secrets);
}

/// `kubernetes-validate` (PyPI): on the PATH, or in the venv `.ci/run` makes.
fn kubernetes_validate() -> PathBuf {
    let venv = repo().join("target/ci-venv/bin/kubernetes-validate");
    if venv.exists() {
        return venv;
    }
    let on_path = Command::new("kubernetes-validate")
        .arg("--version")
        .output();
    assert!(
        on_path.is_ok_and(|out| out.status.success()),
        "kubernetes-validate is missing: `pip install kubernetes-validate`, or run .ci/run \
         (it installs it into target/ci-venv)"
    );
    PathBuf::from("kubernetes-validate")
}

/// Every manifest (the Secret template too) against the API schemas of Kubernetes 1.30,
/// the first release with the stable `preStop.sleep` action, rejecting unknown fields.
#[test]
fn the_manifests_validate_against_the_kubernetes_schemas() {
    let files: Vec<PathBuf> = manifest_files()
        .into_keys()
        .filter(|name| name != "kustomization.yaml")
        .map(|name| kubernetes_dir().join(name))
        .collect();
    assert!(files.len() >= 6, "{files:?}");
    let out = Command::new(kubernetes_validate())
        .args(["--strict", "--quiet", "--kubernetes-version", "1.30.0"])
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
