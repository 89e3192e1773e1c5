//! The OpenAPI document at `/openapi.json`, and the check every test's
//! API call goes through: a response must be documented for its path,
//! method and status, and its body must match the documented schema (with
//! objects closed: a field the document does not name is an error).

use crate::helpers::{EnvOptions, TestApp, TestEnv};
use noodle_migrate::http::openapi::ApiDoc;
use serde_json::Value;
use std::sync::OnceLock;
use utoipa::OpenApi;

fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| serde_json::to_value(ApiDoc::openapi()).expect("the document serialises"))
}

/// The documented path template matching a concrete path, if any.
fn template_for(path: &str) -> Option<&'static str> {
    let path = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path.split('/').collect();
    spec()["paths"]
        .as_object()?
        .keys()
        .find(|template| {
            let t: Vec<&str> = template.split('/').collect();
            t.len() == parts.len()
                && t.iter()
                    .zip(&parts)
                    .all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
        })
        .map(String::as_str)
}

/// Checks one response against the document. Paths the API does not
/// serve (the tests of unknown endpoints) are not in it and not checked.
pub fn check(method: &str, path: &str, status: u16, body: &Value) {
    let Some(template) = template_for(path) else {
        return;
    };
    let operation = &spec()["paths"][template][method.to_ascii_lowercase()];
    assert!(
        operation.is_object(),
        "{method} {template} is not documented in /openapi.json"
    );
    let response = &operation["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {path} answered {status}, which /openapi.json does not document: {body}"
    );
    let Some(schema) = response["content"]["application/json"]
        .get("schema")
        .filter(|_| !body.is_null() || status < 300)
    else {
        return;
    };
    if let Err(e) = validate(schema, body, "$") {
        panic!("{method} {path} {status}: the body does not match /openapi.json: {e}\n{body}");
    }
}

fn resolve(schema: &Value) -> &Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            let target = &spec()["components"]["schemas"][name];
            assert!(target.is_object(), "dangling $ref {r}");
            resolve(target)
        }
        None => schema,
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        _ => false,
    }
}

/// The subset of JSON Schema the document uses.
fn validate(schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(schema);
    if schema.as_object().is_some_and(|o| o.is_empty()) {
        return Ok(());
    }
    if let Some(options) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        if !options.iter().any(|o| validate(o, v, at).is_ok()) {
            return Err(format!(
                "{at}: matches none of {}",
                Value::from(options.clone())
            ));
        }
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            validate(s, v, at)?;
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| type_matches(t, v)) {
        return Err(format!("{at}: expected {types:?}, got {v}"));
    }
    if let Some(values) = schema["enum"].as_array() {
        if !values.contains(v) {
            return Err(format!("{at}: {v} is not one of {values:?}"));
        }
    }
    if let Some(s) = v.as_str() {
        match schema["format"].as_str() {
            Some("uuid") if uuid::Uuid::parse_str(s).is_err() => {
                return Err(format!("{at}: {s:?} is not a UUID"))
            }
            Some("date-time") if chrono::DateTime::parse_from_rfc3339(s).is_err() => {
                return Err(format!("{at}: {s:?} is not an RFC 3339 time"))
            }
            _ => {}
        }
    }
    if let Some(n) = v.as_f64() {
        if schema["minimum"].as_f64().is_some_and(|min| n < min) {
            return Err(format!("{at}: {n} is below the minimum"));
        }
        if schema["maximum"].as_f64().is_some_and(|max| n > max) {
            return Err(format!("{at}: {n} is above the maximum"));
        }
    }
    if let Value::Array(items) = v {
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate(item_schema, item, &format!("{at}[{i}]"))?;
            }
        }
    }
    if let Value::Object(fields) = v {
        let properties = schema["properties"].as_object();
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap_or_default();
            if !fields.contains_key(name) {
                return Err(format!("{at}: the required field {name} is missing"));
            }
        }
        for (name, value) in fields {
            let field_at = format!("{at}.{name}");
            match (
                properties.and_then(|p| p.get(name)),
                &schema["additionalProperties"],
            ) {
                (Some(s), _) => validate(s, value, &field_at)?,
                (None, Value::Bool(false)) => return Err(format!("{field_at}: not allowed")),
                (None, extra) if extra.is_object() => validate(extra, value, &field_at)?,
                // Objects with named fields are closed: an undocumented
                // field is an error, not a surprise for clients.
                (None, _) if properties.is_some() => {
                    return Err(format!("{field_at}: not in the document"))
                }
                (None, _) => {}
            }
        }
    }
    Ok(())
}

