//! The Helm chart (`helm/clarion`) checked with real tools, no cluster:
//! `helm lint`, `helm template` with the default values (embedded mode) and
//! with `ci/kafka-ha-values.yaml` (one Deployment per role over Kafka), every
//! rendered manifest validated by kubernetes-validate against the Kubernetes
//! JSON schemas of the oldest and newest versions the chart supports, and
//! what the pods will read checked against the binary itself: the
//! ConfigMap's `clarion.toml` (plus the secret variables the Deployments
//! set) loads into `clarion::Config` and validates, each Deployment runs a
//! real role, ports and mounts agree with the configuration.
//!
//! The tools come from scripts/test-deps.sh: helm at `$CLARION_HELM`
//! (default ~/.cache/clarion-helm/helm), kubernetes-validate in
//! `$CLARION_VENV` (default ~/.cache/clarion-venv). Without them the tests
//! fail when `CI` is set and skip loudly otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use clarion::{Config, Role};
use serde::Deserialize;
use serde_json::Value;

/// Kinds whose schemas are not Kubernetes' own (CRDs): kubernetes-validate
/// has none, so they are checked structurally here instead.
const CRD_KINDS: &[&str] = &["ServiceMonitor"];

/// The Kubernetes versions the manifests must validate against: the
/// chart's `kubeVersion` floor and the newest the validator bundles.
const KUBERNETES_VERSIONS: &[&str] = &["1.29.0", "1.35.0"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chart() -> PathBuf {
    repo().join("helm/clarion")
}

fn home_cache(rel: &str) -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").expect("HOME"))
        .join(".cache")
        .join(rel)
}

/// A tool the test-deps script installs, or `None` (skip) outside CI.
fn tool(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    let msg = format!(
        "{what} is missing at {}: run scripts/test-deps.sh (make test-deps)",
        path.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{msg}");
    eprintln!("SKIPPED (not in CI): {msg}");
    None
}

fn helm() -> Option<PathBuf> {
    let path = std::env::var_os("CLARION_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| home_cache("clarion-helm/helm"));
    tool(path, "helm")
}

fn kubernetes_validate() -> Option<PathBuf> {
    let venv = std::env::var_os("CLARION_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| home_cache("clarion-venv"));
    tool(venv.join("bin/kubernetes-validate"), "kubernetes-validate")
}

/// Runs a tool; its output, or a panic showing what it said.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// A values file of the chart, by its name under `ci/`, or the defaults.
#[derive(Clone, Copy, Debug)]
enum Values {
    Defaults,
    KafkaHa,
}

impl Values {
    const ALL: [Values; 2] = [Values::Defaults, Values::KafkaHa];

    fn args(self) -> Vec<String> {
        match self {
            Values::Defaults => vec![],
            Values::KafkaHa => vec![
                "-f".into(),
                chart()
                    .join("ci/kafka-ha-values.yaml")
                    .display()
                    .to_string(),
            ],
        }
    }
}

/// `helm template` of the chart, one JSON value per manifest.
fn render(helm: &Path, values: Values, extra: &[&str]) -> Result<Vec<Value>, String> {
    let out = Command::new(helm)
        .args(["template", "clarion-test"])
        .arg(chart())
        .args(["--namespace", "notify"])
        .args(values.args())
        .args(extra)
        .output()
        .expect("running helm");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).expect("helm prints UTF-8");
    let docs = serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("helm renders YAML"))
        .filter(|v| !v.is_null())
        .collect();
    Ok(docs)
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().expect("every manifest has a kind")
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"]
        .as_str()
        .expect("every manifest has a name")
}

fn of_kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

fn container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "{}: one container", name(deployment));
    &containers[0]
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().expect("a string")).collect())
        .unwrap_or_default()
}

fn port(container: &Value, port_name: &str) -> Option<u16> {
    container["ports"].as_array()?.iter().find_map(|p| {
        (p["name"] == port_name).then(|| p["containerPort"].as_u64().expect("port") as u16)
    })
}

