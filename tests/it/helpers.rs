//! Test harness: every test gets its own database (with the gallery's
//! schema), its own media folder and its own bucket on the loopback S3
//! server, and talks to a real engine over HTTP on a free port.

use crate::seed::{self, SeedSpec, Seeded};
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use noodle_migrate::config::{Config, Vars};
use noodle_migrate::http::Application;
use noodle_migrate::model::FileKind;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;
use uuid::Uuid;

pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}
pub fn s3_endpoint() -> String {
    std::env::var("TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:8014".into())
}
pub fn s3_access_key() -> String {
    std::env::var("TEST_S3_ACCESS_KEY").unwrap_or_else(|_| "nmtest".into())
}
pub fn s3_secret_key() -> String {
    std::env::var("TEST_S3_SECRET_KEY").unwrap_or_else(|_| "nmtestsecret".into())
}

pub async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to {url} ({e}); run `make test` or set TEST_DATABASE_URL")
        });
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

pub fn s3_client() -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .endpoint_url(s3_endpoint())
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            s3_access_key(),
            s3_secret_key(),
            None,
            None,
            "tests",
        ))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

pub struct EnvOptions {
    pub spec: SeedSpec,
    /// Create `storage_migration_log` the way the gallery does, before
    /// the engine starts (otherwise the engine creates it).
    pub gallery_log_table: bool,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            spec: SeedSpec::default(),
            gallery_log_table: true,
        }
    }
}

pub struct TestEnv {
    pub db_url: String,
    pub db: tokio_postgres::Client,
    pub media: TempDir,
    /// Holds external-library files; kept alive for the test.
    _outside: TempDir,
    pub bucket: String,
    pub s3: aws_sdk_s3::Client,
    pub seeded: Seeded,
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub token: Option<String>,
}

