//! The deployment files cannot run here (no container engine), so they are
//! checked as files: valid YAML, and every file they mount or copy exists.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &Path) -> serde_yaml::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

#[test]
fn compose_mounts_and_builds_only_files_that_exist() {
    let deploy = root().join("deploy");
    let compose = yaml(&deploy.join("compose.yml"));
    let services = compose["services"].as_mapping().expect("services");
    assert!(
        services.len() >= 5,
        "engine, database, S3, Prometheus, Grafana"
    );
    for (name, service) in services {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let spec = volume.as_str().expect("short volume syntax");
            let host = spec.split(':').next().unwrap_or_default();
            if host.starts_with('.') {
                assert!(
                    deploy.join(host).exists(),
                    "{name:?} mounts {host}, which is missing"
                );
            }
        }
        if let Some(file) = service["env_file"].as_str() {
            assert!(deploy.join(file).exists(), "{name:?} env_file {file}");
        }
        let build = &service["build"];
        if build.is_mapping() {
            let context = deploy.join(build["context"].as_str().expect("context"));
            let dockerfile = context.join(build["dockerfile"].as_str().expect("dockerfile"));
            assert!(dockerfile.exists(), "{}", dockerfile.display());
            for line in std::fs::read_to_string(&dockerfile)
                .expect("Dockerfile")
                .lines()
            {
                if let Some(args) = line
                    .strip_prefix("COPY ")
                    .filter(|a| !a.starts_with("--from"))
                {
                    let parts: Vec<&str> = args.split_whitespace().collect();
                    for source in &parts[..parts.len() - 1] {
                        assert!(
                            context.join(source).exists(),
                            "Dockerfile copies {source}, which is missing"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn every_yaml_file_parses_and_the_unit_runs_serve() {
    for file in [
        "dashboards/alerts.yml",
        "dashboards/alerts.test.yml",
        "dashboards/prometheus.yml",
        "dashboards/provisioning/datasources/prometheus.yml",
        "dashboards/provisioning/dashboards/noodle-migrate.yml",
    ] {
        yaml(&root().join(file));
    }
    let unit = std::fs::read_to_string(root().join("deploy/noodle-migrate.service")).expect("unit");
    assert!(
        unit.lines()
            .any(|l| l.starts_with("ExecStart=/usr/local/bin/noodle-migrate")
                && l.ends_with(" serve"))
    );
    assert!(
        unit.lines()
            .any(|l| l.starts_with("Environment=NOODLE_MIGRATE_MEDIA_DIR=/")),
        "the unit says where the media folder is on the host"
    );
    let env =
        std::fs::read_to_string(root().join("deploy/gallery.env.example")).expect("env example");
    let vars: Vec<(String, String)> = env
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let config = noodle_migrate::config::Config::from_vars(&noodle_migrate::config::Vars::new(
        vars.into_iter().collect(),
    ));
    assert!(
        config.is_ok(),
        "the example settings load: {:?}",
        config.err()
    );
}

#[test]
fn the_proxy_sends_the_gallerys_storage_migration_routes_to_the_engine() {
    let caddy = std::fs::read_to_string(root().join("deploy/Caddyfile")).expect("Caddyfile");
    let lines: Vec<&str> = caddy
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    // Braces balance, and the route's block proxies to the engine's
    // default address, which serves that path as it is.
    assert_eq!(
        caddy.matches('{').count(),
        caddy.matches('}').count(),
        "balanced blocks"
    );
    let route = lines
        .iter()
        .position(|l| *l == "handle /api/storage-migration/* {")
        .expect("a handle for the gallery's storage-migration API");
    assert_eq!(
        lines[route + 1],
        format!("reverse_proxy {}", noodle_migrate::config::DEFAULT_LISTEN)
    );
    // The gallery gets everything else.
    assert!(lines.contains(&"handle {"));
}

#[test]
fn the_playground_scales_out_with_workers() {
    let compose = yaml(&root().join("deploy/compose.yml"));
    let worker = &compose["services"]["worker"];
    assert_eq!(
        worker["command"][0], "worker",
        "`--scale worker=N` runs workers"
    );
    assert_eq!(
        worker["volumes"], compose["services"]["noodle-migrate"]["volumes"],
        "a worker sees the media folder where the engine does"
    );
    assert_eq!(
        worker["env_file"],
        compose["services"]["noodle-migrate"]["env_file"]
    );
    let prometheus = yaml(&root().join("dashboards/prometheus.yml"));
    let jobs = prometheus["scrape_configs"].as_sequence().expect("jobs");
    assert!(
        jobs.iter()
            .any(|j| j["dns_sd_configs"][0]["names"][0] == "worker"),
        "Prometheus scrapes every worker replica"
    );
}

#[test]
fn the_kubernetes_example_passes_the_kubernetes_schemas() {
    let file = root().join("deploy/kubernetes/noodle-migrate.yaml");
    let out = std::process::Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(&file)
        .output()
        .expect("kubernetes-validate (make test installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).expect("manifest");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .collect();
    let args: Vec<String> = docs
        .iter()
        .filter(|d| d["kind"] == "Deployment")
        .map(|d| {
            d["spec"]["template"]["spec"]["containers"][0]["args"][0]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(args, ["serve", "worker"], "an engine and its workers");
    let worker = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "noodle-migrate-worker")
        .expect("the workers' Deployment");
    let mounts = &worker["spec"]["template"]["spec"]["containers"][0]["volumeMounts"];
    assert_eq!(
        mounts[0]["mountPath"], "/data",
        "the media folder where the gallery sees it"
    );
}
