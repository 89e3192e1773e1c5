//! `noodle-migrate dump create|list|delete`: database dumps on a running
//! engine.

use super::client::ApiClient;
use super::{exit_of, show, Exit};
use crate::dumps::DumpReport;
use crate::http::bodies::{DumpDeleted, DumpList};
use indicatif::HumanBytes;

pub async fn create(client: &ApiClient, as_json: bool) -> Exit {
    let text = |r: &DumpReport| {
        println!(
            "Dumped the database to {} ({}, {:.1} s)",
            r.location,
            HumanBytes(r.size),
            r.duration_ms as f64 / 1000.0
        );
        for old in &r.deleted {
            println!("Removed old dump {old}");
        }
    };
    let answer = client.post::<DumpReport>("/database-dumps", None).await;
    exit_of(show(answer, as_json, text))
}

pub async fn list(client: &ApiClient, as_json: bool) -> Exit {
    let answer = client.get::<DumpList>("/database-dumps").await;
    exit_of(show(answer, as_json, print_list))
}

fn print_list(list: &DumpList) {
    let backend = list.backend;
    if list.dumps.is_empty() {
        println!("No database dumps on {}.", backend.as_str());
        return;
    }
    let noun = if list.dumps.len() == 1 {
        "dump"
    } else {
        "dumps"
    };
    println!(
        "{} database {noun} on {}, newest first:",
        list.dumps.len(),
        backend.as_str()
    );
    for d in &list.dumps {
        println!(
            "  {:<60} {:>10}  {}",
            d.name,
            HumanBytes(d.size).to_string(),
            d.created_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                .unwrap_or_default()
        );
    }
}

pub async fn delete(client: &ApiClient, name: &str, as_json: bool) -> Exit {
    // The engine validates the name; encoding keeps it one path segment.
    let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    let answer = client
        .delete::<DumpDeleted>(&format!("/database-dumps/{encoded}"))
        .await;
    exit_of(show(answer, as_json, |d| println!("Deleted {}", d.deleted)))
}