#[test]
fn the_checker_catches_wrong_bodies() {
    let schema = serde_json::json!({"$ref": "#/components/schemas/Started"});
    let good = serde_json::json!({"batchId": "01a20775-bb66-75a6-a016-a23c40a57aec", "resumed": false, "dumpName": null});
    assert!(validate(&schema, &good, "$").is_ok());
    for bad in [
        serde_json::json!({"batchId": "nope", "resumed": false}),
        serde_json::json!({"batchId": "01a20775-bb66-75a6-a016-a23c40a57aec"}),
        serde_json::json!({"batchId": "01a20775-bb66-75a6-a016-a23c40a57aec", "resumed": 1}),
        serde_json::json!({"batchId": "01a20775-bb66-75a6-a016-a23c40a57aec", "resumed": false, "extra": 1}),
    ] {
        assert!(validate(&schema, &bad, "$").is_err(), "{bad}");
    }
}

#[actix_rt::test]
async fn the_document_is_served_and_covers_every_route() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app: TestApp = env.app("s3", "").await;
    let (status, served) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    // Without a token, our own routes say they need no credentials.
    let open = serde_json::to_value(noodle_migrate::http::openapi::document(false)).expect("JSON");
    assert_eq!(
        served, open,
        "the served document is the one for this configuration"
    );
    assert_eq!(
        served["paths"]["/storage-migration/status"]["get"]["security"],
        serde_json::json!([{}])
    );
    assert!(served["paths"]["/api/storage-migration/status"]["get"]["security"].is_null());
    let guarded =
        serde_json::to_value(noodle_migrate::http::openapi::document(true)).expect("JSON");
    assert_eq!(
        &guarded,
        spec(),
        "with a token, every route but /healthz needs one"
    );
    assert!(served["openapi"].as_str().unwrap_or("").starts_with("3."));
    let documented: Vec<(String, String)> = served["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .into_iter()
                .flat_map(|o| o.keys())
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    // Every route the server has (from its source), and nothing else.
    let mut served_routes: Vec<(String, String)> = Vec::new();
    let http = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    for entry in std::fs::read_dir(http).expect("src/http") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).unwrap_or_default();
        for line in text.lines() {
            for method in ["get", "post", "delete", "put", "patch"] {
                if let Some(rest) = line.strip_prefix(&format!("#[{method}(\"")) {
                    let path = rest.split('"').next().unwrap_or_default().to_string();
                    if path != "/" {
                        served_routes.push((method.to_uppercase(), path));
                    }
                }
            }
        }
    }
    let mut a = documented.clone();
    a.sort();
    served_routes.sort();
    assert_eq!(a, served_routes, "documented routes = served routes");

    // The security scheme is there, and /healthz is the only exception.
    assert_eq!(
        served["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        served["paths"]["/healthz"]["get"]["security"],
        serde_json::json!([{}])
    );
}

/// A property-based fuzzer (schemathesis, which `make test` installs;
/// its settings for our document are in `fixtures/schemathesis.toml`)
/// builds requests from the document, valid and invalid, against a real
/// engine with a token, and runs every one of its checks: status codes,
/// bodies and headers as documented, invalid input refused, valid input
/// accepted, 405 for methods a route lacks, authentication enforced. It
/// must find nothing. Its seed is fixed, so a run repeats.
#[actix_rt::test]
async fn a_fuzzer_finds_no_disagreement_with_the_document() {
    const TOKEN: &str = "fuzz-test-token-0123456789";
    let env = TestEnv::new(EnvOptions::default()).await;
    let mut vars = env.vars("s3", "");
    vars.insert("NOODLE_MIGRATE_API_TOKEN".into(), TOKEN.into());
    let port = crate::resume::free_port();
    let (mut child, app) = crate::resume::spawn_binary(&vars, port).await;
    let report = tempfile::tempdir().expect("a report folder");
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/fixtures/schemathesis.toml"
    );
    let run = tokio::process::Command::new("python3")
        .args([
            "-m",
            "schemathesis.cli",
            "--config-file",
            config,
            "run",
            &format!("{}/openapi.json", app.base),
            "--checks",
            "all",
            "--header",
            &format!("Authorization: Bearer {TOKEN}"),
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "25",
            "--seed",
            "1",
            // One worker: the fuzzer's Python parses in threads otherwise,
            // which its `ast` module does not survive.
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--no-color",
            "--generation-database",
            "none",
            "--report-dir",
        ])
        .arg(report.path())
        // Whatever else it keeps (a cache) stays out of the working tree.
        .current_dir(report.path())
        .output()
        .await;
    child.kill().ok();
    child.wait().ok();
    let out = run.expect(
        "python3 -m schemathesis.cli runs (make test installs it: python3 -m pip install schemathesis)",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found disagreements with /openapi.json:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every operation of the document was exercised, none skipped.
    let count = |label: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {label:?} in the fuzzer's summary:\n{text}"))
    };
    let selected = count("Selected:");
    let total = selected.split('/').nth(1).unwrap_or_default();
    assert_eq!(count("Tested:"), total, "{text}");
}
