//! Settings, read from the environment with the gallery's own variable names,
//! optionally completed from a gallery `.env` file.
//!
//! A bad or missing setting is an error naming the variable. Secrets live in
//! `Secret` so they never reach a log line or an error message.

use crate::model::Backend;
use crate::paths::PathStyle;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default listen address: loopback, so nothing is exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8385";

/// Database dumps kept by default, as the gallery does.
pub const DEFAULT_DUMP_KEEP: usize = 14;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: {message}")]
    Invalid { var: &'static str, message: String },
    #[error("{var} is required")]
    Missing { var: &'static str },
    #[error("{first} and {second} are both set, to different values: set only one of them")]
    Conflict {
        first: &'static str,
        second: &'static str,
    },
    #[error("cannot read env file {path}: {message}")]
    EnvFile { path: String, message: String },
}

fn invalid(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        message: message.into(),
    }
}

/// A value that prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Server-side encryption for uploaded objects (`S3_SSE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    Aes256,
    Kms { key_id: Option<String> },
}

#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub use_accelerate: bool,
    pub sse: Option<Sse>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: Secret,
    /// `IMMICH_MEDIA_LOCATION`: absolute, without a trailing slash. When
    /// unset, the location the gallery recorded in its database applies
    /// (see [`crate::engine::media`]).
    pub media_location: Option<String>,
    /// `NOODLE_MIGRATE_MEDIA_DIR`: where the gallery's media folder is on
    /// this machine, when it is mounted somewhere else than the location
    /// the gallery's paths are written with.
    pub media_dir: Option<PathBuf>,
    /// The backend the gallery sends new uploads to, when configured.
    pub storage_backend: Option<Backend>,
    /// How the gallery writes S3 paths, from the variable that names its
    /// backend.
    pub path_style: PathStyle,
    pub s3: S3Config,
    pub listen: SocketAddr,
    pub api_token: Option<Secret>,
    /// Database dumps kept after each new one (`NOODLE_MIGRATE_DUMP_KEEP`);
    /// when unset, the gallery's own setting, else 14.
    pub dump_keep: Option<usize>,
    /// How long a SIGTERM (or Ctrl-C) waits for the files in flight before
    /// the process exits (`NOODLE_MIGRATE_SHUTDOWN_SECS`, default 30).
    pub shutdown_deadline: Duration,
    /// How long a chunk stays leased to a process that stopped renewing
    /// it (died, or lost the database) before another takes it over
    /// (`NOODLE_MIGRATE_LEASE_SECS`, default 30).
    pub lease_secs: u64,
    /// The pg_dump to run (`NOODLE_MIGRATE_PG_DUMP`); found by server
    /// version when unset.
    pub pg_dump: Option<PathBuf>,
    /// Re-read before each start so the backend check sees the gallery's
    /// current setting, not the one from when the engine started.
    pub env_file: Option<PathBuf>,
    /// Where the final status of each run is POSTed
    /// (`NOODLE_MIGRATE_WEBHOOK_URL`).
    pub webhook: Option<Webhook>,
    /// The Grafana dashboard the admin page links to
    /// (`NOODLE_MIGRATE_GRAFANA_URL`).
    pub grafana_url: Option<String>,
}

/// A URL to notify, which may carry a secret (a password, a token in the
/// query): only [`Webhook::shown`] is ever logged.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: Secret,
    /// Scheme, host and port: what logs may say.
    pub shown: String,
}

/// An http:// or https:// URL with a host, as given.
fn web_url(name: &'static str, value: &str) -> Result<String, ConfigError> {
    let url = url::Url::parse(value).map_err(|e| invalid(name, format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(
            name,
            "must be an http:// or https:// URL with a host",
        ));
    }
    Ok(value.to_string())
}