#[test]
fn helm_lint_passes_with_the_defaults_and_the_kafka_ha_values() {
    let Some(helm) = helm() else { return };
    for values in Values::ALL {
        let text = run(Command::new(&helm)
            .args(["lint", "--strict"])
            .arg(chart())
            .args(values.args()));
        assert!(text.contains("0 chart(s) failed"), "{values:?}: {text}");
    }
}

#[test]
fn every_rendered_manifest_validates_against_the_kubernetes_schemas() {
    let (Some(helm), Some(validate)) = (helm(), kubernetes_validate()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for values in Values::ALL {
        let docs = render(&helm, values, &[]).unwrap();
        let (crds, core): (Vec<&Value>, Vec<&Value>) =
            docs.iter().partition(|d| CRD_KINDS.contains(&kind(d)));
        let file = dir.path().join(format!("{values:?}.yaml"));
        let text: Vec<String> = core
            .iter()
            .map(|d| serde_norway::to_string(d).unwrap())
            .collect();
        std::fs::write(&file, text.join("---\n")).unwrap();
        for version in KUBERNETES_VERSIONS {
            let out = run(Command::new(&validate)
                .args(["--strict", "--kubernetes-version", *version])
                .arg(&file));
            let passed = out.matches(" passed for resource ").count();
            assert_eq!(passed, core.len(), "{values:?} on {version}:\n{out}");
        }
        let skipped: Vec<String> = crds
            .iter()
            .map(|d| format!("{}/{}", kind(d), name(d)))
            .collect();
        eprintln!(
            "{values:?}: {} manifests validated against Kubernetes {KUBERNETES_VERSIONS:?}; \
             not schema-checked (CRDs, checked structurally): {skipped:?}",
            core.len()
        );
    }
}

/// Loads the rendered `clarion.toml` as the pods will: the file, then every
/// `CLARION__*` variable the Deployments take from Secrets (dummy values),
/// then `validate`.
#[allow(clippy::result_large_err)] // figment::Jail fixes the closure type
fn load_rendered_config(docs: &[Value]) -> Result<Config, String> {
    let maps = of_kind(docs, "ConfigMap");
    let toml = maps
        .iter()
        .find_map(|m| m["data"]["clarion.toml"].as_str())
        .expect("a ConfigMap holds clarion.toml");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clarion.toml");
    std::fs::write(&file, toml).unwrap();
    let mut secret_vars = BTreeSet::new();
    for d in of_kind(docs, "Deployment") {
        for e in container(d)["env"].as_array().into_iter().flatten() {
            let var = e["name"].as_str().unwrap();
            if var.starts_with("CLARION__") {
                assert!(
                    e["valueFrom"]["secretKeyRef"].is_object(),
                    "{}: {var} must come from a Secret, never a value in the chart",
                    name(d)
                );
                secret_vars.insert(var.to_string());
            }
        }
    }
    // The jail restores the environment (and serialises its users).
    let mut loaded = Err(String::new());
    figment::Jail::expect_with(|jail| {
        for var in &secret_vars {
            jail.set_env(var, "dummy-secret-from-kubernetes");
        }
        loaded = Config::load(Some(file.as_path()))
            .map_err(|e| format!("the rendered clarion.toml does not load: {e}"))
            .and_then(|cfg| {
                cfg.validate()
                    .map_err(|e| format!("the rendered clarion.toml is refused: {e}"))?;
                Ok(cfg)
            });
        Ok(())
    });
    loaded.map_err(|e| format!("{e}\n{toml}"))
}

#[test]
fn the_rendered_config_loads_into_the_typed_config_and_matches_the_pods() {
    let Some(helm) = helm() else { return };
    for values in Values::ALL {
        let docs = render(&helm, values, &[]).unwrap();
        let cfg = load_rendered_config(&docs).unwrap_or_else(|e| panic!("{values:?}: {e}"));
        let deployments = of_kind(&docs, "Deployment");
        assert!(!deployments.is_empty());
        for d in &deployments {
            let c = container(d);
            let args = strings(&c["args"]);
            let at = args
                .iter()
                .position(|a| *a == "--config")
                .expect("--config");
            let mounted = c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["mountPath"] == args[at + 1]);
            assert!(
                mounted,
                "{}: --config {} is not mounted",
                name(d),
                args[at + 1]
            );
            assert_eq!(port(c, "http"), Some(cfg.http.listen.port()), "{}", name(d));
            assert_eq!(
                port(c, "metrics"),
                cfg.http.internal_listen.map(|a| a.port()),
                "{}: /metrics on the internal listener",
                name(d)
            );
            if let Some(grpc) = port(c, "grpc") {
                assert_eq!(grpc, cfg.grpc.listen.port(), "{}", name(d));
            }
            // Keyring keys are `file:` paths: each under a mounted Secret.
            for (id, key) in &cfg.secrets.keys {
                let path = key.strip_prefix("file:").expect("keyring keys are files");
                let under_mount =
                    c["volumeMounts"].as_array().unwrap().iter().any(|m| {
                        path.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap()))
                    });
                assert!(
                    under_mount,
                    "{}: secrets.keys.{id} {path} not mounted",
                    name(d)
                );
            }
            for probe in ["livenessProbe", "readinessProbe"] {
                let path = c[probe]["httpGet"]["path"].as_str().unwrap();
                assert!(["/healthz", "/readyz"].contains(&path), "{probe}: {path}");
            }
            let pod = &d["spec"]["template"]["spec"]["securityContext"];
            assert_eq!(pod["runAsNonRoot"], true, "{}", name(d));
            assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        }
        match values {
            Values::Defaults => assert!(cfg.log_url().starts_with("sqlite://")),
            Values::KafkaHa => {
                assert!(cfg.log_url().starts_with("kafka://"), "{}", cfg.log_url());
                assert!(cfg.store_url().starts_with("scylla://"));
                assert_eq!(cfg.log.partitions, 8);
                // Set only through a Secret: the variable reached the key.
                let twilio = cfg.providers.twilio.as_ref().unwrap();
                assert_eq!(twilio.auth_token, "dummy-secret-from-kubernetes");
                assert!(cfg.admin_token_sha256().is_some());
                assert_eq!(cfg.retry.default.horizon_ms, 3_600_000);
            }
        }
    }
}

