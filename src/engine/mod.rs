//! The migration engine: four kinds of actor and the operations the API
//! offers on top of them.
//!
//! - [`orchestrator`]: pre-flight checks, keyset paging, dispatch with
//!   back-pressure, closing the batch.
//! - [`mover`]: one file at a time through the six steps.
//! - [`ledger`]: every file's outcome, group-committed.
//! - [`stats`]: the live view behind the status endpoint, and its
//!   [`history`] for the admin page's chart.
//! - [`options`]: the options of a start, the API's contract for them.
//! - [`control`]: what may change during a run (concurrency, bandwidth
//!   limit, pause), followed by every process of the batch.
//! - [`lease`]: this process's chunk leases in a batch that several
//!   processes may share, and the heartbeat that renews them.
//! - [`notify`]: the final status of each run, POSTed to a webhook.
//! - [`run_state`]: who owns a run (idle, preparing, running) and the
//!   signal that stops it.
//! - [`plan`]: the dry run, every file a start would handle and what it
//!   would do, by the movers' own checks.
//! - [`estimate`] and [`Engine::rollback`] work directly on the database;
//!   [`orphans`] compares the database with the disk and the bucket.

pub mod control;
pub mod estimate;
pub mod history;
pub mod lease;
pub mod ledger;
pub mod media;
pub mod messages;
pub mod mover;
pub mod notify;
pub mod options;
pub mod orchestrator;
pub mod orphans;
pub mod plan;
pub mod run_state;
pub mod stats;
pub mod targets;