impl Webhook {
    fn parse(value: &str) -> Result<Webhook, ConfigError> {
        let name = "NOODLE_MIGRATE_WEBHOOK_URL";
        let url = url::Url::parse(value).map_err(|e| invalid(name, format!("not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(name, "must be an http:// or https:// URL"));
        }
        let host = url
            .host_str()
            .ok_or_else(|| invalid(name, "the URL has no host"))?;
        let shown = match url.port() {
            Some(port) => format!("{}://{host}:{port}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        };
        Ok(Webhook {
            url: Secret::new(value),
            shown,
        })
    }
}

/// Where settings come from: looked up by name, empty values count as unset.
pub struct Vars(HashMap<String, String>);

impl Vars {
    pub fn new(map: HashMap<String, String>) -> Vars {
        Vars(map)
    }

    /// The process environment, completed (never overridden) by an env file.
    pub fn from_env(env_file: Option<&Path>) -> Result<Vars, ConfigError> {
        let mut map: HashMap<String, String> = std::env::vars().collect();
        if let Some(path) = env_file {
            for (key, value) in read_env_file(path)? {
                map.entry(key).or_insert(value);
            }
        }
        Ok(Vars(map))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// A setting the gallery spells two ways (`S3_BUCKET`,
    /// `IMMICH_S3_BUCKET`): either spelling, or both with the same value.
    /// Two different values are an error, never a silent choice.
    fn either(
        &self,
        first: &'static str,
        second: &'static str,
    ) -> Result<Option<(&'static str, &str)>, ConfigError> {
        match (self.get(first), self.get(second)) {
            (Some(a), Some(b)) if a != b => Err(ConfigError::Conflict { first, second }),
            (Some(a), _) => Ok(Some((first, a))),
            (None, Some(b)) => Ok(Some((second, b))),
            (None, None) => Ok(None),
        }
    }
}

pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let iter = dotenvy::from_path_iter(path).map_err(|e| ConfigError::EnvFile {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    iter.map(|item| {
        item.map_err(|e| ConfigError::EnvFile {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    })
    .collect()
}

fn parse_bool(var: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(invalid(
            var,
            format!("expected true or false, got {value:?}"),
        )),
    }
}

/// The gallery's backend for new uploads, and how it writes S3 paths.
///
/// The variable that names the backend tells which gallery this is:
/// `IMMICH_STORAGE_BACKEND` (`disk` | `s3`) is the Noodle Gallery, which
/// stores an object's key as its path; `IMMICH_STORAGE_ENGINE` (`local` |
/// `s3`) is the gallery that stores `s3://bucket/prefix/…` URLs. Both at
/// once would leave the path form to a guess, so that is refused. Neither
/// means disk, as the gallery reads it.
pub fn storage_backend(vars: &Vars) -> Result<(Option<Backend>, PathStyle), ConfigError> {
    const BACKEND: &str = "IMMICH_STORAGE_BACKEND";
    const ENGINE: &str = "IMMICH_STORAGE_ENGINE";
    let parse = |var: &'static str, value: &str, disk: &str| match value.to_ascii_lowercase() {
        v if v == disk => Ok(Backend::Disk),
        v if v == "s3" => Ok(Backend::S3),
        _ => Err(invalid(
            var,
            format!("expected {disk} or s3, got {value:?}"),
        )),
    };
    match (vars.get(BACKEND), vars.get(ENGINE)) {
        (Some(_), Some(_)) => Err(invalid(
            BACKEND,
            "IMMICH_STORAGE_ENGINE is set as well; they describe two different galleries (object keys as paths, or s3:// URLs as paths): set only the one your gallery reads",
        )),
        (Some(v), None) => Ok((Some(parse(BACKEND, v, "disk")?), PathStyle::Key)),
        (None, Some(v)) => Ok((Some(parse(ENGINE, v, "local")?), PathStyle::S3Url)),
        (None, None) => Ok((None, PathStyle::Key)),
    }
}

fn database_url(vars: &Vars) -> Result<Secret, ConfigError> {
    if let Some(url) = vars.get("DB_URL") {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid(
                "DB_URL",
                "expected a postgres:// or postgresql:// URL",
            ));
        }
        return Ok(Secret::new(url));
    }
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let host = vars.get("DB_HOSTNAME").unwrap_or("database");
    let port = match vars.get("DB_PORT") {
        None => 5432,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| invalid("DB_PORT", format!("expected a port number, got {p:?}")))?,
    };
    let user = vars.get("DB_USERNAME").unwrap_or("postgres");
    let password = vars.get("DB_PASSWORD").unwrap_or("postgres");
    let name = vars.get("DB_DATABASE_NAME").unwrap_or("immich");
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Ok(Secret::new(format!(
        "postgres://{}:{}@{}:{}/{}",
        utf8_percent_encode(user, NON_ALPHANUMERIC),
        utf8_percent_encode(password, NON_ALPHANUMERIC),
        host,
        port,
        utf8_percent_encode(name, NON_ALPHANUMERIC),
    )))
}

/// How `variable` spells `backend` (`IMMICH_STORAGE_ENGINE` calls disk
/// `local`).
pub fn backend_value(variable: &str, backend: Backend) -> &'static str {
    match (variable, backend) {
        ("IMMICH_STORAGE_ENGINE", Backend::Disk) => "local",
        (_, backend) => backend.as_str(),
    }
}

/// An absolute folder, without `..` and without a trailing slash.
pub fn absolute_folder(var: &'static str, value: &str) -> Result<String, ConfigError> {
    if !value.starts_with('/') {
        return Err(invalid(var, "must be an absolute path"));
    }
    if value.split('/').any(|s| s == "..") {
        return Err(invalid(var, "must not contain .."));
    }
    if value.contains('\0') {
        return Err(invalid(var, "must not contain a NUL byte"));
    }
    let trimmed = value.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    })
}

