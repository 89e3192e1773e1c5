//! The local side: files under the media location.
//!
//! Writes go to a temporary file in the target folder, are fsynced, then
//! renamed over the final name, and the folder is fsynced: a crash leaves
//! either no file or a whole one at the final path, never a partial one.

use super::direct::{self, AlignedBuffer};
use super::hash::{Digest, Hasher};
use super::{Listed, Store, StoreError, StoreListing, StoreWriter};
use std::path::{Path, PathBuf};
use tokio::fs;

/// Size of the read buffer used when hashing a file.
const READ_CHUNK: usize = 1024 * 1024;

/// Marks our temporary files, so that leftovers of a crash are recognisable.
pub const TEMP_MARKER: &str = ".noodle-tmp-";

/// A file read for an upload.
pub enum Loaded {
    /// Small enough for one request: its bytes and their digest (SHA-1
    /// only; the upload adds the MD5 where the server needs it).
    Whole { data: bytes::Bytes, digest: Digest },
    /// Sent in parts: its size.
    Large(u64),
}

/// Files live under one root; symbolic links must not lead out of it.
#[derive(Debug, Clone, Default)]
pub struct DiskStore;

impl DiskStore {
    /// Whether `path` really lies under `root` (already resolved, see
    /// [`real_root`]) once symbolic links are resolved. `path` may not
    /// exist yet (a first copy to disk): the part that exists is resolved,
    /// the rest is taken as written.
    pub async fn stays_under(&self, root: &Path, path: &Path) -> Result<bool, StoreError> {
        let (root, path) = (root.to_path_buf(), path.to_path_buf());
        // One trip to the blocking pool for the whole walk: this runs for
        // every file, and each trip costs two thread wake-ups.
        blocking(move || resolves_under(&root, &path)).await
    }

    /// The size of a regular file, or `None` when nothing is there.
    pub async fn stat(&self, path: &Path) -> Result<Option<u64>, StoreError> {
        match fs::metadata(path).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Err(StoreError::io(
                "not a regular file:",
                path,
                std::io::Error::other("expected a file"),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("cannot stat", path, e)),
        }
    }

    /// Size and modification time: what changes when a file is written.
    pub async fn version(
        &self,
        path: &Path,
    ) -> Result<(u64, Option<std::time::SystemTime>), StoreError> {
        let meta = fs::metadata(path)
            .await
            .map_err(|e| StoreError::io("cannot stat", path, e))?;
        Ok((meta.len(), meta.modified().ok()))
    }

    /// `len` bytes of a file from `offset` (fewer at its end) and their
    /// MD5, in one trip to the blocking pool.
    pub async fn read_part(
        &self,
        path: &Path,
        offset: u64,
        len: usize,
    ) -> Result<(bytes::Bytes, [u8; 16]), StoreError> {
        let path = path.to_path_buf();
        blocking(move || {
            use md5::Digest as _;
            use std::os::unix::fs::FileExt;
            let file =
                std::fs::File::open(&path).map_err(|e| StoreError::io("cannot open", &path, e))?;
            let mut part = vec![0u8; len];
            let mut filled = 0;
            while filled < len {
                let n = file
                    .read_at(&mut part[filled..], offset + filled as u64)
                    .map_err(|e| StoreError::io("cannot read", &path, e))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            part.truncate(filled);
            let md5 = md5::Md5::digest(&part).into();
            Ok((bytes::Bytes::from(part), md5))
        })
        .await
    }

    /// Hashes a whole file (SHA-1 and MD5), streaming, in one trip to the
    /// blocking pool.
    pub async fn hash_file(&self, path: &Path) -> Result<Digest, StoreError> {
        self.hash_file_with(path, Hasher::new()).await
    }

    /// As [`DiskStore::hash_file`], SHA-1 alone: for a multipart upload,
    /// whose ETag is no MD5 of the whole and whose parts carry their own.
    /// MD5 is the costlier of the two (about 0.65 GB/s here, SHA-1 1.8).
    pub async fn sha1_file(&self, path: &Path) -> Result<Digest, StoreError> {
        self.hash_file_with(path, Hasher::without_md5()).await
    }

    async fn hash_file_with(&self, path: &Path, mut hasher: Hasher) -> Result<Digest, StoreError> {
        let path = path.to_path_buf();
        blocking(move || {
            let mut file =
                std::fs::File::open(&path).map_err(|e| StoreError::io("cannot open", &path, e))?;
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                let n = std::io::Read::read(&mut file, &mut buf)
                    .map_err(|e| StoreError::io("cannot read", &path, e))?;
                if n == 0 {
                    return Ok(hasher.finish());
                }
                hasher.update_sync(&buf[..n]);
            }
        })
        .await
    }

