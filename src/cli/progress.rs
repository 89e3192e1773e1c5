//! What the CLI prints: a progress bar while a run goes (files, bytes,
//! rate, ETA), and plain summaries.

use crate::engine::orphans::OrphanReport;
use crate::engine::stats::StatusView;
use crate::http::bodies::EstimateBody;
use crate::model::FileKind;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
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

    pub fn update(&self, status: &StatusView) {
        let n = |v: i64| v.max(0) as u64;
        self.bar.set_length(n(status.total));
        self.bar
            .set_position(n(status.completed + status.failed + status.skipped));
        let eta = match status.eta_seconds {
            Some(s) if status.is_active => format!("ETA {}", human_seconds(s)),
            _ => String::new(),
        };
        self.bar.set_message(format!(
            "{}  {:.1} files/s  {}/s  failed {}  {eta}",
            HumanBytes(n(status.bytes_moved)),
            status.files_per_second,
            HumanBytes(status.bytes_per_second.max(0.0) as u64),
            n(status.failed),
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

pub fn print_estimate(e: &EstimateBody) {
    println!("Estimate for {}:", e.direction);
    println!("  {:<18} {:>10} {:>12}", "kind", "files", "size");
    for kind in FileKind::API_KEYS.into_iter().chain(["total"]) {
        let count = e.file_counts.get(kind).copied().unwrap_or(0);
        let size = e
            .estimated_size_bytes_by_kind
            .get(kind)
            .copied()
            .unwrap_or(0);
        println!(
            "  {:<18} {:>10} {:>12}",
            kind,
            count,
            HumanBytes(size.max(0) as u64).to_string()
        );
    }
    if e.unmovable > 0 {
        println!(
            "  {} rows cannot be moved (outside the media location or the bucket, or an external library's)",
            e.unmovable
        );
    }
}

pub fn print_summary(s: &StatusView) {
    let Some(batch_id) = s.batch_id else {
        println!("No migration has run yet.");
        return;
    };
    let or_unknown = |v: Option<String>| v.unwrap_or_else(|| "?".into());
    println!(
        "Batch {batch_id} ({}): {}",
        or_unknown(s.direction.map(|d| d.to_string())),
        or_unknown(s.state.map(|st| st.to_string()))
    );
    println!(
        "  {} completed ({} adopted, {} replaced), {} failed, {} skipped, {} waiting, {} active; {} moved",
        s.completed,
        s.adopted,
        s.replaced,
        s.failed,
        s.skipped,
        s.waiting,
        s.active,
        HumanBytes(s.bytes_moved.max(0) as u64)
    );
    if s.is_active {
        let limit = match (&s.bandwidth_limit, s.bandwidth_now) {
            (Some(limit), Some(now)) => format!("{limit} (now {}/s)", HumanBytes(now)),
            (Some(limit), None) => format!("{limit} (none at this hour)"),
            _ => "off".to_string(),
        };
        if let Some(c) = s.concurrency {
            println!("  concurrency {c}, bandwidth limit {limit}");
        }
        if s.paused > 0 {
            println!("  paused: {} files wait for a resume", s.paused);
        }
    }
    if !s.failure_reasons.is_empty() {
        let list: Vec<String> = s
            .failure_reasons
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        println!("  reasons: {}", list.join(", "));
    }
    // Several processes on the batch: who did what.
    if s.workers.len() > 1 {
        if let Some(c) = s.chunks {
            println!(
                "  chunks: {} done, {} leased, {} pending ({} taken over)",
                c.done, c.leased, c.pending, c.taken_over
            );
        }
        for w in &s.workers {
            println!(
                "  worker {}: {}, {} completed, {} failed, {:.1} files/s",
                w.id, w.state, w.completed, w.failed, w.files_per_second
            );
        }
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

/// One file of a plan: action, kind, where it is and where it goes.
pub fn plan_line(row: &serde_json::Value) -> String {
    let text = |field: &str| row[field].as_str().unwrap_or("").to_string();
    let size = row["size"]
        .as_u64()
        .map(|s| HumanBytes(s).to_string())
        .unwrap_or_default();
    let target = match row["target"].as_str() {
        Some(t) => format!(" -> {t}"),
        None => format!(" ({})", text("reason")),
    };
    format!(
        "{:<8} {:<17} {}{target} {size}",
        text("action"),
        text("kind"),
        text("source")
    )
}

/// The plan's totals, after its files.
pub fn print_plan_totals(totals: &serde_json::Value) {
    let n = |field: &str| totals[field].as_i64().unwrap_or(0);
    println!(
        "{} files: {} copy, {} adopt, {} replace, {} skip, {} fail; {} to copy",
        n("files"),
        n("copy"),
        n("adopt"),
        n("replace"),
        n("skip"),
        n("fail"),
        HumanBytes(totals["bytesToCopy"].as_u64().unwrap_or(0))
    );
}