fn s3_config(vars: &Vars, style: PathStyle) -> Result<S3Config, ConfigError> {
    let (bucket_var, bucket) = vars
        .either("S3_BUCKET", "IMMICH_S3_BUCKET")?
        .ok_or(ConfigError::Missing { var: "S3_BUCKET" })?;
    if bucket.contains('/') || bucket.len() > 255 {
        return Err(invalid(bucket_var, "not a valid bucket name"));
    }
    let bucket = bucket.to_string();
    let region = vars
        .either("S3_REGION", "IMMICH_S3_REGION")?
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| "us-east-1".into());
    let prefix = vars
        .get("S3_PREFIX")
        .unwrap_or("")
        .trim_matches('/')
        .to_string();
    if crate::paths::check_relative(&prefix).is_err() && !prefix.is_empty() {
        return Err(invalid(
            "S3_PREFIX",
            "must be a plain key prefix without . or .. segments",
        ));
    }
    if !prefix.is_empty() && style == PathStyle::Key && vars.get("IMMICH_STORAGE_BACKEND").is_some()
    {
        // The Noodle Gallery reads each object at exactly the key its row
        // stores; a prefix would put every object where it never looks.
        return Err(invalid(
            "S3_PREFIX",
            "the gallery named by IMMICH_STORAGE_BACKEND stores each object's key as its path and has no key prefix; unset S3_PREFIX (a prefix is only for galleries configured with IMMICH_STORAGE_ENGINE, which store s3://bucket/prefix/... paths)",
        ));
    }
    let endpoint = match vars.either("S3_ENDPOINT", "IMMICH_S3_ENDPOINT")? {
        None => None,
        Some((var, value)) => {
            let url =
                url::Url::parse(value).map_err(|e| invalid(var, format!("not a URL ({e})")))?;
            if url.scheme() != "http" && url.scheme() != "https" {
                return Err(invalid(var, "expected an http:// or https:// URL"));
            }
            Some(value.trim_end_matches('/').to_string())
        }
    };
    // Custom endpoints (MinIO, Garage, Ceph) nearly always need path-style
    // addressing; AWS itself prefers virtual-hosted style.
    let force_path_style = match vars.get("S3_FORCE_PATH_STYLE") {
        Some(v) => parse_bool("S3_FORCE_PATH_STYLE", v)?,
        None => endpoint.is_some(),
    };
    let access_key_id = vars
        .either("S3_ACCESS_KEY_ID", "IMMICH_S3_ACCESS_KEY_ID")?
        .map(|(_, v)| v.to_string());
    let secret_access_key = vars
        .either("S3_SECRET_ACCESS_KEY", "IMMICH_S3_SECRET_ACCESS_KEY")?
        .map(|(_, v)| Secret::new(v));
    match (&access_key_id, &secret_access_key) {
        (Some(_), None) => {
            return Err(ConfigError::Missing {
                var: "S3_SECRET_ACCESS_KEY",
            })
        }
        (None, Some(_)) => {
            return Err(ConfigError::Missing {
                var: "S3_ACCESS_KEY_ID",
            })
        }
        _ => {}
    }
    let use_accelerate = match vars.get("S3_USE_ACCELERATE") {
        Some(v) => parse_bool("S3_USE_ACCELERATE", v)?,
        None => false,
    };
    if use_accelerate && endpoint.is_some() {
        return Err(invalid(
            "S3_USE_ACCELERATE",
            "cannot be used with a custom S3_ENDPOINT",
        ));
    }
    let kms_key = vars.get("S3_SSE_KMS_KEY_ID").map(str::to_string);
    let sse = match vars.get("S3_SSE") {
        None => None,
        Some(v) if v.eq_ignore_ascii_case("AES256") => Some(Sse::Aes256),
        Some(v) if v.eq_ignore_ascii_case("aws:kms") => Some(Sse::Kms {
            key_id: kms_key.clone(),
        }),
        Some(v) => {
            return Err(invalid(
                "S3_SSE",
                format!("expected AES256 or aws:kms, got {v:?}"),
            ))
        }
    };
    if kms_key.is_some() && !matches!(sse, Some(Sse::Kms { .. })) {
        return Err(invalid(
            "S3_SSE_KMS_KEY_ID",
            "is only used with S3_SSE=aws:kms",
        ));
    }
    Ok(S3Config {
        bucket,
        region,
        prefix,
        endpoint,
        force_path_style,
        access_key_id,
        secret_access_key,
        use_accelerate,
        sse,
    })
}