    /// A file to upload, in one trip to the blocking pool: read whole and
    /// hashed when it is at most `whole_up_to` bytes, else only its size;
    /// `None` when nothing is there.
    pub async fn load(&self, path: &Path, whole_up_to: u64) -> Result<Option<Loaded>, StoreError> {
        let path = path.to_path_buf();
        blocking(move || match open_existing(&path)? {
            Some(file) => read_loaded(file, &path, whole_up_to).map(Some),
            None => Ok(None),
        })
        .await
    }

    /// As [`DiskStore::load`], and refused with [`StoreError::Outside`]
    /// unless the file really lies under `root` (already resolved): the
    /// check and the read in one trip to the blocking pool, and the check
    /// made on the file opened, not on its name walked beforehand.
    pub async fn load_under(
        &self,
        root: &Path,
        path: &Path,
        whole_up_to: u64,
    ) -> Result<Option<Loaded>, StoreError> {
        let (root, path) = (root.to_path_buf(), path.to_path_buf());
        blocking(move || {
            let outside = || StoreError::Outside(path.display().to_string());
            let Some(file) = open_existing(&path)? else {
                return match resolves_under(&root, &path)? {
                    true => Ok(None),
                    false => Err(outside()),
                };
            };
            if !opened_path(&file, &path)?.starts_with(&root) {
                return Err(outside());
            }
            read_loaded(file, &path, whole_up_to).map(Some)
        })
        .await
    }

    /// Starts an atomic write of `target`. Nothing is created until the
    /// first bytes are written out.
    pub async fn create_temp(&self, target: &Path) -> Result<TempFile, StoreError> {
        if target.parent().is_none() {
            return Err(StoreError::io(
                "no parent folder for",
                target,
                std::io::Error::other("root"),
            ));
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = target.with_file_name(format!(
            ".{name}{TEMP_MARKER}{}",
            uuid::Uuid::new_v4().simple()
        ));
        Ok(TempFile {
            file: None,
            writing: None,
            buffer: Buffer::Cached(Vec::new()),
            direct: false,
            temp,
            target: target.to_path_buf(),
            written: 0,
            flushed: 0,
            settled: false,
        })
    }

    /// Removes a file; a file already gone is not an error.
    pub async fn delete(&self, path: &Path) -> Result<(), StoreError> {
        match fs::remove_file(path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("cannot delete", path, e)),
        }
    }
}

/// The media folder with symbolic links resolved, as the confinement
/// checks compare with it; as written where it cannot be resolved.
pub fn real_root(root: &Path) -> PathBuf {
    resolve(root).unwrap_or_else(|_| root.to_path_buf())
}

/// Whether `path`, with the part that exists resolved, lies under `root`
/// (already resolved).
fn resolves_under(root: &Path, path: &Path) -> Result<bool, StoreError> {
    Ok(resolve(path)?.starts_with(root))
}

/// The file at `path`, or `None` when nothing is there.
fn open_existing(path: &Path) -> Result<Option<std::fs::File>, StoreError> {
    match std::fs::File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("cannot open", path, e)),
    }
}

