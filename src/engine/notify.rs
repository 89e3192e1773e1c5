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
use std::time::Duration;

/// Attempts at delivering one notification.
const ATTEMPTS: u32 = 4;
/// Each attempt's time limit.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The wait before the second attempt; doubled before each later one.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Sends `status` to the webhook in the background.
pub fn run_ended(webhook: &Webhook, status: StatusView) {
    let (url, shown) = (webhook.url.expose().to_string(), webhook.shown.clone());
    actix::spawn(async move {
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
