//! Storage: the local disk under the media location, and an S3 bucket.
//!
//! Both sides speak in whole files: stat, hash, stream in, stream out,
//! delete. What they do alike is the [`Store`] trait, so that the code
//! that does the same on either side (dumps, the orphan scan, a mover's
//! deletes) is written once; what differs (conditional uploads, placing a
//! download by hard link, ETags and multipart) stays on each side. Nothing
//! here knows about the database; nothing here ever leaves a half-written
//! file at a final path or a half-finished multipart upload.

mod direct;
pub mod disk;
pub mod hash;
mod http1;
pub mod quickack;
pub mod s3;
mod small_put;

pub use disk::DiskStore;
pub use hash::{Digest, Hasher, StreamHasher};
pub use s3::{ObjectMeta, S3Store, WriteIf};

/// One side of the library. Names are the side's own: a path on this
/// machine, an object key.
///
/// Only used inside this crate, where nothing needs its futures to be
/// `Send` beyond what the callers already get.
#[allow(async_fn_in_trait)]
pub trait Store {
    type Writer<'a>: StoreWriter
    where
        Self: 'a;
    type Listing<'a>: StoreListing
    where
        Self: 'a;

    /// Where a name lives, as a person reads it (a path, `s3://bucket/key`).
    fn describe(&self, name: &str) -> String;

    /// The size of the file at `name`, or `None` when there is none.
    async fn size(&self, name: &str) -> Result<Option<u64>, StoreError>;

    /// Removes a file; one already gone is not an error.
    async fn delete(&self, name: &str) -> Result<(), StoreError>;

    /// A new file at `name`, there only once finished. Dropped unfinished
    /// (its caller went away, a write failed), it leaves nothing behind.
    async fn create(&self, name: &str) -> Result<Self::Writer<'_>, StoreError>;

    /// Every file under `folder` (a name ending in `/`), a page at a time,
    /// in the side's sorted order: names compared component by component
    /// on disk, keys byte by byte in a bucket.
    fn list<'a>(&'a self, folder: &str) -> Self::Listing<'a>;
}

/// A file being written; see [`Store::create`].
#[allow(async_fn_in_trait)]
pub trait StoreWriter {
    async fn write(&mut self, data: &[u8]) -> Result<(), StoreError>;
    /// Puts the file in place, durably; its size.
    async fn finish(self) -> Result<u64, StoreError>;
    /// Drops what was written, and waits until it is gone.
    async fn abort(self);
}

/// Files of a folder, page by page; see [`Store::list`].
#[allow(async_fn_in_trait)]
pub trait StoreListing {
    /// The next page, or `None` after the last.
    async fn next_page(&mut self) -> Result<Option<Vec<Listed>>, StoreError>;
}

/// One file of a listing.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub size: u64,
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("S3 {operation} failed: {message}")]
    S3 {
        operation: &'static str,
        message: String,
        /// HTTP status, when the server answered at all.
        status: Option<u16>,
    },
    #[error("the source changed while it was being read ({0})")]
    SourceChanged(String),
    #[error("{0} was written by someone else during the migration; it is left as it is")]
    TargetTaken(String),
    #[error("{0} leads outside the media location through a symbolic link")]
    Outside(String),
    #[error("bucket {bucket}: {problem}")]
    Bucket {
        bucket: String,
        problem: BucketProblem,
    },
}

/// Why the bucket health check failed, in words a user can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BucketProblem {
    #[error("access denied: check S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY and the bucket policy")]
    AccessDenied,
    #[error("no such bucket: check S3_BUCKET (and S3_ENDPOINT / S3_REGION)")]
    NotFound,
    #[error("cannot reach the S3 endpoint: {0}")]
    Unreachable(String),
    #[error("unexpected answer from S3: {0}")]
    Other(String),
}

impl StoreError {
    pub fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            what,
            path: path.display().to_string(),
            source,
        }
    }

    /// A short, stable reason code for reports and metrics.
    pub fn reason(&self) -> crate::model::Reason {
        use crate::model::Reason;
        match self {
            StoreError::Io { .. } => Reason::DiskError,
            StoreError::S3 { .. } | StoreError::Bucket { .. } => Reason::S3Error,
            StoreError::SourceChanged(_) => Reason::SourceChanged,
            StoreError::TargetTaken(_) => Reason::TargetInUse,
            StoreError::Outside(_) => Reason::UnsafePath,
        }
    }
}
