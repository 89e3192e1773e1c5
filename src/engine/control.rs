//! What may change while a run goes on: its concurrency, its bandwidth
//! limit, and whether it is paused. One watch per run in each process:
//! the orchestrator's dispatch waits on it, the stats actor reads it for
//! the status, and the throttle follows its limit.
//!
//! The batch's row holds the same settings (its options and its state),
//! so that every process of the batch follows a change made through any
//! of them: the API changes the row and this process's watch at once, and
//! each heartbeat brings the others in line within a second.

use super::options::StartOptions;
use crate::bandwidth::{BandwidthLimit, Throttle};
use crate::model::BatchState;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub concurrency: u8,
    pub bandwidth_limit: Option<BandwidthLimit>,
    pub paused: bool,
}

impl Settings {
    /// As a batch's options and state say.
    pub fn of(options: &StartOptions, state: BatchState) -> Settings {
        Settings {
            concurrency: options.concurrency.get(),
            bandwidth_limit: options.bandwidth_limit.clone().filter(|l| !l.is_off()),
            paused: state == BatchState::Paused,
        }
    }
}

pub struct RunControl {
    settings: watch::Sender<Settings>,
    throttle: Arc<Throttle>,
    /// When this process last changed the settings itself: a heartbeat's
    /// read of the batch row older than that must not undo it.
    changed_here: Mutex<Option<Instant>>,
}

impl RunControl {
    pub fn new(settings: Settings, throttle: Arc<Throttle>) -> RunControl {
        throttle.set(settings.bandwidth_limit.clone());
        RunControl {
            settings: watch::Sender::new(settings),
            throttle,
            changed_here: Mutex::new(None),
        }
    }

    pub fn get(&self) -> Settings {
        self.settings.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<Settings> {
        self.settings.subscribe()
    }

    /// A change made through this process's API.
    pub fn change(&self, settings: Settings) {
        *self.lock() = Some(Instant::now());
        self.put(settings);
    }

    /// The batch row as a heartbeat read it, beginning at `read_at`.
    pub fn follow(&self, settings: Settings, read_at: Instant) {
        if self.lock().is_some_and(|at| at > read_at) {
            return;
        }
        self.put(settings);
    }

    fn put(&self, settings: Settings) {
        let paused = settings.paused;
        self.throttle.set(settings.bandwidth_limit.clone());
        let changed = self.settings.send_if_modified(|now| {
            if *now == settings {
                return false;
            }
            *now = settings;
            true
        });
        if changed {
            tracing::info!(
                concurrency = self.settings.borrow().concurrency,
                bandwidth_limit = %self.settings.borrow().bandwidth_limit.as_ref().map_or("off", |l| l.as_str()),
                paused,
                "Run settings changed"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.changed_here.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for RunControl {
    /// The limit belongs to the run: what this process does after it goes
    /// at full speed.
    fn drop(&mut self) {
        self.throttle.set(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Direction;

    fn settings(concurrency: u8, paused: bool) -> Settings {
        let mut options = StartOptions::new(Direction::ToS3);
        options.concurrency = super::super::options::Concurrency::new(concurrency).unwrap();
        options.bandwidth_limit = Some(BandwidthLimit::parse("2M").unwrap());
        let state = if paused {
            BatchState::Paused
        } else {
            BatchState::Running
        };
        Settings::of(&options, state)
    }

    #[test]
    fn a_row_read_before_a_change_here_does_not_undo_it() {
        let throttle = Arc::new(Throttle::default());
        let control = RunControl::new(settings(5, false), throttle.clone());
        assert_eq!(throttle.limit().unwrap().as_str(), "2M");
        let before = Instant::now();
        control.change(settings(5, true));
        control.follow(settings(5, false), before);
        assert!(control.get().paused, "the stale row was ignored");
        control.follow(settings(3, true), Instant::now());
        assert_eq!(control.get().concurrency, 3);
        drop(control);
        assert!(throttle.limit().is_none(), "the limit ends with the run");
    }
}
