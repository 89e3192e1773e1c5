//! A snapshot of the keys already in the bucket, taken when a run toward
//! S3 begins, so that most files need no HEAD before their upload.
//!
//! A first migration finds an empty bucket (or nearly): the listing is a
//! few requests, and every file is then known to have no target. A key in
//! the snapshot is checked with a HEAD as before (adopted when identical,
//! refused when different). Past `MAX_KEYS` the snapshot is dropped and
//! every file gets its HEAD, so memory stays small whatever the bucket.

use crate::store::{S3Store, StoreError};
use std::collections::HashSet;
use std::sync::OnceLock;

/// Keys kept at most (about 100 bytes each).
pub const MAX_KEYS: usize = 200_000;

#[derive(Default)]
pub struct TargetSnapshot {
    keys: OnceLock<Option<HashSet<String>>>,
}

impl TargetSnapshot {
    /// Lists the bucket under `prefix` (the whole bucket when empty).
    /// Without a complete listing, nothing is known and every file is
    /// checked.
    pub async fn take(&self, s3: &S3Store, prefix: &str) -> Result<(), StoreError> {
        let mut keys = HashSet::new();
        let mut complete = true;
        s3.list_each(prefix, |object| {
            if keys.len() < MAX_KEYS {
                keys.insert(object.name);
            } else {
                complete = false;
            }
        })
        .await?;
        let _ = self.keys.set(complete.then_some(keys));
        Ok(())
    }

    /// True when `key` was not in the bucket at the start of the run.
    pub fn known_absent(&self, key: &str) -> bool {
        matches!(self.keys.get(), Some(Some(keys)) if !keys.contains(key))
    }

    /// Keys held, when a snapshot was taken.
    pub fn keys_held(&self) -> Option<usize> {
        self.keys.get().and_then(|k| k.as_ref().map(HashSet::len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_snapshot_nothing_is_known() {
        let snapshot = TargetSnapshot::default();
        assert!(!snapshot.known_absent("upload/a.jpg"));
        let _ = snapshot.keys.set(None);
        assert!(!snapshot.known_absent("upload/a.jpg"));
    }

    #[test]
    fn a_snapshot_knows_what_is_missing() {
        let snapshot = TargetSnapshot::default();
        let _ = snapshot
            .keys
            .set(Some(HashSet::from(["upload/a.jpg".to_string()])));
        assert!(!snapshot.known_absent("upload/a.jpg"));
        assert!(snapshot.known_absent("upload/b.jpg"));
        assert_eq!(snapshot.keys_held(), Some(1));
    }
}
