//! Content fingerprints: MD5 (what S3 puts in a plain ETag and checks in
//! Content-MD5) and SHA-1 (what the gallery stores in `asset.checksum`),
//! computed together in one pass over the bytes.

use bytes::Bytes;
use md5::Digest as _;

/// Chunks at least this large are hashed off the async thread.
const BLOCKING_HASH_THRESHOLD: usize = 512 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    pub size: u64,
    /// `None` from a hasher made `without_md5`.
    pub md5: Option<[u8; 16]>,
    pub sha1: [u8; 20],
}

#[derive(Clone)]
pub struct Hasher {
    md5: Option<md5::Md5>,
    sha1: sha1::Sha1,
    size: u64,
}

impl Default for Hasher {
    fn default() -> Hasher {
        Hasher::new()
    }
}

impl Hasher {
    pub fn new() -> Hasher {
        Hasher {
            md5: Some(md5::Md5::default()),
            sha1: sha1::Sha1::default(),
            size: 0,
        }
    }

    /// SHA-1 alone, for a download whose object carries the SHA-1 we
    /// stored: MD5 is the costlier of the two, and nothing needs it then.
    pub fn without_md5() -> Hasher {
        Hasher {
            md5: None,
            ..Hasher::new()
        }
    }

    pub fn update_sync(&mut self, data: &[u8]) {
        if let Some(md5) = &mut self.md5 {
            md5.update(data);
        }
        self.sha1.update(data);
        self.size += data.len() as u64;
    }

    /// Hashes a chunk without blocking the actor thread on large chunks.
    pub async fn update(&mut self, data: Bytes) {
        if data.len() < BLOCKING_HASH_THRESHOLD {
            self.update_sync(&data);
            return;
        }
        let mut hasher = std::mem::take(self);
        // A join error only happens at shutdown; the hash is moot then.
        *self = tokio::task::spawn_blocking(move || {
            hasher.update_sync(&data);
            hasher
        })
        .await
        .unwrap_or_default();
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn finish(self) -> Digest {
        Digest {
            size: self.size,
            md5: self.md5.map(|m| m.finalize().into()),
            sha1: self.sha1.finalize().into(),
        }
    }
}

/// The MD5 of one multipart part (for its Content-MD5), off the async
/// thread when it is large.
pub async fn md5_of(data: Bytes) -> [u8; 16] {
    if data.len() < BLOCKING_HASH_THRESHOLD {
        return md5::Md5::digest(&data).into();
    }
    let shared = data.clone();
    match tokio::task::spawn_blocking(move || md5::Md5::digest(&shared).into()).await {
        Ok(md5) => md5,
        // Only at shutdown; hash here rather than fail.
        Err(_) => md5::Md5::digest(&data).into(),
    }
}

/// Hashes a whole byte slice (small files, already in memory).
pub fn digest_of(data: &[u8]) -> Digest {
    let mut h = Hasher::new();
    h.update_sync(data);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let d = digest_of(b"abc");
        assert_eq!(
            hex::encode(d.md5.unwrap()),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            hex::encode(d.sha1),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(d.size, 3);
    }

    #[tokio::test]
    async fn chunked_equals_whole() {
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = Hasher::new();
        for chunk in data.chunks(700_000) {
            h.update(Bytes::copy_from_slice(chunk)).await;
        }
        assert_eq!(h.finish(), digest_of(&data));
    }
}