/// Where an open file really is: the kernel's name for it (one call,
/// where walking `path` takes one per folder), or `path` resolved where
/// /proc is not mounted.
fn opened_path(file: &std::fs::File, path: &Path) -> Result<PathBuf, StoreError> {
    use std::os::fd::AsRawFd;
    match std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
        Ok(real) if real.is_absolute() => Ok(real),
        _ => resolve(path),
    }
}

/// An open file to upload: whole and hashed when at most `whole_up_to`
/// bytes, else its size.
fn read_loaded(
    mut file: std::fs::File,
    path: &Path,
    whole_up_to: u64,
) -> Result<Loaded, StoreError> {
    let meta = file
        .metadata()
        .map_err(|e| StoreError::io("cannot stat", path, e))?;
    if !meta.is_file() {
        return Err(StoreError::io(
            "not a regular file:",
            path,
            std::io::Error::other("expected a file"),
        ));
    }
    if meta.len() > whole_up_to {
        return Ok(Loaded::Large(meta.len()));
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    std::io::Read::read_to_end(&mut file, &mut data)
        .map_err(|e| StoreError::io("cannot read", path, e))?;
    let digest = super::hash::sha1_digest_of(&data);
    Ok(Loaded::Whole {
        data: bytes::Bytes::from(data),
        digest,
    })
}

/// `path` with its longest existing prefix canonicalised.
fn resolve(path: &Path) -> Result<PathBuf, StoreError> {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        match std::fs::canonicalize(&existing) {
            Ok(mut real) => {
                real.extend(rest.iter().rev());
                return Ok(real);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match existing.file_name() {
                Some(name) => {
                    rest.push(name.to_os_string());
                    existing.pop();
                }
                None => return Ok(path.to_path_buf()),
            },
            Err(e) => return Err(StoreError::io("cannot resolve", &existing, e)),
        }
    }
}

/// Runs blocking file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| work_stopped(Path::new(""), e))?
}

/// A trip to the blocking pool that never came back (the pool went away:
/// the process is shutting down).
fn work_stopped(path: &Path, e: tokio::task::JoinError) -> StoreError {
    StoreError::io("file work stopped:", path, std::io::Error::other(e))
}

/// Bytes a temporary file gathers before they are written out: a small
/// download goes to disk in one trip to the blocking pool, and a large one
/// in trips of this size.
const WRITE_BUFFER: usize = 1024 * 1024;

/// Files expected to be at least this large are written past the page
/// cache (see `store::direct`).
const DIRECT_FROM: u64 = 8 * 1024 * 1024;

/// Where a temporary file's bytes wait to be written out.
enum Buffer {
    /// Through the page cache, gathered up to `WRITE_BUFFER`.
    Cached(Vec<u8>),
    /// Past it, in whole aligned blocks of `WRITE_BUFFER`; the buffer is
    /// kept from block to block.
    Direct(AlignedBuffer),
}

impl Buffer {
    fn bytes(&self) -> &[u8] {
        match self {
            Buffer::Cached(data) => data,
            Buffer::Direct(block) => block.filled(),
        }
    }
}

/// What a write on the blocking pool hands back.
struct Written {
    file: std::fs::File,
    buffer: Buffer,
    direct: bool,
    len: usize,
}

/// A file being written next to its final name. Dropped without `commit`
/// (its caller went away), it removes the temporary file; `discard` does
/// the same and waits for it.
pub struct TempFile {
    /// Created with the first bytes written out; away while a write is in
    /// flight.
    file: Option<std::fs::File>,
    /// The write in flight.
    writing: Option<tokio::task::JoinHandle<Result<Written, StoreError>>>,
    /// Bytes received and not yet written out.
    buffer: Buffer,
    /// The file takes direct writes.
    direct: bool,
    temp: PathBuf,
    target: PathBuf,
    /// Bytes taken so far.
    written: u64,
    /// Bytes written out to the file so far.
    flushed: u64,
    /// Renamed into place or removed: nothing left to clean up.
    settled: bool,
}

