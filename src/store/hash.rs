//! Content fingerprints: MD5 (what S3 puts in a plain ETag and checks in
//! Content-MD5) and SHA-1 (what the gallery stores in `asset.checksum`),
//! computed together in one pass over the bytes.

use super::StoreError;
use bytes::Bytes;
use md5::Digest as _;

/// Chunks at least this large are hashed off the async thread.
const BLOCKING_HASH_THRESHOLD: usize = 512 * 1024;

/// Bytes of a stream gathered before they are hashed off the async thread.
const STREAM_BATCH: usize = 1024 * 1024;

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

    /// SHA-1 alone, where nothing needs the MD5 of the whole (a download
    /// whose object carries the SHA-1 we stored, a multipart upload): MD5
    /// is the costlier of the two.
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

/// Hashes a stream of chunks (a download) as it arrives: a batch of about
/// `STREAM_BATCH` bytes at a time on the blocking pool, while the next
/// batch is being received. A download's bytes come in small chunks, and
/// hashing them in place kept the one async thread (which also reads every
/// connection) busy for most of a large download; a batch waits only for
/// the one before it. A stream shorter than a batch is hashed in place.
pub struct StreamHasher {
    /// The state, when no batch is being hashed.
    idle: Option<Hasher>,
    /// The batch being hashed, which hands the state back.
    running: Option<tokio::task::JoinHandle<Hasher>>,
    batch: Vec<Bytes>,
    batched: usize,
}

impl StreamHasher {
    pub fn new(hasher: Hasher) -> StreamHasher {
        StreamHasher {
            idle: Some(hasher),
            running: None,
            batch: Vec::new(),
            batched: 0,
        }
    }

    pub async fn update(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        self.batched += chunk.len();
        self.batch.push(chunk);
        if self.batched < STREAM_BATCH {
            return Ok(());
        }
        let mut hasher = self.state().await?;
        let batch = std::mem::take(&mut self.batch);
        self.batched = 0;
        self.running = Some(tokio::task::spawn_blocking(move || {
            for chunk in &batch {
                hasher.update_sync(chunk);
            }
            hasher
        }));
        Ok(())
    }

    pub async fn finish(mut self) -> Result<Digest, StoreError> {
        let mut hasher = self.state().await?;
        for chunk in &self.batch {
            hasher.update_sync(chunk);
        }
        Ok(hasher.finish())
    }

    /// The state once every batch sent off is hashed.
    async fn state(&mut self) -> Result<Hasher, StoreError> {
        if let Some(running) = self.running.take() {
            // Only when the blocking pool goes away (the process is
            // shutting down).
            return running.await.map_err(stopped);
        }
        self.idle
            .take()
            .ok_or_else(|| stopped("an earlier batch was lost"))
    }
}

fn stopped(e: impl std::fmt::Display) -> StoreError {
    StoreError::S3 {
        operation: "GetObject",
        status: None,
        message: format!("hashing the body stopped: {e}"),
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
    whole(Hasher::new(), data)
}

/// The SHA-1 alone of a whole byte slice: a small upload sends it for the
/// server to check, and needs the MD5 only from a server that does not.
pub fn sha1_digest_of(data: &[u8]) -> Digest {
    whole(Hasher::without_md5(), data)
}

fn whole(mut hasher: Hasher, data: &[u8]) -> Digest {
    hasher.update_sync(data);
    hasher.finish()
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
    async fn streamed_equals_whole() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        // Chunks smaller than a batch, one larger, and a stream that ends
        // before its first batch.
        for (size, len) in [
            (16_384, data.len()),
            (1_500_000, data.len()),
            (1000, 30_000),
        ] {
            let mut h = StreamHasher::new(Hasher::new());
            for chunk in data[..len].chunks(size) {
                h.update(Bytes::copy_from_slice(chunk)).await.unwrap();
            }
            assert_eq!(h.finish().await.unwrap(), digest_of(&data[..len]));
        }
    }
}
