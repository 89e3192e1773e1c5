//! The done notification: when a run ends (completed, with failures,
//! failed, cancelled or interrupted), its final status is POSTed as JSON to
//! `NOODLE_MIGRATE_WEBHOOK_URL`, so that a long migration can page or chat
//! its end.
//!
//! It never holds up the run: delivery goes on in a task of its own, with a
//! few attempts and a timeout each, and gives up with an error in the log.
//! The URL may carry a secret (a password, a token): logs name only its
//! scheme, host and port.

use super::stats::StatusView;
use crate::config::Webhook;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Attempts at delivering one notification.
const ATTEMPTS: u32 = 4;
/// Each attempt's time limit.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The wait before the second attempt; doubled before each later one.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Deliveries still under way, so that a process about to exit (`run`
/// from the command line) can let them finish first.
#[derive(Debug, Default)]
pub struct Deliveries {
    pending: AtomicUsize,
    settled: tokio::sync::Notify,
}

impl Deliveries {
    /// Waits, up to `deadline`, until no delivery is under way; false when
    /// some still were.
    pub async fn wait(&self, deadline: Duration) -> bool {
        let none_left = async {
            loop {
                let settled = self.settled.notified();
                if self.pending.load(Ordering::SeqCst) == 0 {
                    return;
                }
                settled.await;
            }
        };
        tokio::time::timeout(deadline, none_left).await.is_ok()
    }
}

/// Counts one delivery as under way for as long as it lives.
struct Pending(Arc<Deliveries>);

impl Pending {
    fn new(deliveries: &Arc<Deliveries>) -> Pending {
        deliveries.pending.fetch_add(1, Ordering::SeqCst);
        Pending(deliveries.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
        self.0.settled.notify_waiters();
    }
}

/// Sends `status` to the webhook in the background.
pub fn run_ended(webhook: &Webhook, status: StatusView, deliveries: &Arc<Deliveries>) {
    let (url, shown) = (webhook.url.expose().to_string(), webhook.shown.clone());
    let pending = Pending::new(deliveries);
    actix::spawn(async move {
        let _pending = pending;
        let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e.without_url(), webhook = %shown, "Cannot send the run's end");
                return;
            }
        };
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            // reqwest names the URL in its errors: never let it reach a log.
            match client.post(&url).json(&status).send().await {
                Ok(answer) if answer.status().is_success() => {
                    tracing::info!(webhook = %shown, attempt, "The run's end was delivered");
                    return;
                }
                Ok(answer) => tracing::warn!(
                    webhook = %shown,
                    attempt,
                    status = answer.status().as_u16(),
                    "The webhook refused the run's end"
                ),
                Err(e) => tracing::warn!(
                    webhook = %shown,
                    attempt,
                    error = %e.without_url(),
                    "Cannot reach the webhook"
                ),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        tracing::error!(webhook = %shown, attempts = ATTEMPTS, "Gave up sending the run's end");
    });
}