impl TempFile {
    /// The size the file is expected to reach: a large one is written
    /// past the page cache. Before the first write.
    pub fn expect(&mut self, size: u64) {
        if size >= DIRECT_FROM && self.written == 0 {
            self.buffer = Buffer::Direct(AlignedBuffer::new(WRITE_BUFFER));
        }
    }

    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        if self.settled {
            return Err(self.closed());
        }
        self.written += data.len() as u64;
        while !data.is_empty() {
            let full = match &mut self.buffer {
                Buffer::Cached(buffer) => {
                    buffer.extend_from_slice(data);
                    data = &[];
                    buffer.len() >= WRITE_BUFFER
                }
                Buffer::Direct(block) => {
                    data = &data[block.fill(data)..];
                    block.is_full()
                }
            };
            if full {
                self.send_out().await?;
            }
        }
        Ok(())
    }

    /// Writes what was received to the temporary file (creating it and its
    /// folders first), and waits until it is written. A direct file's
    /// last, partial block goes through the page cache.
    pub async fn write_out(&mut self) -> Result<(), StoreError> {
        if self.settled {
            return Err(self.closed());
        }
        if !self.buffer.bytes().is_empty() || (self.file.is_none() && self.writing.is_none()) {
            self.send_out().await?;
        }
        self.land().await?;
        Ok(())
    }

    /// Hands the bytes received to the blocking pool once the write before
    /// them has landed, and returns: the next bytes arrive while these go
    /// to disk, and memory holds no more than two buffers.
    async fn send_out(&mut self) -> Result<(), StoreError> {
        let spare = self.land().await?;
        // A whole block is followed by another (the one the last write
        // handed back, if any); anything else was the file's last bytes.
        let next = match (&self.buffer, spare) {
            (Buffer::Direct(block), Some(Buffer::Direct(spare))) if block.is_full() => {
                Buffer::Direct(spare)
            }
            (Buffer::Direct(block), _) if block.is_full() => {
                Buffer::Direct(AlignedBuffer::new(WRITE_BUFFER))
            }
            _ => Buffer::Cached(Vec::new()),
        };
        let buffer = std::mem::replace(&mut self.buffer, next);
        let file = self.file.take();
        let (temp, offset, mut direct) = (self.temp.clone(), self.flushed, self.direct);
        self.writing = Some(tokio::task::spawn_blocking(move || {
            let mut file = match file {
                Some(file) => file,
                None => {
                    let file = create_new(&temp)?;
                    direct = matches!(buffer, Buffer::Direct(_)) && direct::start_direct(&file);
                    file
                }
            };
            let failed = |e| StoreError::io("cannot write", &temp, e);
            let len = buffer.bytes().len();
            direct::write_all(&mut file, buffer.bytes(), &mut direct).map_err(failed)?;
            if !direct && len >= WRITE_BUFFER {
                start_writeback(&file, offset, len);
            }
            // A whole block's buffer serves again; any other is done with
            // (what waits for its commit holds no memory).
            let buffer = match buffer {
                Buffer::Direct(mut block) if block.is_full() => {
                    block.clear();
                    Buffer::Direct(block)
                }
                _ => Buffer::Cached(Vec::new()),
            };
            Ok(Written {
                file,
                buffer,
                direct,
                len,
            })
        }));
        Ok(())
    }

    /// Waits for the write in flight, if any; the buffer it hands back.
    async fn land(&mut self) -> Result<Option<Buffer>, StoreError> {
        let Some(writing) = self.writing.take() else {
            return Ok(None);
        };
        let written = writing.await.map_err(|e| work_stopped(&self.temp, e))??;
        self.file = Some(written.file);
        self.direct = written.direct;
        self.flushed += written.len as u64;
        Ok(Some(written.buffer))
    }

    fn closed(&self) -> StoreError {
        StoreError::io(
            "already closed:",
            &self.temp,
            std::io::Error::other("closed"),
        )
    }

    /// Flushes to stable storage and moves the file to its final name,
    /// replacing what is there.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.settle(false).await
    }

    /// As `commit`, but only if nothing is at the final name: a file
    /// someone else (the gallery) wrote there meanwhile is never replaced.
    pub async fn commit_new(self) -> Result<(), StoreError> {
        self.settle(true).await
    }

    /// The rest of the write in one trip to the blocking pool: what is
    /// left of the buffer, the fsync, the rename and the folder's fsync.
    async fn settle(mut self, only_new: bool) -> Result<(), StoreError> {
        if self.settled {
            return Err(self.closed());
        }
        self.write_out().await?;
        let file = self.file.take().ok_or_else(|| self.closed())?;
        let (temp, target) = (self.temp.clone(), self.target.clone());
        // Whatever happens now, the temporary name is dealt with here.
        self.settled = true;
        blocking(move || {
            let result = place(file, &temp, &target, only_new);
            if result.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            result
        })
        .await
    }

    pub async fn discard(mut self) {
        self.settled = true;
        self.buffer = Buffer::Cached(Vec::new());
        // A write in flight may be the one that creates the file.
        let _ = self.land().await;
        self.file.take();
        // Even a file never handed back may exist (a write that failed).
        let temp = self.temp.clone();
        let _ = blocking(move || {
            let _ = std::fs::remove_file(&temp);
            Ok(())
        })
        .await;
    }
}