/// A whole-number setting from `min` to `max`, or unset.
fn whole_number(
    vars: &Vars,
    name: &'static str,
    min: usize,
    max: usize,
) -> Result<Option<usize>, ConfigError> {
    let Some(v) = vars.get(name) else {
        return Ok(None);
    };
    v.parse::<usize>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .map(Some)
        .ok_or_else(|| {
            invalid(
                name,
                format!("expected a whole number from {min} to {max}, got {v:?}"),
            )
        })
}

impl Config {
    /// Reads the process environment (and `env_file`, when given).
    pub fn load(env_file: Option<&Path>) -> Result<Config, ConfigError> {
        let vars = Vars::from_env(env_file)?;
        let mut config = Config::from_vars(&vars)?;
        config.env_file = env_file.map(Path::to_path_buf);
        Ok(config)
    }

    pub fn from_vars(vars: &Vars) -> Result<Config, ConfigError> {
        let listen_value = vars.get("NOODLE_MIGRATE_LISTEN").unwrap_or(DEFAULT_LISTEN);
        let listen = listen_value.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "NOODLE_MIGRATE_LISTEN",
                format!("expected host:port such as {DEFAULT_LISTEN}, got {listen_value:?}"),
            )
        })?;
        let api_token = match vars.get("NOODLE_MIGRATE_API_TOKEN") {
            None => None,
            Some(t) if t.len() < 16 => {
                return Err(invalid(
                    "NOODLE_MIGRATE_API_TOKEN",
                    "must be at least 16 characters",
                ))
            }
            Some(t) => Some(Secret::new(t)),
        };
        let dump_keep = whole_number(vars, "NOODLE_MIGRATE_DUMP_KEEP", 1, 10_000)?;
        let shutdown_secs = whole_number(vars, "NOODLE_MIGRATE_SHUTDOWN_SECS", 1, 3_600)?;
        let lease_secs = whole_number(vars, "NOODLE_MIGRATE_LEASE_SECS", 2, 3_600)?;
        let pg_dump = vars.get("NOODLE_MIGRATE_PG_DUMP").map(PathBuf::from);
        let media_location = vars
            .get("IMMICH_MEDIA_LOCATION")
            .map(|v| absolute_folder("IMMICH_MEDIA_LOCATION", v))
            .transpose()?;
        let media_dir = vars
            .get("NOODLE_MIGRATE_MEDIA_DIR")
            .map(|v| absolute_folder("NOODLE_MIGRATE_MEDIA_DIR", v).map(PathBuf::from))
            .transpose()?;
        let (storage_backend, path_style) = storage_backend(vars)?;
        let webhook = vars
            .get("NOODLE_MIGRATE_WEBHOOK_URL")
            .map(Webhook::parse)
            .transpose()?;
        let grafana_url = vars
            .get("NOODLE_MIGRATE_GRAFANA_URL")
            .map(|v| web_url("NOODLE_MIGRATE_GRAFANA_URL", v))
            .transpose()?;
        Ok(Config {
            database_url: database_url(vars)?,
            media_location,
            media_dir,
            storage_backend,
            path_style,
            s3: s3_config(vars, path_style)?,
            listen,
            api_token,
            dump_keep,
            shutdown_deadline: Duration::from_secs(shutdown_secs.unwrap_or(30) as u64),
            lease_secs: lease_secs.unwrap_or(30) as u64,
            pg_dump,
            env_file: None,
            webhook,
            grafana_url,
        })
    }

    /// Where the gallery keeps its files now (and so its dumps): the
    /// configured backend, or disk, the gallery's default.
    pub async fn active_backend(&self) -> Result<Backend, ConfigError> {
        Ok(self
            .current_storage_backend()
            .await?
            .unwrap_or(Backend::Disk))
    }

    /// The gallery's backend as it is configured now: from the env file when
    /// there is one (the gallery may have been switched since we started).
    /// A switch to the other gallery's variable (and so the other path
    /// form) needs a restart of the engine. The file is read on a blocking
    /// thread: it may sit on a slow or network file system.
    pub async fn current_storage_backend(&self) -> Result<Option<Backend>, ConfigError> {
        let Some(path) = self.env_file.clone() else {
            return Ok(self.storage_backend);
        };
        let shown = path.display().to_string();
        let from_file = tokio::task::spawn_blocking(move || read_env_file(&path))
            .await
            .map_err(|e| ConfigError::EnvFile {
                path: shown,
                message: e.to_string(),
            })??;
        let mut map: HashMap<String, String> = HashMap::new();
        for var in ["IMMICH_STORAGE_BACKEND", "IMMICH_STORAGE_ENGINE"] {
            if let Ok(v) = std::env::var(var) {
                map.insert(var.into(), v);
            }
        }
        for (k, v) in from_file {
            map.entry(k).or_insert(v);
        }
        let (backend, style) = storage_backend(&Vars::new(map))?;
        if backend.is_some() && style != self.path_style {
            return Err(invalid(
                "IMMICH_STORAGE_BACKEND",
                "the env file now names the backend with the other variable (IMMICH_STORAGE_BACKEND / IMMICH_STORAGE_ENGINE), which changes how paths are written: restart noodle-migrate",
            ));
        }
        Ok(backend)
    }

    /// The variable a user sets to name the backend, in messages.
    pub fn backend_variable(&self) -> &'static str {
        match self.path_style {
            PathStyle::Key => "IMMICH_STORAGE_BACKEND",
            PathStyle::S3Url => "IMMICH_STORAGE_ENGINE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        let mut map: HashMap<String, String> = [("S3_BUCKET", "photos")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in pairs {
            map.insert(k.to_string(), v.to_string());
        }
        Vars::new(map)
    }

    #[test]
    fn defaults() {
        let c = Config::from_vars(&vars(&[("IMMICH_MEDIA_LOCATION", "/srv/media/")])).unwrap();
        assert_eq!(c.media_location.as_deref(), Some("/srv/media"));
        assert_eq!(c.media_dir, None);
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.lease_secs, 30);
        assert_eq!(c.storage_backend, None);
        assert_eq!(c.path_style, PathStyle::Key);
        assert_eq!(c.s3.region, "us-east-1");
        assert_eq!(c.dump_keep, None);
        assert_eq!(c.pg_dump, None);
        assert!(!c.s3.force_path_style);
        assert_eq!(
            c.database_url.expose(),
            "postgres://postgres:postgres@database:5432/immich"
        );
    }

    #[test]
    fn a_webhook_is_shown_without_its_secrets() {
        let c = Config::from_vars(&vars(&[(
            "NOODLE_MIGRATE_WEBHOOK_URL",
            "https://ops:hunter2@hooks.example.test:8443/done?token=s3cr3t",
        )]))
        .unwrap();
        let webhook = c.webhook.expect("a webhook");
        assert_eq!(webhook.shown, "https://hooks.example.test:8443");
        assert!(webhook.url.expose().contains("token=s3cr3t"));
        assert!(!format!("{webhook:?}").contains("hunter2"));
        for bad in ["ftp://hooks.example.test/x", "not a url", "http://"] {
            let e = Config::from_vars(&vars(&[("NOODLE_MIGRATE_WEBHOOK_URL", bad)]))
                .expect_err(bad)
                .to_string();
            assert!(e.contains("NOODLE_MIGRATE_WEBHOOK_URL"), "{e}");
        }
        assert!(Config::from_vars(&vars(&[])).unwrap().webhook.is_none());
    }

    #[test]
    fn the_grafana_link_must_be_a_web_url() {
        let c = Config::from_vars(&vars(&[(
            "NOODLE_MIGRATE_GRAFANA_URL",
            "https://grafana.example.test/d/noodle-migrate",
        )]))
        .unwrap();
        assert_eq!(
            c.grafana_url.as_deref(),
            Some("https://grafana.example.test/d/noodle-migrate")
        );
        for bad in ["javascript:alert(1)", "grafana", "file:///etc/passwd"] {
            let e = Config::from_vars(&vars(&[("NOODLE_MIGRATE_GRAFANA_URL", bad)]))
                .expect_err(bad)
                .to_string();
            assert!(e.contains("NOODLE_MIGRATE_GRAFANA_URL"), "{e}");
        }
    }

    #[test]
    fn database_parts_are_encoded() {
        let c = Config::from_vars(&vars(&[
            ("DB_HOSTNAME", "db"),
            ("DB_PORT", "6543"),
            ("DB_USERNAME", "gal"),
            ("DB_PASSWORD", "p@ss/word"),
            ("DB_DATABASE_NAME", "gallery"),
        ]))
        .unwrap();
        assert_eq!(
            c.database_url.expose(),
            "postgres://gal:p%40ss%2Fword@db:6543/gallery"
        );
        assert!(!format!("{c:?}").contains("p@ss"));
    }

    #[test]
    fn gallery_spellings_are_accepted() {
        let mut map = HashMap::new();
        map.insert("IMMICH_S3_BUCKET".to_string(), "b".to_string());
        map.insert(
            "IMMICH_S3_ENDPOINT".to_string(),
            "http://127.0.0.1:9000".to_string(),
        );
        map.insert("IMMICH_S3_ACCESS_KEY_ID".to_string(), "k".to_string());
        map.insert("IMMICH_S3_SECRET_ACCESS_KEY".to_string(), "s".to_string());
        map.insert("IMMICH_STORAGE_ENGINE".to_string(), "s3".to_string());
        let c = Config::from_vars(&Vars::new(map)).unwrap();
        assert_eq!(c.s3.bucket, "b");
        assert!(c.s3.force_path_style);
        assert_eq!(c.storage_backend, Some(Backend::S3));
        assert_eq!(c.path_style, PathStyle::S3Url);
    }

    #[test]
    fn the_backend_variable_tells_the_path_form() {
        let c = Config::from_vars(&vars(&[("IMMICH_STORAGE_BACKEND", "s3")])).unwrap();
        assert_eq!(c.path_style, PathStyle::Key);
        assert_eq!(c.backend_variable(), "IMMICH_STORAGE_BACKEND");
        let c = Config::from_vars(&vars(&[
            ("IMMICH_STORAGE_ENGINE", "local"),
            ("S3_PREFIX", "gallery"),
        ]))
        .unwrap();
        assert_eq!(c.storage_backend, Some(Backend::Disk));
        assert_eq!(c.path_style, PathStyle::S3Url);
        assert_eq!(c.s3.prefix, "gallery");
        assert_eq!(backend_value(c.backend_variable(), Backend::Disk), "local");
        // Both at once would leave the path form to a guess.
        let err = Config::from_vars(&vars(&[
            ("IMMICH_STORAGE_BACKEND", "s3"),
            ("IMMICH_STORAGE_ENGINE", "s3"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("IMMICH_STORAGE_BACKEND") && err.contains("IMMICH_STORAGE_ENGINE"));
        // `disk` is the Noodle Gallery's word, `local` the other's.
        assert!(Config::from_vars(&vars(&[("IMMICH_STORAGE_BACKEND", "local")])).is_err());
        assert!(Config::from_vars(&vars(&[("IMMICH_STORAGE_ENGINE", "disk")])).is_err());
    }

    #[test]
    fn the_noodle_gallery_has_no_prefix() {
        let err = Config::from_vars(&vars(&[
            ("IMMICH_STORAGE_BACKEND", "s3"),
            ("S3_PREFIX", "photos"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("S3_PREFIX"), "{err}");
        assert!(err.contains("IMMICH_STORAGE_BACKEND"), "{err}");
    }

    #[test]
    fn two_spellings_with_two_values_are_refused() {
        for (a, b) in [
            ("S3_BUCKET", "IMMICH_S3_BUCKET"),
            ("S3_REGION", "IMMICH_S3_REGION"),
            ("S3_ENDPOINT", "IMMICH_S3_ENDPOINT"),
            ("S3_ACCESS_KEY_ID", "IMMICH_S3_ACCESS_KEY_ID"),
            ("S3_SECRET_ACCESS_KEY", "IMMICH_S3_SECRET_ACCESS_KEY"),
        ] {
            let value = |v: &str| {
                if a.ends_with("ENDPOINT") {
                    format!("http://{v}:9000")
                } else {
                    v.to_string()
                }
            };
            let mut map: HashMap<String, String> = HashMap::new();
            map.insert(a.into(), value("one"));
            map.insert(b.into(), value("two"));
            for (k, v) in [
                ("S3_BUCKET", "b"),
                ("S3_ACCESS_KEY_ID", "k"),
                ("S3_SECRET_ACCESS_KEY", "s"),
            ] {
                map.entry(k.into()).or_insert(v.into());
            }
            let err = Config::from_vars(&Vars::new(map.clone()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(a) && err.contains(b), "{err}");
            // The same value twice is one setting.
            map.insert(b.into(), value("one"));
            let c = Config::from_vars(&Vars::new(map));
            assert!(c.is_ok(), "{a}: {:?}", c.err());
        }
    }

    #[test]
    fn the_media_dir_is_an_absolute_folder() {
        let c = Config::from_vars(&vars(&[("NOODLE_MIGRATE_MEDIA_DIR", "/mnt/gallery/")])).unwrap();
        assert_eq!(c.media_dir, Some(PathBuf::from("/mnt/gallery")));
        for bad in ["mnt/gallery", "/mnt/../etc"] {
            let err = Config::from_vars(&vars(&[("NOODLE_MIGRATE_MEDIA_DIR", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("NOODLE_MIGRATE_MEDIA_DIR"), "{err}");
        }
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("DB_PORT", "abc")], "DB_PORT"),
            (&[("DB_URL", "mysql://x")], "DB_URL"),
            (
                &[("IMMICH_STORAGE_BACKEND", "tape")],
                "IMMICH_STORAGE_BACKEND",
            ),
            (&[("S3_FORCE_PATH_STYLE", "maybe")], "S3_FORCE_PATH_STYLE"),
            (&[("S3_SSE", "rot13")], "S3_SSE"),
            (&[("S3_ENDPOINT", "ftp://x")], "S3_ENDPOINT"),
            (&[("S3_ACCESS_KEY_ID", "k")], "S3_SECRET_ACCESS_KEY"),
            (
                &[("NOODLE_MIGRATE_LISTEN", "everywhere")],
                "NOODLE_MIGRATE_LISTEN",
            ),
            (
                &[("NOODLE_MIGRATE_API_TOKEN", "short")],
                "NOODLE_MIGRATE_API_TOKEN",
            ),
            (
                &[("IMMICH_MEDIA_LOCATION", "relative/dir")],
                "IMMICH_MEDIA_LOCATION",
            ),
            (&[("S3_BUCKET", "")], "S3_BUCKET"),
            (
                &[("NOODLE_MIGRATE_DUMP_KEEP", "0")],
                "NOODLE_MIGRATE_DUMP_KEEP",
            ),
            (
                &[("NOODLE_MIGRATE_DUMP_KEEP", "many")],
                "NOODLE_MIGRATE_DUMP_KEEP",
            ),
            (
                &[("NOODLE_MIGRATE_SHUTDOWN_SECS", "0")],
                "NOODLE_MIGRATE_SHUTDOWN_SECS",
            ),
            (
                &[("NOODLE_MIGRATE_LEASE_SECS", "1")],
                "NOODLE_MIGRATE_LEASE_SECS",
            ),
            (
                &[("NOODLE_MIGRATE_LEASE_SECS", "30s")],
                "NOODLE_MIGRATE_LEASE_SECS",
            ),
        ];
        for (pairs, var) in cases {
            let err = Config::from_vars(&vars(pairs)).unwrap_err().to_string();
            assert!(err.starts_with(var), "{err} should name {var}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let c = Config::from_vars(&vars(&[
            ("S3_ACCESS_KEY_ID", "AKIA"),
            ("S3_SECRET_ACCESS_KEY", "very-secret-key"),
            ("NOODLE_MIGRATE_API_TOKEN", "token-token-token-1"),
        ]))
        .unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("very-secret-key"));
        assert!(!printed.contains("token-token-token-1"));
    }

    /// A slow env file (here a pipe nobody writes yet) stalls only the
    /// start that reads it, never the thread the engine's other work runs
    /// on.
    #[tokio::test(flavor = "current_thread")]
    async fn the_env_file_is_read_off_the_async_thread() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("gallery.env");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let mut config = Config::from_vars(&vars(&[])).unwrap();
        config.env_file = Some(fifo.clone());
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(500));
            std::fs::write(&fifo, "IMMICH_STORAGE_BACKEND=s3\n").unwrap();
        });
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let backend = config.current_storage_backend().await.unwrap();
        ticker.abort();
        writer.join().unwrap();
        assert_eq!(backend, Some(Backend::S3));
        let ticked = ticks.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            ticked >= 5,
            "the runtime stood still while the file was read ({ticked} ticks)"
        );
    }
}