#[test]
#[cfg(feature = "kafka")]
fn kafka_tuning_values_reach_the_log_url_the_binary_parses() {
    let Some(helm) = helm() else { return };
    let tuned = &["--set", "kafka.fetchWaitMs=50", "--set", "kafka.lingerMs=0"];
    let docs = render(&helm, Values::KafkaHa, tuned).unwrap();
    let cfg = load_rendered_config(&docs).unwrap();
    let url = cfg.log_url();
    let rest = url.strip_prefix("kafka://").expect("a Kafka URL");
    let parsed = clarion_log::kafka::parse_url(rest).unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!((parsed.fetch_wait_ms, parsed.linger_ms), (50, 0), "{url}");
    // Unset, Clarion's default applies.
    let docs = render(&helm, Values::KafkaHa, &[]).unwrap();
    let url = load_rendered_config(&docs).unwrap().log_url();
    assert!(
        url.contains("fetch_wait_ms=100") && !url.contains("linger_ms"),
        "{url}"
    );
    // Out of range is refused by the chart's schema, naming the value.
    let err = render(&helm, Values::KafkaHa, &["--set", "kafka.lingerMs=5000"]).unwrap_err();
    assert!(err.contains("lingerMs"), "{err}");
}

#[test]
fn each_deployment_runs_a_real_role_and_every_role_has_one() {
    let Some(helm) = helm() else { return };
    let embedded = render(&helm, Values::Defaults, &[]).unwrap();
    let deployments = of_kind(&embedded, "Deployment");
    assert_eq!(deployments.len(), 1, "embedded: one pod runs every role");
    assert_eq!(strings(&container(deployments[0])["args"])[0], "serve");
    assert_eq!(deployments[0]["spec"]["strategy"]["type"], "Recreate");

    let docs = render(&helm, Values::KafkaHa, &[]).unwrap();
    let mut roles = BTreeSet::new();
    for d in of_kind(&docs, "Deployment") {
        let args = strings(&container(d)["args"]);
        assert_eq!(args[0], "run", "{}", name(d));
        let role: Role = args[1]
            .parse()
            .unwrap_or_else(|e| panic!("{}: `clarion run {}`: {e}", name(d), args[1]));
        if role != Role::Gateway {
            // Every process of a processor role runs all its partitions.
            assert_eq!(d["spec"]["replicas"], 1, "{}", name(d));
            assert_eq!(d["spec"]["strategy"]["type"], "Recreate", "{}", name(d));
        }
        assert!(roles.insert(role.to_string()), "{role} twice");
    }
    let all: BTreeSet<String> = Role::ALL.iter().map(|r| r.to_string()).collect();
    assert_eq!(roles, all, "one Deployment per role of `clarion run`");

    // Only the stateless gateway autoscales and has a disruption budget.
    let hpa = of_kind(&docs, "HorizontalPodAutoscaler");
    assert_eq!(hpa.len(), 1);
    assert_eq!(
        hpa[0]["spec"]["scaleTargetRef"]["name"],
        "clarion-test-gateway"
    );
    let pdb = of_kind(&docs, "PodDisruptionBudget");
    assert_eq!(pdb.len(), 1);
    assert_eq!(
        pdb[0]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "gateway"
    );
}

