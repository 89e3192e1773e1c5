//! Who owns a run: one state for the orchestrator (idle, preparing,
//! running) and the signal that stops a run, whatever its stage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::Notify;
use uuid::Uuid;

/// Stops a run: movers read the flag between files; a start that is still
/// preparing (a database dump can take minutes) awaits it.
#[derive(Default)]
pub struct CancelSignal {
    flag: Arc<AtomicBool>,
    notify: Notify,
}

impl CancelSignal {
    /// Sets the signal; true the first time.
    pub fn cancel(&self) -> bool {
        let first = !self.flag.swap(true, Ordering::SeqCst);
        self.notify.notify_waiters();
        first
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Resolves once the signal is set.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }

    /// The flag alone, for whoever may stop the run from below (the lost
    /// database lock).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }
}

/// The orchestrator's one run.
pub enum RunState {
    Idle,
    /// Pre-flight and the dump before the first file; the batch id is set
    /// once chosen.
    Preparing {
        cancel: Arc<CancelSignal>,
        batch_id: Arc<OnceLock<Uuid>>,
    },
    Running {
        cancel: Arc<CancelSignal>,
        batch_id: Uuid,
        control: Arc<super::control::RunControl>,
    },
}

impl RunState {
    pub fn is_idle(&self) -> bool {
        matches!(self, RunState::Idle)
    }

    /// Sets the stop signal of the run, if there is one: `None` when idle,
    /// else the batch (unknown while the start has not chosen it yet).
    pub fn cancel(&self) -> Option<Option<Uuid>> {
        let (cancel, batch_id) = match self {
            RunState::Idle => return None,
            RunState::Preparing { cancel, batch_id } => (cancel, batch_id.get().copied()),
            RunState::Running {
                cancel, batch_id, ..
            } => (cancel, Some(*batch_id)),
        };
        if cancel.cancel() {
            tracing::info!(batch_id = ?batch_id, "Cancelling: no new files; waiting for the files in flight");
        }
        Some(batch_id)
    }
}

impl RunState {
    /// The running batch and its settings.
    pub fn control(&self) -> Option<(Uuid, Arc<super::control::RunControl>)> {
        match self {
            RunState::Running {
                batch_id, control, ..
            } => Some((*batch_id, control.clone())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_wakes_when_cancelled_before_or_after() {
        let signal = Arc::new(CancelSignal::default());
        let waiter = tokio::spawn({
            let signal = signal.clone();
            async move { signal.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(signal.cancel());
        assert!(!signal.cancel(), "only the first cancel counts");
        waiter.await.unwrap();
        signal.wait().await;
    }
}