impl TestEnv {
    pub async fn new(options: EnvOptions) -> TestEnv {
        let name = format!("nm_test_{}", Uuid::new_v4().simple());
        let admin = pg(&admin_url()).await;
        admin
            .batch_execute(&format!(r#"CREATE DATABASE "{name}""#))
            .await
            .expect("create test database");
        let mut url = url::Url::parse(&admin_url()).expect("TEST_DATABASE_URL");
        url.set_path(&format!("/{name}"));
        let db_url = url.to_string();
        let db = pg(&db_url).await;
        seed::create_schema(&db, options.gallery_log_table).await;

        let media = tempfile::Builder::new()
            .prefix("nm-media-")
            .tempdir()
            .expect("media dir");
        let outside = tempfile::Builder::new()
            .prefix("nm-outside-")
            .tempdir()
            .expect("outside dir");
        let seeded = seed::seed(&db, media.path(), outside.path(), &options.spec).await;

        let bucket = format!("nm-{}", &Uuid::new_v4().simple().to_string()[..16]);
        let s3 = s3_client();
        s3.create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot create a bucket at {} ({e:?}); run `make test` or set TEST_S3_ENDPOINT",
                    s3_endpoint()
                )
            });
        TestEnv {
            db_url,
            db,
            media,
            _outside: outside,
            bucket,
            s3,
            seeded,
        }
    }

    pub fn media_path(&self) -> &Path {
        self.media.path()
    }

    /// The settings a gallery next to this env would have. Without a
    /// prefix, the Noodle Gallery's (`IMMICH_STORAGE_BACKEND`, object keys
    /// as paths); with one, the gallery that stores `s3://` URLs
    /// (`IMMICH_STORAGE_ENGINE`, `S3_PREFIX`).
    pub fn vars(&self, backend: &str, prefix: &str) -> HashMap<String, String> {
        let (variable, value) = match (prefix, backend) {
            ("", _) => ("IMMICH_STORAGE_BACKEND", backend),
            (_, "disk") => ("IMMICH_STORAGE_ENGINE", "local"),
            _ => ("IMMICH_STORAGE_ENGINE", backend),
        };
        let mut vars: HashMap<String, String> = [
            ("DB_URL", self.db_url.as_str()),
            (
                "IMMICH_MEDIA_LOCATION",
                &self.media.path().display().to_string(),
            ),
            (variable, value),
            ("S3_BUCKET", &self.bucket),
            ("S3_ENDPOINT", &s3_endpoint()),
            ("S3_ACCESS_KEY_ID", &s3_access_key()),
            ("S3_SECRET_ACCESS_KEY", &s3_secret_key()),
            ("NOODLE_MIGRATE_LISTEN", "127.0.0.1:0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if !prefix.is_empty() {
            vars.insert("S3_PREFIX".into(), prefix.into());
        }
        vars
    }

    pub async fn spawn(&self, vars: HashMap<String, String>) -> TestApp {
        let token = vars.get("NOODLE_MIGRATE_API_TOKEN").cloned();
        let config = Config::from_vars(&Vars::new(vars)).expect("test config");
        let app = Application::build(config).await.expect("engine starts");
        let base = format!("http://127.0.0.1:{}", app.port());
        actix_rt::spawn(app.run_until_stopped());
        TestApp {
            base,
            http: reqwest::Client::new(),
            token,
        }
    }

    pub async fn app(&self, backend: &str, prefix: &str) -> TestApp {
        self.spawn(self.vars(backend, prefix)).await
    }

    pub async fn current_path(&self, kind: FileKind, row_id: Uuid) -> String {
        let sql = match kind {
            FileKind::Originals => r#"SELECT "originalPath" FROM asset WHERE id = $1"#,
            FileKind::PersonThumbnails => r#"SELECT "thumbnailPath" FROM person WHERE id = $1"#,
            FileKind::ProfileImages => r#"SELECT "profileImagePath" FROM "user" WHERE id = $1"#,
            _ => r#"SELECT path FROM asset_file WHERE id = $1"#,
        };
        self.db
            .query_one(sql, &[&row_id])
            .await
            .expect("row")
            .get(0)
    }

    pub async fn set_path(&self, kind: FileKind, row_id: Uuid, path: &str) {
        let sql = match kind {
            FileKind::Originals => r#"UPDATE asset SET "originalPath" = $2 WHERE id = $1"#,
            FileKind::PersonThumbnails => r#"UPDATE person SET "thumbnailPath" = $2 WHERE id = $1"#,
            FileKind::ProfileImages => r#"UPDATE "user" SET "profileImagePath" = $2 WHERE id = $1"#,
            _ => r#"UPDATE asset_file SET path = $2 WHERE id = $1"#,
        };
        assert_eq!(
            self.db
                .execute(sql, &[&row_id, &path])
                .await
                .expect("update"),
            1
        );
    }

    /// Adds an original (row and file) for the first seeded user.
    pub async fn insert_original(&self, id: Uuid, path: &str, data: &[u8]) {
        use sha1::Digest as _;
        let file = std::path::Path::new(path);
        std::fs::create_dir_all(file.parent().expect("folder")).expect("mkdir");
        std::fs::write(file, data).expect("write");
        self.db
            .execute(
                r#"INSERT INTO asset ("id", "deviceAssetId", "ownerId", "deviceId", "type", "originalPath",
                     "fileCreatedAt", "fileModifiedAt", "localDateTime", "checksum", "originalFileName")
                   VALUES ($1, $2, $3, 'test', 'IMAGE', $4, now(), now(), now(), $5, 'added.jpg')"#,
                &[&id, &id.to_string(), &self.seeded.users[0], &path, &sha1::Sha1::digest(data).to_vec()],
            )
            .await
            .expect("insert original");
    }

    /// Our batch table's state for a batch.
    pub async fn batch_state(&self, batch: Uuid) -> String {
        self.db
            .query_one(
                "SELECT state FROM noodle_migrate_batch WHERE id = $1",
                &[&batch],
            )
            .await
            .expect("batch row")
            .get(0)
    }

    /// Where log rows are: the gallery's table, or ours while the gallery
    /// has none.
    pub async fn log_table(&self) -> &'static str {
        let gallery: bool = self
            .db
            .query_one(
                "SELECT to_regclass('storage_migration_log') IS NOT NULL",
                &[],
            )
            .await
            .expect("regclass")
            .get(0);
        if gallery {
            "storage_migration_log"
        } else {
            "noodle_migrate_log"
        }
    }

    /// The batch's log rows.
    pub async fn log_rows(&self, batch: Uuid) -> i64 {
        let table = self.log_table().await;
        self.db
            .query_one(
                &format!(r#"SELECT count(*) FROM {table} WHERE "batchId" = $1"#),
                &[&batch],
            )
            .await
            .expect("log count")
            .get(0)
    }

    /// Asserts that a stored path (disk or object key) holds exactly `data`.
    pub async fn assert_whole(&self, path: &str, data: &[u8]) {
        if path.starts_with('/') {
            assert!(
                std::fs::read(path).expect("disk file") == data,
                "{path} whole"
            );
        } else {
            let key = match path.strip_prefix("s3://") {
                Some(url) => url.split_once('/').map(|(_, k)| k).unwrap_or(url),
                None => path,
            };
            assert!(
                self.object(key).await.as_deref() == Some(data),
                "{path} whole"
            );
        }
    }

    /// The engine's migrations, then a running toS3 batch of our own, for
    /// tests that drive the database layer directly.
    pub async fn our_batch(&self, total: i64) -> Uuid {
        noodle_migrate::db::migrate(&self.db_url)
            .await
            .expect("migrations");
        let batch = Uuid::new_v4();
        self.db
            .execute(
                "INSERT INTO noodle_migrate_batch (id, direction, state, options, total)
                 VALUES ($1, 'toS3', 'running', '{}', $2)",
                &[&batch, &total],
            )
            .await
            .expect("batch");
        batch
    }

    /// A chunk of `batch`, leased: the ledger writes only for held chunks.
    pub async fn lease(&self, batch: Uuid) -> Uuid {
        let lease = Uuid::new_v4();
        self.db
            .execute(
                "INSERT INTO noodle_migrate_chunk (batch_id, seq, kind, after_id, last_id, state, lease, lease_until)
                 VALUES ($1, (SELECT count(*) FROM noodle_migrate_chunk WHERE batch_id = $1), 'originals',
                         '00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
                         'leased', $2, clock_timestamp() + interval '1 hour')",
                &[&batch, &lease],
            )
            .await
            .expect("chunk");
        lease
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.db.query_one(sql, &[]).await.expect("count").get(0)
    }

    /// What the test itself finds that no row points at, as
    /// (backend, path) pairs: files under the gallery's folders, and
    /// objects in the bucket (outside `backups/`).
    pub async fn unreferenced(&self) -> Vec<(String, String)> {
        let rows = self
            .db
            .query(
                r#"SELECT "originalPath" FROM asset UNION ALL SELECT path FROM asset_file
                   UNION ALL SELECT "thumbnailPath" FROM person
                   UNION ALL SELECT "profileImagePath" FROM "user""#,
                &[],
            )
            .await
            .expect("paths");
        let referenced: std::collections::HashSet<String> =
            rows.iter().map(|r| r.get::<_, String>(0)).collect();
        let mut found = Vec::new();
        fn files(dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    files(&path, out);
                } else {
                    out.push(path.display().to_string());
                }
            }
        }
        let mut disk = Vec::new();
        for folder in ["upload", "library", "thumbs", "encoded-video", "profile"] {
            files(&self.media_path().join(folder), &mut disk);
        }
        for path in disk {
            if !referenced.contains(&path) {
                found.push(("disk".to_string(), path));
            }
        }
        for key in self.keys().await {
            if !key.starts_with("backups/") && !referenced.contains(&key) {
                found.push(("s3".to_string(), key));
            }
        }
        found.sort();
        found
    }

    pub fn key(&self, prefix: &str, relative: &str) -> String {
        if prefix.is_empty() {
            relative.to_string()
        } else {
            format!("{prefix}/{relative}")
        }
    }

    /// What a row stores for a file moved to S3 with `vars(_, prefix)`:
    /// the key itself, or with a prefix the `s3://` URL.
    pub fn stored_s3_path(&self, prefix: &str, relative: &str) -> String {
        if prefix.is_empty() {
            relative.to_string()
        } else {
            format!("s3://{}/{prefix}/{relative}", self.bucket)
        }
    }

    pub async fn object(&self, key: &str) -> Option<Vec<u8>> {
        match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Some(
                out.body
                    .collect()
                    .await
                    .expect("body")
                    .into_bytes()
                    .to_vec(),
            ),
            Err(_) => None,
        }
    }

    pub async fn put_object(&self, key: &str, data: &[u8]) {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(data.to_vec()))
            .send()
            .await
            .expect("put object");
    }

    pub async fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .set_continuation_token(token)
                .send()
                .await
                .expect("list");
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match out.next_continuation_token() {
                Some(t) => token = Some(t.to_string()),
                None => return keys,
            }
        }
    }
}

