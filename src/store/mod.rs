//! Storage: the local disk under the media location, and an S3 bucket.
//!
//! Both sides speak in whole files: stat, hash, stream in, stream out,
//! delete. Nothing here knows about the database; nothing here ever leaves
//! a half-written file at a final path or a half-finished multipart upload.

pub mod disk;
pub mod hash;
pub mod s3;

pub use disk::DiskStore;
pub use hash::{Digest, Hasher};
pub use s3::{ObjectMeta, S3Store, WriteIf};

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
        }
    }
}