/// Starts writing a large file's pages to disk as they come, so that the
/// fsync at its end finds little left to do (and the download and the
/// disk work at the same time). Only a hint: the fsync is what counts.
fn start_writeback(file: &std::fs::File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on a descriptor this function borrows;
    // it reads no memory of ours.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Creates the temporary file, and its folders if need be.
fn create_new(temp: &Path) -> Result<std::fs::File, StoreError> {
    if let Some(dir) = temp.parent() {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io("cannot create folder", dir, e))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)
        .map_err(|e| StoreError::io("cannot create", temp, e))
}

/// Makes `temp` durable and gives it the name `target`, then makes the
/// folder entry durable too.
fn place(
    file: std::fs::File,
    temp: &Path,
    target: &Path,
    only_new: bool,
) -> Result<(), StoreError> {
    file.sync_all()
        .map_err(|e| StoreError::io("cannot fsync", temp, e))?;
    drop(file);
    if only_new {
        place_new(temp, target)?;
    } else {
        std::fs::rename(temp, target)
            .map_err(|e| StoreError::io("cannot rename into", target, e))?;
    }
    if let Some(dir) = target.parent() {
        // The rename is durable only once the folder entry is.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Gives `temp` the name `target` unless that name is taken, atomically:
/// a hard link fails when the name exists, where a rename would replace
/// it. On a file system without hard links, the name is checked just
/// before the rename instead.
fn place_new(temp: &Path, target: &Path) -> Result<(), StoreError> {
    let taken = || StoreError::TargetTaken(target.display().to_string());
    match std::fs::hard_link(temp, target) {
        Ok(()) => {
            let _ = std::fs::remove_file(temp);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(taken()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc_codes::EPERM | libc_codes::ENOTSUP | libc_codes::EMLINK)
            ) =>
        {
            if std::fs::symlink_metadata(target).is_ok() {
                return Err(taken());
            }
            std::fs::rename(temp, target)
                .map_err(|e| StoreError::io("cannot rename into", target, e))
        }
        Err(e) => Err(StoreError::io("cannot link into", target, e)),
    }
}

impl Store for DiskStore {
    type Writer<'a> = TempFile;
    type Listing<'a> = DiskListing;

    fn describe(&self, path: &str) -> String {
        path.to_string()
    }

    async fn size(&self, path: &str) -> Result<Option<u64>, StoreError> {
        self.stat(Path::new(path)).await
    }

    async fn delete(&self, path: &str) -> Result<(), StoreError> {
        DiskStore::delete(self, Path::new(path)).await
    }

    async fn create(&self, path: &str) -> Result<TempFile, StoreError> {
        self.create_temp(Path::new(path)).await
    }

    fn list(&self, folder: &str) -> DiskListing {
        DiskListing {
            folder: PathBuf::from(folder),
            pages: None,
        }
    }
}

impl StoreWriter for TempFile {
    async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        TempFile::write(self, data).await
    }

    async fn finish(self) -> Result<u64, StoreError> {
        let written = self.written;
        self.commit().await?;
        Ok(written)
    }

    async fn abort(self) {
        self.discard().await
    }
}

/// Files listed at a time by a walk.
const WALK_PAGE: usize = 1000;

/// A sorted walk of a folder (see [`walk_sorted`]), run on a blocking
/// thread once the first page is asked for, and handed over a page at a
/// time: memory holds one folder's names and a few pages, however many
/// files there are.
pub struct DiskListing {
    folder: PathBuf,
    pages: Option<tokio::sync::mpsc::Receiver<Result<Vec<Listed>, StoreError>>>,
}

impl StoreListing for DiskListing {
    async fn next_page(&mut self) -> Result<Option<Vec<Listed>>, StoreError> {
        let folder = &self.folder;
        let pages = self
            .pages
            .get_or_insert_with(|| walk_in_pages(folder.clone()));
        pages.recv().await.transpose()
    }
}

fn walk_in_pages(folder: PathBuf) -> tokio::sync::mpsc::Receiver<Result<Vec<Listed>, StoreError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let mut page = Vec::with_capacity(WALK_PAGE);
        let walked = walk_sorted(&folder, &mut |path, meta| {
            page.push(Listed {
                name: path.to_string_lossy().into_owned(),
                size: meta.len(),
                modified: meta
                    .modified()
                    .ok()
                    .map(chrono::DateTime::<chrono::Utc>::from),
            });
            page.len() < WALK_PAGE || tx.blocking_send(Ok(std::mem::take(&mut page))).is_ok()
        });
        let last = match walked {
            Ok(true) if !page.is_empty() => Ok(page),
            Ok(_) => return,
            Err(e) => Err(e),
        };
        let _ = tx.blocking_send(last);
    });
    rx
}

