//! `noodle-migrate dump create|list|delete`: database dumps on a running
//! engine.

use super::client::ApiClient;
use super::{exit_of, show, Exit};
use indicatif::HumanBytes;
use serde_json::Value;

pub async fn create(client: &ApiClient, as_json: bool) -> Exit {
    let text = |v: &Value| {
        println!(
            "Dumped the database to {} ({}, {:.1} s)",
            v["location"].as_str().unwrap_or("?"),
            HumanBytes(v["size"].as_u64().unwrap_or(0)),
            v["durationMs"].as_u64().unwrap_or(0) as f64 / 1000.0
        );
        for old in v["deleted"].as_array().into_iter().flatten() {
            println!("Removed old dump {}", old.as_str().unwrap_or("?"));
        }
    };
    exit_of(show(
        client.post("/database-dumps", None).await,
        as_json,
        text,
    ))
}

pub async fn list(client: &ApiClient, as_json: bool) -> Exit {
    exit_of(show(
        client.get("/database-dumps").await,
        as_json,
        print_list,
    ))
}

fn print_list(v: &Value) {
    let dumps = v["dumps"].as_array().cloned().unwrap_or_default();
    let backend = v["backend"].as_str().unwrap_or("?");
    if dumps.is_empty() {
        println!("No database dumps on {backend}.");
        return;
    }
    let noun = if dumps.len() == 1 { "dump" } else { "dumps" };
    println!(
        "{} database {noun} on {backend}, newest first:",
        dumps.len()
    );
    for d in dumps {
        println!(
            "  {:<60} {:>10}  {}",
            d["name"].as_str().unwrap_or("?"),
            HumanBytes(d["size"].as_u64().unwrap_or(0)).to_string(),
            d["createdAt"].as_str().unwrap_or("")
        );
    }
}

pub async fn delete(client: &ApiClient, name: &str, as_json: bool) -> Exit {
    // The engine validates the name; encoding keeps it one path segment.
    let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    let answer = client.delete(&format!("/database-dumps/{encoded}")).await;
    exit_of(show(answer, as_json, |_| println!("Deleted {name}")))
}