#[test]
fn the_service_monitor_scrapes_the_metrics_service_and_dashboards_ship() {
    let Some(helm) = helm() else { return };
    let docs = render(&helm, Values::KafkaHa, &[]).unwrap();
    let monitors = of_kind(&docs, "ServiceMonitor");
    assert_eq!(monitors.len(), 1, "on in kafka-ha values");
    let m = monitors[0];
    assert_eq!(m["apiVersion"], "monitoring.coreos.com/v1");
    let selector = m["spec"]["selector"]["matchLabels"].as_object().unwrap();
    let scraped: Vec<&Value> = of_kind(&docs, "Service")
        .into_iter()
        .filter(|s| {
            selector
                .iter()
                .all(|(k, v)| &s["metadata"]["labels"][k.as_str()] == v)
        })
        .collect();
    assert_eq!(
        scraped.len(),
        1,
        "the ServiceMonitor selects the metrics Service"
    );
    let port_names: Vec<&Value> = scraped[0]["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["name"])
        .collect();
    for e in m["spec"]["endpoints"].as_array().unwrap() {
        assert!(port_names.contains(&&e["port"]), "{}", e["port"]);
        assert_eq!(e["path"], "/metrics");
    }
    let off = render(&helm, Values::Defaults, &[]).unwrap();
    assert!(of_kind(&off, "ServiceMonitor").is_empty(), "off by default");

    // The dashboards ConfigMap carries every dashboard of the repository,
    // byte for byte, under the Grafana sidecar's label.
    let boards = of_kind(&docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("a ConfigMap labelled for the Grafana sidecar");
    let dir = repo().join("dashboards/grafana");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap();
        let shipped = boards["data"][file].as_str().unwrap_or_else(|| {
            panic!("{file} is not in the chart: copy it to helm/clarion/dashboards/")
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            shipped.trim_end(),
            text.trim_end(),
            "{file}: the chart's copy differs"
        );
        serde_json::from_str::<Value>(shipped).expect("dashboard JSON");
        files += 1;
    }
    assert!(files > 0);
    assert_eq!(boards["data"].as_object().unwrap().len(), files);
}

#[test]
fn group_assignment_scales_the_partition_roles_and_configures_the_pods() {
    let Some(helm) = helm() else { return };
    let docs = render(
        &helm,
        Values::KafkaHa,
        &[
            "--set",
            "kafka.partitionAssignment=group",
            "--set",
            "kafka.groupSessionTimeoutMs=15000",
            "--set",
            "roles.router.replicas=3",
            "--set",
            "roles.dispatcher.replicas=2",
        ],
    )
    .unwrap();
    let cfg = load_rendered_config(&docs).unwrap();
    assert_eq!(
        cfg.runtime.partition_assignment,
        clarion::config::PartitionAssignment::Group
    );
    assert_eq!(cfg.runtime.group_session_timeout_ms, 15_000);
    let replicas: BTreeMap<String, (Value, Value)> = of_kind(&docs, "Deployment")
        .into_iter()
        .map(|d| {
            let role = strings(&container(d)["args"])[1].to_string();
            (
                role,
                (
                    d["spec"]["replicas"].clone(),
                    d["spec"]["strategy"]["type"].clone(),
                ),
            )
        })
        .collect();
    let of = |role: &str| replicas[role].clone();
    assert_eq!(of("router"), (3.into(), "RollingUpdate".into()));
    assert_eq!(of("dispatcher"), (2.into(), "RollingUpdate".into()));
    assert_eq!(of("projector"), (1.into(), "RollingUpdate".into()));
    // Work outside the group runs in every process: one pod, never two.
    for role in ["alerts", "exporter", "notary"] {
        assert_eq!(of(role), (1.into(), "Recreate".into()), "{role}");
    }
}

#[test]
fn values_the_binary_cannot_run_fail_the_render_naming_the_value() {
    let Some(helm) = helm() else { return };
    let cases: &[(Values, &[&str], &str)] = &[
        (
            Values::Defaults,
            &["--set", "mode=distributed"],
            "kafka.brokers",
        ),
        (Values::Defaults, &["--set", "mode=cluster"], "mode"),
        (
            Values::KafkaHa,
            &["--set", "store.url="],
            "store.url: distributed mode needs",
        ),
        (
            Values::KafkaHa,
            &["--set", "keyring.existingSecret="],
            "keyring.existingSecret",
        ),
        (
            Values::KafkaHa,
            &["--set", "roles.dispatcher.replicas=2"],
            "roles.dispatcher.replicas: only the gateway scales out while kafka.partitionAssignment is \"all\"",
        ),
        // Group assignment scales the partition roles only, on Kafka only.
        (
            Values::KafkaHa,
            &[
                "--set",
                "kafka.partitionAssignment=group",
                "--set",
                "roles.exporter.replicas=2",
            ],
            "roles.exporter.replicas: the exporter runs work outside the partition group",
        ),
        (
            Values::Defaults,
            &["--set", "kafka.partitionAssignment=group"],
            "kafka.partitionAssignment: group needs mode: distributed",
        ),
        (
            Values::KafkaHa,
            &["--set", "kafka.partitionAssignment=some"],
            "/kafka/partitionAssignment",
        ),
        // values.schema.json: misspelt values and malformed brokers.
        (
            Values::KafkaHa,
            &["--set", "roles.dispatchr.enabled=false"],
            "additional properties 'dispatchr' not allowed",
        ),
        (
            Values::KafkaHa,
            &["--set", "kafka.brokers={kafka}"],
            "/kafka/brokers/0",
        ),
    ];
    for (values, extra, want) in cases {
        let err = render(&helm, *values, extra).expect_err(want);
        assert!(err.contains(want), "{extra:?}: wanted {want:?} in {err}");
    }
    // And a config key the binary does not know is refused by the test's
    // load (deny_unknown_fields), as the pods would refuse it.
    let docs = render(
        &helm,
        Values::Defaults,
        &["--set", "config.log.partitons=4"],
    )
    .unwrap();
    let err = load_rendered_config(&docs).expect_err("a misspelt key must not load");
    assert!(err.contains("partitons"), "{err}");
}

#[test]
fn every_runbook_link_of_the_dashboards_names_a_runbook() {
    let mut links = 0;
    for entry in std::fs::read_dir(repo().join("dashboards/grafana")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for (at, _) in text.match_indices("${runbook_base}") {
            let rest = &text[at + "${runbook_base}".len()..];
            let file = &rest[..rest.find('"').unwrap()];
            let path = repo().join("docs/runbooks").join(file);
            assert!(path.exists(), "dashboard links to a missing runbook {file}");
            links += 1;
        }
    }
    assert!(links > 0, "the dashboards link to their runbooks");
}