/// Every regular file under `dir`, depth first, each folder's entries in
/// the order of their names' bytes: the order of
/// [`crate::db::orphans::component_order`]. Symbolic links are not
/// followed: what they lead to is not in the media location's keeping.
/// `each` answers false to stop; so does this, then.
fn walk_sorted(
    dir: &Path,
    each: &mut impl FnMut(&Path, &std::fs::Metadata) -> bool,
) -> Result<bool, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(StoreError::io("cannot list", dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("cannot list", dir, e))?;
        names.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (_, path) in names {
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| StoreError::io("cannot stat", &path, e))?;
        let going_on = if meta.is_dir() {
            walk_sorted(&path, each)?
        } else if meta.is_file() {
            each(&path, &meta)
        } else {
            true
        };
        if !going_on {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Linux error numbers of a file system that has no hard links.
mod libc_codes {
    pub const EPERM: i32 = 1;
    pub const EMLINK: i32 = 31;
    pub const ENOTSUP: i32 = 95;
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.file.take();
        let temp = std::mem::take(&mut self.temp);
        let remove = move || {
            let _ = std::fs::remove_file(&temp);
        };
        let writing = self.writing.take();
        match tokio::runtime::Handle::try_current() {
            // After the write in flight, which may be the one that creates
            // the file.
            Ok(runtime) => drop(runtime.spawn(async move {
                if let Some(writing) = writing {
                    let _ = writing.await;
                }
                let _ = tokio::task::spawn_blocking(remove).await;
            })),
            Err(_) => remove(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn atomic_write_creates_folders_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b/c.jpg");
        let store = DiskStore;
        let mut temp = store.create_temp(&target).await.unwrap();
        temp.write(b"hello").await.unwrap();
        assert_eq!(
            store.stat(&target).await.unwrap(),
            None,
            "nothing at the final path yet"
        );
        temp.commit().await.unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"hello");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b")).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[tokio::test]
    async fn discard_removes_the_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.bin");
        let mut temp = DiskStore.create_temp(&target).await.unwrap();
        temp.write(b"partial").await.unwrap();
        temp.discard().await;
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Waits until `dir` is empty, or fails.
    async fn empties(dir: &Path) {
        for _ in 0..100 {
            if std::fs::read_dir(dir).unwrap().count() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the temporary file is still there");
    }

    #[tokio::test]
    async fn a_dropped_temp_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut temp = DiskStore
            .create_temp(&dir.path().join("x.bin"))
            .await
            .unwrap();
        temp.write(b"partial").await.unwrap();
        drop(temp);
        empties(dir.path()).await;
    }

    #[tokio::test]
    async fn a_temp_file_dropped_or_discarded_right_after_a_block_went_off_leaves_nothing() {
        for discard in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut temp = DiskStore
                .create_temp(&dir.path().join("x.bin"))
                .await
                .unwrap();
            temp.expect(DIRECT_FROM);
            // A whole block: its write, which creates the file, is sent off
            // and not waited for.
            temp.write(&vec![7u8; WRITE_BUFFER]).await.unwrap();
            assert!(temp.writing.is_some());
            if discard {
                temp.discard().await;
                assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
            } else {
                drop(temp);
                // Empty at first look proves nothing: the write may create
                // the file later. Still empty once it has had its time.
                empties(dir.path()).await;
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
            }
        }
    }

    #[tokio::test]
    async fn confinement_resolves_links_and_allows_missing_folders() {
        let dir = tempfile::tempdir().unwrap();
        // Resolved before it exists, as at start-up before a first copy.
        let root = real_root(&dir.path().join("media-not-created-yet"));
        let store = DiskStore;
        assert!(store
            .stays_under(&root, &root.join("upload/a/b.jpg"))
            .await
            .unwrap());
        std::fs::create_dir_all(&root).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
        assert!(!store
            .stays_under(&root, &root.join("link/x.jpg"))
            .await
            .unwrap());
        assert!(store
            .stays_under(&root, &root.join("upload/x.jpg"))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn load_under_reads_only_files_that_stay_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = real_root(dir.path());
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.jpg"), b"not ours").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.jpg"), root.join("alias.jpg"))
            .unwrap();
        std::fs::create_dir_all(root.join("upload")).unwrap();
        std::fs::write(root.join("upload/a.jpg"), b"1234").unwrap();
        let store = DiskStore;

        match store
            .load_under(&root, &root.join("upload/a.jpg"), 1024)
            .await
        {
            Ok(Some(Loaded::Whole { data, digest })) => {
                assert_eq!(&data[..], b"1234");
                assert_eq!(digest, crate::store::hash::sha1_digest_of(b"1234"));
            }
            _ => panic!("a file under the root is read"),
        }
        assert!(matches!(
            store
                .load_under(&root, &root.join("upload/gone.jpg"), 1024)
                .await,
            Ok(None)
        ));
        for escape in ["link/secret.jpg", "alias.jpg", "link/gone.jpg"] {
            let refused = store.load_under(&root, &root.join(escape), 1024).await;
            assert!(
                matches!(refused, Err(StoreError::Outside(_))),
                "{escape} leads outside"
            );
        }
    }

    #[tokio::test]
    async fn a_large_write_goes_out_in_buffers_and_lands_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("v/big.mov");
        let data: Vec<u8> = (0..3_500_000u32).map(|i| (i % 253) as u8).collect();
        let mut temp = DiskStore.create_temp(&target).await.unwrap();
        for chunk in data.chunks(100_000) {
            temp.write(chunk).await.unwrap();
        }
        let names = |dir: &Path| std::fs::read_dir(dir).unwrap().count();
        assert_eq!(
            names(&dir.path().join("v")),
            1,
            "the temporary file, written out"
        );
        temp.commit_new().await.unwrap();
        assert!(std::fs::read(&target).unwrap() == data);
        assert_eq!(names(&dir.path().join("v")), 1, "only the file itself");
    }

    #[tokio::test]
    async fn a_large_file_written_past_the_page_cache_lands_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("big.mp4");
        let len = DIRECT_FROM as usize + 3 * WRITE_BUFFER / 2 + 123;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut temp = DiskStore.create_temp(&target).await.unwrap();
        temp.expect(len as u64);
        // Chunks as a connection brings them: no size lines up with a block.
        for chunk in data.chunks(65_537) {
            temp.write(chunk).await.unwrap();
        }
        temp.write_out().await.unwrap();
        temp.commit_new().await.unwrap();
        assert!(std::fs::read(&target).unwrap() == data);
    }

    #[tokio::test]
    async fn commit_new_never_replaces_a_file_written_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.jpg");
        let mut temp = DiskStore.create_temp(&target).await.unwrap();
        temp.write(b"ours").await.unwrap();
        std::fs::write(&target, b"theirs").unwrap();
        assert!(matches!(
            temp.commit_new().await,
            Err(StoreError::TargetTaken(_))
        ));
        assert_eq!(std::fs::read(&target).unwrap(), b"theirs");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn load_reads_small_files_whole_and_sizes_large_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abcdef").unwrap();
        match DiskStore.load(&path, 6).await.unwrap() {
            Some(Loaded::Whole { data, digest }) => {
                assert_eq!(&data[..], b"abcdef");
                assert_eq!(digest, crate::store::hash::sha1_digest_of(b"abcdef"));
                assert_eq!(digest.md5, None, "the MD5 waits until a server needs it");
            }
            _ => panic!("read whole"),
        }
        assert!(matches!(
            DiskStore.load(&path, 5).await.unwrap(),
            Some(Loaded::Large(6))
        ));
        assert!(DiskStore
            .load(&dir.path().join("missing"), 5)
            .await
            .unwrap()
            .is_none());
        assert!(DiskStore.load(dir.path(), 5).await.is_err(), "a folder");
    }

    #[tokio::test]
    async fn read_part_reads_at_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let (part, md5) = DiskStore.read_part(&path, 4, 4).await.unwrap();
        assert_eq!(&part[..], b"4567");
        assert_eq!(Some(md5), crate::store::hash::digest_of(b"4567").md5);
        let (tail, _) = DiskStore.read_part(&path, 8, 4).await.unwrap();
        assert_eq!(&tail[..], b"89");
        assert!(DiskStore
            .read_part(&path, 10, 4)
            .await
            .unwrap()
            .0
            .is_empty());
    }

    #[tokio::test]
    async fn hash_and_stat() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(DiskStore.stat(&path).await.unwrap(), Some(3));
        assert_eq!(
            DiskStore.stat(&dir.path().join("missing")).await.unwrap(),
            None
        );
        let d = DiskStore.hash_file(&path).await.unwrap();
        assert_eq!(
            hex::encode(d.sha1),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            d.md5.map(hex::encode).as_deref(),
            Some("900150983cd24fb0d6963f7d28e17f72")
        );
        let only_sha1 = DiskStore.sha1_file(&path).await.unwrap();
        assert_eq!(
            (only_sha1.size, only_sha1.sha1, only_sha1.md5),
            (3, d.sha1, None)
        );
    }
}