use crate::config::{Config, ConfigError};
use crate::db::{self, batches, rollback::RollbackReport, DbError, DbPool};
use crate::dumps::{DumpError, DumpInfo, DumpReport, DumpSettings, Dumps};
use crate::model::{BatchState, Direction};
use crate::paths::Layout;
use crate::store::{DiskStore, S3Store, StoreError};
use crate::telemetry::Metrics;
use actix::{Actor, Addr};
use messages::{Cancel, GetStatus, Start, StartReply};
pub use options::StartOptions;
use orchestrator::Orchestrator;
use stats::{Stats, StatusView};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("a migration is already running in this engine")]
    AlreadyRunning,
    #[error("a migration or rollback is already running on this database (held by another noodle-migrate process)")]
    LockedElsewhere,
    #[error(
        "the gallery's storage backend is {backend} but a {direction} migration needs {}: set {variable}={} and restart the gallery first, so that new uploads go to the new backend",
        direction.target_backend().as_str(),
        crate::config::backend_value(variable, direction.target_backend())
    )]
    BackendMismatch {
        backend: &'static str,
        direction: Direction,
        variable: &'static str,
    },
    #[error("the gallery's storage backend is not set ({variable} is unset), so the gallery sends new uploads to disk; a toS3 migration needs them in S3: set {variable}=s3 in the gallery's environment, restart the gallery, then start the migration")]
    BackendUnset { variable: &'static str },
    #[error(transparent)]
    MediaLocation(#[from] media::MediaMismatch),
    #[error("nothing to migrate {direction}: no selected file is on the source side{}", if *unmovable > 0 { format!(" ({unmovable} rows cannot be moved; see the estimate)") } else { String::new() })]
    NothingToMigrate {
        direction: Direction,
        unmovable: i64,
    },
    #[error("the gallery's move_history holds {0} {noun}: the gallery may be moving files itself (its storage template job), or moves that failed left them behind; wait for the gallery's jobs to finish, or, if the rows are stale, start with \"ignoreMoveHistory\": true (CLI --ignore-move-history)", noun = if *.0 == 1 { "row" } else { "rows" })]
    GalleryMovingFiles(i64),
    #[error("no batch {0}")]
    BatchNotFound(Uuid),
    #[error("the running batch {batch} works on {theirs}, but this process is set up for {ours}: a worker joins only a batch of the same bucket, prefix and media location (check its S3 and media settings)")]
    WrongBatch {
        batch: Uuid,
        theirs: String,
        ours: String,
    },
    #[error("no migration is running")]
    NotRunning,
    #[error("the migration was cancelled before its first file")]
    CancelledBeforeStart,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("database dump: {0}")]
    Dump(#[from] DumpError),
    #[error("ledger: {0}")]
    Ledger(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// An error that may pass: the database or the bucket briefly away.
pub fn is_transient(e: &EngineError) -> bool {
    match e {
        EngineError::Db(e) => e.is_unavailable(),
        EngineError::Store(StoreError::Bucket {
            problem: crate::store::BucketProblem::Unreachable(_),
            ..
        }) => true,
        _ => false,
    }
}

impl From<actix::MailboxError> for EngineError {
    fn from(e: actix::MailboxError) -> EngineError {
        EngineError::Internal(e.to_string())
    }
}

/// The options a batch keeps (its start's, with the changes made since).
pub fn options_of(batch: &batches::BatchRow) -> Result<StartOptions, EngineError> {
    StartOptions::from_value(batch.options.clone()).map_err(|e| {
        EngineError::Internal(format!("batch {} has unreadable options: {e}", batch.id))
    })
}

/// What every part of the engine shares for the life of the process.
pub struct Shared {
    pub config: Config,
    pub layout: Layout,
    pub pool: DbPool,
    pub disk: DiskStore,
    pub s3: S3Store,
    pub metrics: Arc<Metrics>,
    pub dumps: Dumps,
    /// The media location in force, and where it came from.
    pub media: media::MediaLocation,
    /// The media folder on this machine, with symbolic links resolved.
    pub media_root_real: std::path::PathBuf,
    /// Webhook deliveries under way.
    pub deliveries: Arc<notify::Deliveries>,
    /// Who this process is among the workers of a batch (`host:pid`).
    pub worker: String,
}

impl Shared {
    /// Refuses while the media location in force differs from the one the
    /// gallery records now.
    pub async fn check_media(&self) -> Result<(), EngineError> {
        let mut conn = db::conn(&self.pool).await?;
        let recorded = media::recorded(&mut conn).await?;
        Ok(media::check(&self.media, recorded.as_deref())?)
    }

    /// Where a batch run by this process works: a worker set up for other
    /// places must not join it.
    pub fn scope(&self) -> String {
        let prefix = if self.layout.prefix.is_empty() {
            String::new()
        } else {
            format!("/{}", self.layout.prefix)
        };
        format!(
            "s3://{}{prefix} and {}",
            self.layout.bucket, self.layout.media_location
        )
    }
}

/// What the movers of one run share.
pub struct RunContext {
    pub shared: Arc<Shared>,
    pub layout: Layout,
    pub batch_id: Uuid,
    pub direction: Direction,
    pub delete_source: bool,
    pub verify: bool,
    /// The table this run's log rows go to.
    pub log: crate::db::log::LogTable,
    /// Set to stop handing out files.
    pub cancel: Arc<run_state::CancelSignal>,
    /// Set when another process closed the batch.
    pub ended: std::sync::atomic::AtomicBool,
    /// A retry: only the files that failed in the batch.
    pub retry: bool,
    /// The chunks this process holds.
    pub leases: lease::Leases,
    /// Who this process is (`host:pid`).
    pub worker: String,
    /// Work that follows a commit (source deletions), limited to the run's
    /// concurrency.
    pub side_work: tokio::sync::Semaphore,
    /// What the bucket held when the run began (toward S3).
    pub targets: targets::TargetSnapshot,
    /// Concurrency, bandwidth limit and pause, as they are now.
    pub control: Arc<control::RunControl>,
    /// Woken when this process has cut a chunk (or the last): its own
    /// dispatch, finding none to lease, need not wait for its next look.
    pub chunks_added: tokio::sync::Notify,
}

impl RunContext {
    pub fn cancelled(&self) -> bool {
        self.cancel.is_set()
    }

    /// Another process closed the batch.
    pub fn ended(&self) -> bool {
        self.ended.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits while the run is paused; false once it is cancelled or
    /// closed, when no new file may begin.
    pub async fn may_begin(&self) -> bool {
        let mut settings = self.control.watch();
        loop {
            if self.cancelled() || self.ended() {
                return false;
            }
            if !settings.borrow_and_update().paused {
                return true;
            }
            tokio::select! {
                changed = settings.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                }
                _ = self.cancel.wait() => {}
                // A close by another process is seen by the heartbeat,
                // not announced.
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            }
        }
    }
}

/// The handle the HTTP layer (and the CLI) use.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    orchestrator: Addr<Orchestrator>,
    stats: Addr<Stats>,
    /// True while no run is preparing or running.
    idle: tokio::sync::watch::Receiver<bool>,
}

impl Engine {
    /// Connects to the database and S3, applies our migrations, and starts
    /// the long-lived actors. Must run inside an actix system.
    pub async fn start(config: Config) -> Result<Engine, EngineError> {
        db::migrate(config.database_url.expose()).await?;
        let pool = db::pool(config.database_url.expose(), 8)?;
        let metrics =
            Arc::new(Metrics::new().map_err(|e| EngineError::Internal(format!("metrics: {e}")))?);
        let s3 = S3Store::connect(&config.s3, metrics.clone()).await;
        let recorded = {
            let mut conn = db::conn(&pool).await?;
            media::recorded(&mut conn).await?
        };
        let media = media::resolve(config.media_location.as_deref(), recorded.as_deref());
        if let Err(e) = media::check(&media, recorded.as_deref()) {
            tracing::warn!(error = %e, "Migrations are refused until the media locations agree");
        }
        let layout = Layout::new(
            &media.path,
            config.media_dir.as_deref(),
            &config.s3.bucket,
            &config.s3.prefix,
            config.path_style,
        );
        tracing::info!(
            media_location = %layout.media_location,
            media_dir = %layout.media_dir.display(),
            "Media location"
        );
        let media_root_real = crate::store::disk::real_root(&layout.media_dir);
        let dumps = Dumps::new(
            DumpSettings {
                database_url: config.database_url.clone(),
                pg_dump: config.pg_dump.clone(),
                keep: config.dump_keep,
                media_dir: layout.media_dir.clone(),
                s3_prefix: config.s3.prefix.clone(),
            },
            pool.clone(),
            s3.clone(),
            metrics.clone(),
        );
        let worker = lease::worker_id();
        metrics.show_self(&worker);
        let shared = Arc::new(Shared {
            config,
            layout,
            pool,
            disk: DiskStore,
            s3,
            metrics: metrics.clone(),
            dumps,
            media,
            media_root_real,
            deliveries: Default::default(),
            worker,
        });
        let stats = Stats::new(metrics).start();
        let (idle_tx, idle) = tokio::sync::watch::channel(true);
        let orchestrator = Orchestrator::new(shared.clone(), stats.clone(), idle_tx).start();
        Ok(Engine {
            shared,
            orchestrator,
            stats,
            idle,
        })
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub async fn estimate(&self, direction: Direction) -> Result<estimate::Estimate, EngineError> {
        self.shared.check_media().await?;
        estimate::estimate(&self.shared, direction).await
    }

    /// The dry run of a start in `direction`: its rows, streamed. Refused
    /// as a start would be when the media locations disagree or the bucket
    /// cannot be reached.
    pub async fn plan(
        &self,
        direction: Direction,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<plan::PlanRow, EngineError>>, EngineError> {
        self.shared.check_media().await?;
        self.shared.s3.check_bucket().await?;
        Ok(plan::start(
            self.shared.clone(),
            direction,
            crate::model::FileKind::ALL.to_vec(),
        ))
    }

    pub async fn start_migration(&self, options: StartOptions) -> Result<StartReply, EngineError> {
        self.orchestrator
            .send(Start {
                options,
                retry_of: None,
            })
            .await?
    }

    /// The run in progress or the last one: from memory when this process
    /// ran it, else from the batch table.
    pub async fn status(&self) -> Result<StatusView, EngineError> {
        if let Some(view) = self.stats.send(GetStatus).await? {
            return Ok(view);
        }
        let mut conn = db::conn(&self.shared.pool).await?;
        let Some(batch) = batches::latest(&mut conn).await? else {
            return Ok(StatusView::idle());
        };
        let mut view = StatusView::idle();
        view.batch_id = Some(batch.id);
        view.direction = Direction::parse(&batch.direction);
        // A batch marked running that this process is not running belongs
        // to another engine process (or to one that died).
        view.is_active = batch.state.is_open();
        view.state = Some(batch.state);
        view.total = batch.total;
        view.completed = batch.completed;
        view.adopted = batch.adopted;
        view.replaced = batch.replaced;
        view.failed = batch.failed;
        view.skipped = batch.skipped;
        view.bytes_moved = batch.bytes_moved;
        view.waiting = (batch.total - batch.completed - batch.failed - batch.skipped).max(0);
        view.started_at = Some(batch.started_at);
        view.finished_at = batch.finished_at;
        view.error = batch.error;
        view.chunks = Some(db::chunks::counts(&mut conn, batch.id).await?);
        view.workers = db::chunks::workers(
            &mut conn,
            batch.id,
            lease::MAX_WORKERS_SHOWN,
            self.shared.config.lease_secs,
        )
        .await?;
        let live = view.workers.iter().filter(|w| w.is_live());
        if view.is_active {
            view.active = live.clone().map(|w| w.active).sum();
            view.files_per_second = live.map(|w| w.files_per_second).sum();
            view.waiting = (view.waiting - view.active).max(0);
            if let Ok(options) = StartOptions::from_value(batch.options) {
                view.concurrency = Some(options.concurrency.get());
                view.bandwidth_now = options.bandwidth_limit.as_ref().and_then(|l| l.rate_now());
                view.bandwidth_limit = options.bandwidth_limit.map(|l| l.to_string());
            }
        }
        view.count_paused();
        Ok(view)
    }

    /// Stops handing out files, in every process of the batch; the files in
    /// flight finish and the batch is closed as cancelled (a later start
    /// resumes it). A start still preparing (dumping the database) stops
    /// before its first file. The batch, when the start has chosen it.
    pub async fn cancel(&self) -> Result<Option<Uuid>, EngineError> {
        let mut conn = db::conn(&self.shared.pool).await?;
        // The batch says cancelling before this process stops: its close
        // then tells a cancel from a shutdown (which leaves a paused
        // batch paused).
        if let Some((batch, _)) = self.orchestrator.send(messages::GetControl).await? {
            db::chunks::request_cancel(&mut conn, batch).await?;
        }
        let here = self.orchestrator.send(Cancel).await?;
        let batch = match here {
            Some(Some(batch)) => Some(batch),
            Some(None) => return Ok(None),
            None => db::chunks::running(&mut conn).await?.map(|j| j.batch.id),
        };
        let Some(batch) = batch else {
            return Err(EngineError::NotRunning);
        };
        // The other processes read it at their next heartbeat.
        if !db::chunks::request_cancel(&mut conn, batch).await? && here.is_none() {
            return Err(EngineError::NotRunning);
        }
        Ok(Some(batch))
    }

    /// Changes the concurrency and/or bandwidth limit of the run in
    /// progress: at once in this process, within a heartbeat in the others
    /// of the batch; a resumed batch keeps the change.
    pub async fn change(&self, change: options::RunChange) -> Result<StatusView, EngineError> {
        let (here, batch) = self.controllable().await?;
        let mut conn = db::conn(&self.shared.pool).await?;
        let mut options = options_of(&batch)?;
        change.apply_to(&mut options);
        if !batches::set_options(&mut conn, batch.id, &options.to_value()).await? {
            return Err(EngineError::NotRunning);
        }
        drop(conn);
        if let Some(control) = here {
            let paused = control.get().paused;
            let mut settings = control::Settings::of(&options, BatchState::Running);
            settings.paused = paused;
            control.change(settings);
        }
        tracing::info!(
            batch_id = %batch.id,
            concurrency = options.concurrency.get(),
            bandwidth_limit = %options.bandwidth_limit.as_ref().map_or("off", |l| l.as_str()),
            "Run changed"
        );
        self.status().await
    }

    /// Hands out no more files, in every process of the batch, keeping the
    /// batch open; the files in flight finish.
    pub async fn pause(&self) -> Result<StatusView, EngineError> {
        self.set_paused(true).await?;
        self.status().await
    }

    /// Goes on with a paused batch. One whose processes are gone (stopped
    /// or restarted while paused) is started again here, with its options.
    pub async fn resume(&self) -> Result<StatusView, EngineError> {
        let batch = self.set_paused(false).await?;
        let here = self.orchestrator.send(messages::GetControl).await?;
        if here.is_none() && !self.has_live_processes(batch.id).await? {
            let options = options_of(&batch)?;
            tracing::info!(batch_id = %batch.id, "Resuming a paused batch that no process runs any more");
            match self.start_migration(options).await {
                Ok(_) => {}
                // Another process started it meanwhile.
                Err(EngineError::LockedElsewhere) => {}
                Err(e) => return Err(e),
            }
        }
        self.status().await
    }

    /// The batch a change, a pause or a resume applies to (running or
    /// paused), with this process's settings of it if it runs here.
    async fn controllable(
        &self,
    ) -> Result<(Option<Arc<control::RunControl>>, batches::BatchRow), EngineError> {
        let here = self.orchestrator.send(messages::GetControl).await?;
        let mut conn = db::conn(&self.shared.pool).await?;
        let batch = match &here {
            Some((batch, _)) => batches::get(&mut conn, *batch).await?,
            None => batches::current(&mut conn).await?,
        }
        .filter(|b| matches!(b.state, BatchState::Running | BatchState::Paused))
        .ok_or(EngineError::NotRunning)?;
        Ok((here.map(|(_, control)| control), batch))
    }

    /// Pauses or resumes the open batch; returns it. Asking for the state
    /// it is in already is no error.
    async fn set_paused(&self, paused: bool) -> Result<batches::BatchRow, EngineError> {
        let (here, batch) = self.controllable().await?;
        let mut conn = db::conn(&self.shared.pool).await?;
        let (from, to) = if paused {
            (BatchState::Running, BatchState::Paused)
        } else {
            (BatchState::Paused, BatchState::Running)
        };
        if !batches::switch(&mut conn, batch.id, from, to).await? {
            // Not in `from`: already there, or closed meanwhile.
            let now = batches::get(&mut conn, batch.id).await?.map(|b| b.state);
            if now != Some(to) {
                return Err(EngineError::NotRunning);
            }
        }
        drop(conn);
        if let Some(control) = here {
            let mut settings = control.get();
            settings.paused = paused;
            control.change(settings);
        }
        tracing::info!(batch_id = %batch.id, "{}", if paused { "Paused: no new files; the files in flight finish" } else { "Resumed" });
        Ok(batch)
    }

    /// Whether some process still beats for the batch.
    async fn has_live_processes(&self, batch: Uuid) -> Result<bool, EngineError> {
        let mut conn = db::conn(&self.shared.pool).await?;
        let workers = db::chunks::workers(
            &mut conn,
            batch,
            lease::MAX_WORKERS_SHOWN,
            self.shared.config.lease_secs,
        )
        .await?;
        Ok(workers.iter().any(|w| w.is_live()))
    }

    /// Stops this process's part of the run (a shutdown): the batch goes
    /// on in the other processes of it, if any.
    async fn stop_here(&self) -> bool {
        matches!(self.orchestrator.send(Cancel).await, Ok(Some(_)))
    }

    /// Joins the running batches of this database, one after the other,
    /// until `shutdown` resolves: what `noodle-migrate worker` does.
    /// Refuses a batch that works on another bucket, prefix or media
    /// location than this process's settings.
    pub async fn work(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), EngineError> {
        tokio::pin!(shutdown);
        let mut waiting_said = false;
        let mut last: Option<Uuid> = None;
        loop {
            let found = async {
                let mut conn = db::conn(&self.shared.pool).await?;
                let found = db::chunks::running(&mut conn).await?;
                // A batch this process finished its part of stays running
                // until its last chunk is done elsewhere.
                match found {
                    Some(j) if Some(j.batch.id) == last => {
                        let counts = db::chunks::counts(&mut conn, j.batch.id).await?;
                        Ok::<_, EngineError>((counts.pending > 0).then_some(j))
                    }
                    other => Ok(other),
                }
            }
            .await;
            match found {
                Ok(Some(joinable)) => {
                    let ours = self.shared.scope();
                    let theirs = joinable.scope.clone().unwrap_or_default();
                    if theirs != ours {
                        return Err(EngineError::WrongBatch {
                            batch: joinable.batch.id,
                            theirs,
                            ours,
                        });
                    }
                    self.shared.check_media().await?;
                    self.shared.s3.check_bucket().await?;
                    let batch = joinable.batch.id;
                    last = Some(batch);
                    waiting_said = false;
                    match self.orchestrator.send(messages::Join(joinable)).await? {
                        Ok(()) => {}
                        Err(EngineError::AlreadyRunning) => {}
                        Err(e) => return Err(e),
                    }
                    tokio::select! {
                        _ = self.until_idle() => {}
                        _ = &mut shutdown => {
                            tracing::info!(batch_id = %batch, "Shutting down: letting the files in flight finish");
                            self.shutdown(self.shared.config.shutdown_deadline).await;
                            return Ok(());
                        }
                    }
                    continue;
                }
                Ok(None) => {
                    if !waiting_said {
                        tracing::info!("Waiting for a migration to join");
                        waiting_said = true;
                    }
                }
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "Cannot look for a migration to join; trying again")
                }
                Err(e) => return Err(e),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = &mut shutdown => return Ok(()),
            }
        }
    }

    /// Whether a run is preparing or in progress in this process.
    fn is_running(&self) -> bool {
        !*self.idle.borrow()
    }

    /// Returns once no run is preparing or in progress in this process.
    pub async fn until_idle(&self) {
        let mut idle = self.idle.clone();
        // The sender lives as long as the orchestrator; were it gone, no
        // run would be either.
        let _ = idle.wait_for(|idle| *idle).await;
    }

    /// Cancels the run, if any, and waits up to `deadline` for it to close.
    pub async fn shutdown(&self, deadline: Duration) {
        if !self.stop_here().await {
            return;
        }
        let waited = tokio::time::timeout(deadline, self.until_idle()).await;
        if waited.is_err() {
            tracing::warn!(
                "Files still in flight at the shutdown deadline; the next start resumes the batch"
            );
        }
    }

    /// Waits, up to `deadline`, for the run to close and its end to reach
    /// the webhook: what a process that exits after a run does last.
    pub async fn settle(&self, deadline: Duration) {
        let started = std::time::Instant::now();
        let closed = tokio::time::timeout(deadline, self.until_idle()).await;
        let left = deadline.saturating_sub(started.elapsed());
        if closed.is_err() || !self.shared.deliveries.wait(left).await {
            tracing::warn!("The run's end may not have reached the webhook before exiting");
        }
    }

    /// Runs the failed files of a batch again, with the batch's options.
    pub async fn retry(&self, batch_id: Uuid) -> Result<StartReply, EngineError> {
        let mut conn = db::conn(&self.shared.pool).await?;
        let batch = batches::get(&mut conn, batch_id)
            .await?
            .ok_or(EngineError::BatchNotFound(batch_id))?;
        drop(conn);
        let mut options = options_of(&batch)?;
        // The batch's dump was taken when it started.
        options.dump_database = false;
        self.orchestrator
            .send(Start {
                options,
                retry_of: Some(batch_id),
            })
            .await?
    }

    pub async fn batches(
        &self,
        limit: i64,
        before: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Vec<batches::BatchRow>, EngineError> {
        let mut conn = db::conn(&self.shared.pool).await?;
        Ok(batches::list(&mut conn, limit, before).await?)
    }

    pub async fn failures(
        &self,
        batch_id: Uuid,
        after: Option<(String, Uuid)>,
        limit: i64,
    ) -> Result<Vec<batches::FailureRow>, EngineError> {
        let mut conn = db::conn(&self.shared.pool).await?;
        if batches::get(&mut conn, batch_id).await?.is_none() {
            return Err(EngineError::BatchNotFound(batch_id));
        }
        Ok(batches::failures(&mut conn, batch_id, after, limit).await?)
    }

    /// Files and objects no row points at. Refused while a migration runs
    /// here: its copies in flight would show up as orphans.
    pub async fn orphans(&self, limit: usize) -> Result<orphans::OrphanReport, EngineError> {
        if self.is_running() {
            return Err(EngineError::AlreadyRunning);
        }
        self.shared.check_media().await?;
        orphans::scan(&self.shared, limit).await
    }

    /// Dumps the database to the gallery's active backend.
    pub async fn create_dump(&self) -> Result<DumpReport, EngineError> {
        let backend = self.shared.config.active_backend().await?;
        Ok(self.shared.dumps.create(backend).await?)
    }

    /// The dumps on the active backend, newest first.
    pub async fn list_dumps(&self) -> Result<(crate::model::Backend, Vec<DumpInfo>), EngineError> {
        let backend = self.shared.config.active_backend().await?;
        Ok((backend, self.shared.dumps.list(backend).await?))
    }

    pub async fn delete_dump(&self, name: &str) -> Result<(), EngineError> {
        let backend = self.shared.config.active_backend().await?;
        Ok(self.shared.dumps.delete(backend, name).await?)
    }

    /// The owner of one of the gallery's credentials, when it is valid; none
    /// when the gallery's tables are not there to ask.
    pub async fn gallery_principal(
        &self,
        credential: db::credentials::Credential<'_>,
    ) -> Result<Option<db::credentials::Principal>, EngineError> {
        let mut conn = db::conn(&self.shared.pool).await?;
        if !db::credentials::available(&mut conn, credential).await? {
            return Ok(None);
        }
        Ok(db::credentials::lookup(&mut conn, credential).await?)
    }

    /// Reverts a batch's database paths; never moves a file.
    pub async fn rollback(&self, batch_id: Uuid) -> Result<RollbackReport, EngineError> {
        if self.is_running() {
            return Err(EngineError::AlreadyRunning);
        }
        let lock = db::lock::MigrationLock::try_acquire(self.shared.config.database_url.expose())
            .await?
            .ok_or(EngineError::LockedElsewhere)?;
        let result = async {
            let mut conn = db::conn(&self.shared.pool).await?;
            // Under the lock: our rows join the gallery's table if it has
            // appeared, so every row of the batch is in one place.
            let log = db::log::settle(&mut conn).await?;
            let known = batches::get(&mut conn, batch_id).await?.is_some();
            if !known && db::rollback::log_count(&mut conn, log, batch_id).await? == 0 {
                return Err(EngineError::BatchNotFound(batch_id));
            }
            let report = db::rollback::rollback(&mut conn, log, batch_id).await?;
            Ok(report)
        }
        .await;
        lock.release().await;
        let outcome = match &result {
            Ok(r) if r.failed == 0 => "complete",
            Ok(_) => "partial",
            Err(EngineError::BatchNotFound(_)) => "",
            Err(_) => "error",
        };
        if !outcome.is_empty() {
            self.stats
                .do_send(messages::StatsEvent::RollbackDone { outcome });
        }
        match &result {
            Ok(r) => {
                tracing::info!(batch_id = %batch_id, rolled_back = r.rolled_back, failed = r.failed, total = r.total, "Rollback finished")
            }
            Err(e) => tracing::warn!(batch_id = %batch_id, error = %e, "Rollback refused"),
        }
        result
    }
}