/// A test's bucket goes with it: test runs would otherwise fill the S3
/// server's disk. (Databases are dropped by `make test` before each run.)
impl Drop for TestEnv {
    fn drop(&mut self) {
        let bucket = self.bucket.clone();
        // On a thread and runtime of its own: `drop` cannot await, and the
        // test's runtime may be shutting down.
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(remove_bucket(&bucket));
            }
        })
        .join();
    }
}

/// Deletes every object of `bucket`, then the bucket; errors are ignored
/// (a test that failed may have left anything behind).
async fn remove_bucket(bucket: &str) {
    use futures_util::stream::{self, StreamExt};
    let s3 = s3_client();
    // Bounded: an object that cannot be deleted must not hold the test.
    for _ in 0..100 {
        let Ok(page) = s3.list_objects_v2().bucket(bucket).send().await else {
            return;
        };
        let keys: Vec<String> = page
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        if keys.is_empty() {
            break;
        }
        stream::iter(keys)
            .for_each_concurrent(16, |key| {
                let s3 = &s3;
                async move {
                    let _ = s3.delete_object().bucket(bucket).key(key).send().await;
                }
            })
            .await;
    }
    let _ = s3.delete_bucket().bucket(bucket).send().await;
}

impl TestApp {
    fn with_auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Every answer is checked against `/openapi.json`.
    async fn answer(method: &str, path: &str, resp: reqwest::Response) -> (u16, Value) {
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        crate::openapi::check(method, path, status, &body);
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .with_auth(self.http.get(format!("{}{path}", self.base)))
            .send()
            .await
            .expect("request");
        Self::answer("GET", path, resp).await
    }

    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let resp = self
            .with_auth(self.http.post(format!("{}{path}", self.base)))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        Self::answer("POST", path, resp).await
    }

    /// A request with exactly the given headers (no token of ours added),
    /// checked against `/openapi.json` like every other.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let method_value = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method_value, format!("{}{path}", self.base));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().await.expect("request");
        Self::answer(method, path, resp).await
    }

    pub async fn patch(&self, path: &str, body: &str) -> (u16, Value) {
        let resp = self
            .with_auth(self.http.patch(format!("{}{path}", self.base)))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        Self::answer("PATCH", path, resp).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let resp = self
            .with_auth(self.http.delete(format!("{}{path}", self.base)))
            .send()
            .await
            .expect("request");
        Self::answer("DELETE", path, resp).await
    }

    /// The engine's Prometheus text.
    pub async fn metrics(&self) -> String {
        self.with_auth(self.http.get(format!("{}/metrics", self.base)))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Starts a migration and asserts it was accepted; returns the batch id.
    pub async fn start(&self, body: &str) -> Uuid {
        let (status, json) = self.post("/storage-migration/start", body).await;
        assert_eq!(status, 201, "start refused: {json}");
        json["batchId"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .expect("batchId")
    }

    /// Polls status until the run is over; returns the final status.
    pub async fn wait_idle(&self) -> Value {
        for _ in 0..1200 {
            let (status, json) = self.get("/storage-migration/status").await;
            assert_eq!(status, 200);
            if json["isActive"] == false {
                return json;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the migration did not finish within two minutes");
    }

    pub async fn migrate(&self, body: &str) -> (Uuid, Value) {
        let batch = self.start(body).await;
        let status = self.wait_idle().await;
        assert_eq!(status["batchId"], batch.to_string());
        (batch, status)
    }
}
