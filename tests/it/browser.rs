//! The admin page in a real browser: headless Chromium driven through
//! chromedriver (WebDriver), against a running engine and a seeded library:
//! estimate, start, watch it complete, roll it back. Screenshots go to
//! `target/screenshots/`.

use crate::helpers::{EnvOptions, TestEnv};
use crate::resume::free_port;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver not found: `make test` installs Debian's chromium and chromium-driver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http.get(format!("{base}/status")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--window-size=420,1800",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session json");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = self.http.request(method.clone(), url);
        // GET commands take no body; chromedriver refuses one.
        let req = if method == reqwest::Method::GET {
            req
        } else {
            req.json(&body)
        };
        let resp = req.send().await.expect("webdriver");
        resp.json::<Value>().await.expect("webdriver json")["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    async fn click(&self, css: &str) {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        let id = found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string();
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    async fn text(&self, id: &str) -> String {
        let script = format!("return document.getElementById('{id}').textContent;");
        self.eval(&script)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Runs a script in the page; its return value.
    async fn eval(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Waits until the element's text satisfies `ok`.
    async fn wait_text(&self, id: &str, ok: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        for _ in 0..300 {
            last = self.text(id).await;
            if ok(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("#{id} never matched; last: {last:?}");
    }

    async fn accept_dialog(&self) {
        for _ in 0..50 {
            let v = self
                .call(reqwest::Method::POST, "/alert/accept", json!({}))
                .await;
            if v.is_null() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no confirmation dialog");
    }

    async fn screenshot(&self, name: &str) {
        let v = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let png = aws_smithy_types::base64::decode(v.as_str().unwrap_or_default()).expect("png");
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot: {v}");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.driver.kill().ok();
        self.driver.wait().ok();
    }
}

#[actix_rt::test]
async fn the_admin_page_migrates_and_rolls_back() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "").await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", app.base)).await;
    browser.wait_text("state", |t| t == "idle").await;

    browser.click("#estimate").await;
    let total = env.seeded.files.len();
    let msg = browser
        .wait_text("estimate-msg", |t| t.contains("files"))
        .await;
    assert!(msg.starts_with(&format!("{total} files")), "{msg}");
    browser.screenshot("admin-estimate").await;

    browser.click("#start").await;
    browser.wait_text("state", |t| t == "completed").await;
    let batch = browser.text("batch").await;
    assert_eq!(batch.len(), 36, "a batch id is shown: {batch}");
    // "Dump the database first" is on by default.
    let started = browser.text("start-msg").await;
    assert!(
        started.contains("after dumping to immich-db-backup-"),
        "{started}"
    );
    browser.screenshot("admin-completed").await;
    for file in &env.seeded.files {
        assert_eq!(
            env.current_path(file.kind, file.row_id).await,
            file.relative(env.media_path())
        );
    }

    // The batch id was filled in for the rollback; confirm it.
    browser.click("#rollback").await;
    browser.accept_dialog().await;
    let msg = browser
        .wait_text("rollback-msg", |t| t.starts_with("Rolled back"))
        .await;
    assert!(msg.contains(&format!("{total} of {total}")), "{msg}");
    browser.screenshot("admin-rolled-back").await;
    for file in &env.seeded.files {
        assert_eq!(env.current_path(file.kind, file.row_id).await, file.path);
    }

    browser.click("#dump").await;
    let msg = browser
        .wait_text("dump-msg", |t| {
            t.starts_with("Dumped to") || t.contains("fail")
        })
        .await;
    assert!(msg.starts_with("Dumped to immich-db-backup-"), "{msg}");
    let dumps = env
        .keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with("backups/immich-db-backup-"))
        .count();
    assert_eq!(dumps, 2, "the start's dump and this one");
    browser.screenshot("admin-dumps").await;
}

/// During a run the page charts files/s and MB/s and shows a bar per kind;
/// pause and resume work by clicking; the Grafana link is there when set.
#[actix_rt::test]
async fn the_admin_page_charts_a_run_and_pauses_it() {
    let env = TestEnv::new(EnvOptions {
        spec: crate::seed::SeedSpec {
            users: 1,
            assets_per_user: 80,
            max_size: 4000,
        },
        ..Default::default()
    })
    .await;
    let mut vars = env.vars("s3", "");
    vars.insert(
        "NOODLE_MIGRATE_GRAFANA_URL".into(),
        "https://grafana.example.test/d/noodle-migrate?from=now-6h&to=now".into(),
    );
    let app = env.spawn(vars).await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", app.base)).await;
    browser.wait_text("state", |t| t == "idle").await;
    let href = browser
        .eval("return document.getElementById('grafana-link').hidden ? '' : document.getElementById('grafana').href;")
        .await;
    assert_eq!(
        href,
        "https://grafana.example.test/d/noodle-migrate?from=now-6h&to=now"
    );

    // Slow enough to watch: 24 KiB/s.
    browser
        .eval("document.getElementById('bwlimit').value = '24k'; document.getElementById('dump-first').checked = false; return true;")
        .await;
    browser.click("#start").await;
    browser.wait_text("state", |t| t == "running").await;
    // A few seconds of history: both lines drawn, a bar per kind planned.
    let mut drawn = Value::Null;
    for _ in 0..200 {
        drawn = browser
            .eval("const p = document.querySelectorAll('#chart polyline'); return p.length === 2 && p[0].getAttribute('points').split(' ').length >= 3 ? document.querySelectorAll('#kind-bars .kind').length : 0;")
            .await;
        if drawn.as_i64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, status) = app.get("/storage-migration/status").await;
    let kinds = status["plannedByKind"]
        .as_object()
        .expect("plannedByKind")
        .iter()
        .filter(|(k, v)| k.as_str() != "total" && v.as_i64().unwrap_or(0) > 0)
        .count() as i64;
    assert_eq!(
        drawn.as_i64(),
        Some(kinds),
        "a chart and one bar per kind: {status}"
    );
    let scale = browser.text("chart-scale").await;
    assert!(scale.contains("files/s"), "{scale}");
    browser.screenshot("admin-run-chart").await;

    browser.click("#pause").await;
    browser.wait_text("state", |t| t == "paused").await;
    browser.wait_text("pause", |t| t == "Resume").await;
    let (_, status) = app.get("/storage-migration/status").await;
    assert_eq!(status["state"], "paused", "{status}");
    browser.screenshot("admin-paused").await;

    browser.click("#pause").await;
    browser.wait_text("state", |t| t == "running").await;
    browser
        .eval("document.getElementById('live-bwlimit').value = 'off'; return true;")
        .await;
    browser.click("#apply").await;
    browser.wait_text("state", |t| t == "completed").await;
    let (_, status) = app.get("/storage-migration/status").await;
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(status["bandwidthLimit"], Value::Null, "{status}");
}
