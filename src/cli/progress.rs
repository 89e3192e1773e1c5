//! What the CLI prints: a progress bar while a run goes (files, bytes,
//! rate, ETA), and plain summaries.

use crate::engine::orphans::OrphanReport;
use crate::model::FileKind;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use std::time::Duration;

pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// A bar on standard error; hidden when `visible` is false or standard
    /// error is not a terminal.
    pub fn new(visible: bool) -> Bar {
        let bar = ProgressBar::new(0);
        if !visible {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        let style = ProgressStyle::with_template("{spinner} [{bar:32}] {pos}/{len} files  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        Bar { bar }
    }

    pub fn update(&self, status: &Value) {
        let n = |k: &str| status[k].as_i64().unwrap_or(0).max(0) as u64;
        self.bar.set_length(n("total"));
        self.bar
            .set_position(n("completed") + n("failed") + n("skipped"));
        let eta = match status["etaSeconds"].as_f64() {
            Some(s) if status["isActive"] == true => format!("ETA {}", human_seconds(s)),
            _ => String::new(),
        };
        self.bar.set_message(format!(
            "{}  {:.1} files/s  {}/s  failed {}  {eta}",
            HumanBytes(n("bytesMoved")),
            status["filesPerSecond"].as_f64().unwrap_or(0.0),
            HumanBytes(status["bytesPerSecond"].as_f64().unwrap_or(0.0) as u64),
            n("failed"),
        ));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn human_seconds(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn print_estimate(v: &Value) {
    println!("Estimate for {}:", v["direction"].as_str().unwrap_or("?"));
    println!("  {:<18} {:>10} {:>12}", "kind", "files", "size");
    for kind in FileKind::ALL.iter().map(|k| k.api_key()).chain(["total"]) {
        println!(
            "  {:<18} {:>10} {:>12}",
            kind,
            v["fileCounts"][kind].as_i64().unwrap_or(0),
            HumanBytes(
                v["estimatedSizeBytesByKind"][kind]
                    .as_i64()
                    .unwrap_or(0)
                    .max(0) as u64
            )
            .to_string()
        );
    }
    if v["unmovable"].as_i64().unwrap_or(0) > 0 {
        println!(
            "  {} rows cannot be moved (outside the media location or the bucket, or an external library's)",
            v["unmovable"]
        );
    }
}

pub fn print_summary(s: &Value) {
    if s["batchId"].is_null() {
        println!("No migration has run yet.");
        return;
    }
    println!(
        "Batch {} ({}): {}",
        s["batchId"].as_str().unwrap_or("?"),
        s["direction"].as_str().unwrap_or("?"),
        s["state"].as_str().unwrap_or("?")
    );
    println!(
        "  {} completed ({} adopted, {} replaced), {} failed, {} skipped, {} waiting, {} active; {} moved",
        s["completed"],
        s["adopted"],
        s["replaced"],
        s["failed"],
        s["skipped"],
        s["waiting"],
        s["active"],
        HumanBytes(s["bytesMoved"].as_i64().unwrap_or(0).max(0) as u64)
    );
    if let Some(reasons) = s["failureReasons"].as_object().filter(|r| !r.is_empty()) {
        let list: Vec<String> = reasons.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!("  reasons: {}", list.join(", "));
    }
}

/// The orphan report as text: counts, then one line per orphan.
pub fn print_orphans(report: &OrphanReport) {
    let uploads = match report.incomplete_uploads {
        Some(u) => u.to_string(),
        None => "? (the server cannot list them)".to_string(),
    };
    println!(
        "Scanned {} files and {} objects: {} temporary files, {} undeleted sources, {} kept sources, {} unreferenced, {uploads} incomplete uploads.",
        report.files_scanned,
        report.objects_scanned,
        report.temp_files,
        report.undeleted_sources,
        report.kept_sources,
        report.unreferenced,
    );
    for o in &report.orphans {
        println!(
            "  {:<17} {:<4} {:>10}  {}",
            o.reason.as_str(),
            o.backend.as_str(),
            HumanBytes(o.size).to_string(),
            o.path
        );
    }
    if report.truncated {
        println!("  … more not listed (raise --limit)");
    }
}
