//! The web UI's files kept in memory, so a hot file costs no trip to the file system.
//!
//! tower-http's `ServeDir` opens, stats and reads on tokio's blocking pool: three or four thread
//! hand-offs per request, which left a 2 KB file at a third of nginx's rate (nginx keeps an open
//! file cache and uses sendfile). This cache answers only the plain case — a whole file,
//! identity-encoded, possibly conditional on its ETag or date — and leaves everything else
//! (ranges, precompressed siblings, directories, the SPA fallback, large files) to `ServeDir`, so
//! the two never differ in what they answer.
//!
//! A cached file also keeps its brotli and gzip copies, each made once (at a higher level than
//! on-the-fly compression can afford) the first time a client asks for it and dropped with the
//! entry when the file changes: a cold UI load costs no compression CPU after the first. The
//! copies count against the budget.
//!
//! Freshness: an entry is checked against the file's inode, size and modification time at most
//! once per `revalidate`, as nginx's `open_file_cache_valid` does, so a new UI deployment shows up
//! within that interval. Bounds: a file over `max_file` is never cached, and the entries together
//! stay within `budget`, the least recently used going first.
//!
//! A path the cache cannot hold (missing, as SPA client routes and scans are, too large, or with
//! a precompressed sibling) is remembered as such for the same interval, up to `MAX_PASSES`
//! paths, so that it goes straight to `ServeDir` instead of costing a second open each time.
//! That memo cannot make an answer stale: `ServeDir` reads the file system itself.

use std::{
    collections::HashMap,
    fs::File,
    io::Read,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock, PoisonError, RwLock,
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::HeaderValue;

use crate::http::compress::{encoder, Coding};

/// How long an entry is served before the file is looked at again.
pub const REVALIDATE: Duration = Duration::from_secs(1);

/// Paths remembered as not cacheable; the memo is emptied when full, so a scan of random
/// paths costs at most this many entries.
const MAX_PASSES: usize = 1024;

/// Precompressed siblings `ServeDir` may answer with instead of the file itself.
const SIBLINGS: [&str; 2] = ["br", "gz"];

#[derive(Debug)]
pub struct FileCache {
    budget: u64,
    max_file: u64,
    revalidate: Duration,
    epoch: Instant,
    /// Orders uses for eviction; a clock would tie within its resolution.
    uses: AtomicU64,
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<PathBuf, Arc<CachedFile>>,
    bytes: u64,
    /// Paths found not cacheable, with when (cache milliseconds) they were looked at.
    passes: HashMap<PathBuf, u64>,
}

/// A whole file as `ServeDir` would send it, with the headers that describe it.
#[derive(Debug)]
pub struct CachedFile {
    pub body: Bytes,
    pub content_type: HeaderValue,
    pub etag: HeaderValue,
    pub last_modified: HeaderValue,
    /// The modification time at HTTP-date precision, for `If-Modified-Since`.
    pub modified: httpdate::HttpDate,
    /// The body compressed once per coding (brotli, gzip) when first asked for, and
    /// dropped with the entry when the file changes; `None` inside when it did not shrink.
    variants: [OnceLock<Option<Bytes>>; 2],
    stamp: Stamp,
    /// Milliseconds since the cache's epoch of the last check against the file system.
    checked_ms: AtomicU64,
    /// The cache's use count at this entry's last use.
    last_use: AtomicU64,
}

/// What identifies one version of a file; any change means the entry is stale. A precompressed
/// sibling appearing counts too, since from then on `ServeDir` would answer some clients with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: SystemTime,
    has_sibling: bool,
}

impl FileCache {
    /// `budget` 0 disables the cache.
    pub fn new(budget: u64, max_file: u64) -> Self {
        Self::with_revalidate(budget, max_file, REVALIDATE)
    }

    pub fn with_revalidate(budget: u64, max_file: u64, revalidate: Duration) -> Self {
        Self {
            budget,
            max_file: max_file.min(budget),
            revalidate,
            epoch: Instant::now(),
            uses: AtomicU64::new(0),
            state: RwLock::default(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.budget > 0
    }

    /// Bytes of file content held.
    pub fn bytes(&self) -> u64 {
        self.read().bytes
    }

    /// The file at `path`, from memory when it is there and still current, else read now; `None`
    /// when it is not a regular file small enough to cache, or cannot be read.
    pub async fn get(&self, path: &Path) -> Option<Arc<CachedFile>> {
        if !self.is_enabled() {
            return None;
        }
        let now = self.now_ms();
        let fresh = |checked_ms: u64| {
            u128::from(now.saturating_sub(checked_ms)) < self.revalidate.as_millis()
        };
        let cached = {
            let state = self.read();
            if state.passes.get(path).is_some_and(|&at| fresh(at)) {
                return None;
            }
            state.entries.get(path).cloned()
        };
        if let Some(entry) = cached {
            entry.last_use.store(self.next_use(), Ordering::Relaxed);
            if fresh(entry.checked_ms.load(Ordering::Relaxed)) {
                return Some(entry);
            }
            let owned = path.to_owned();
            let current = tokio::task::spawn_blocking(move || Stamp::of(&owned))
                .await
                .ok()
                .flatten();
            if current == Some(entry.stamp) {
                entry.checked_ms.store(now, Ordering::Relaxed);
                return Some(entry);
            }
            self.remove(path, &entry);
        }
        let owned = path.to_owned();
        let max_file = self.max_file;
        let loaded = tokio::task::spawn_blocking(move || CachedFile::read(&owned, max_file, now))
            .await
            .ok()
            .flatten();
        let Some(loaded) = loaded else {
            self.pass(path, now);
            return None;
        };
        loaded.last_use.store(self.next_use(), Ordering::Relaxed);
        let loaded = Arc::new(loaded);
        self.insert(path.to_owned(), loaded.clone());
        Some(loaded)
    }

    fn pass(&self, path: &Path, now_ms: u64) {
        let mut state = self.write();
        if state.passes.len() >= MAX_PASSES && !state.passes.contains_key(path) {
            state.passes.clear();
        }
        state.passes.insert(path.to_owned(), now_ms);
    }

    /// Paths currently remembered as not cacheable.
    #[cfg(test)]
    pub fn passes(&self) -> usize {
        self.read().passes.len()
    }

    /// `entry`'s body (the file at `path`) in `coding`, compressed now if this is the first ask;
    /// `None` when the coding does not make it smaller. Two first asks at once may both
    /// compress; one result is kept.
    pub async fn variant(
        &self,
        path: &Path,
        entry: &Arc<CachedFile>,
        coding: Coding,
    ) -> Option<Bytes> {
        let slot = entry.variant_slot(coding);
        if let Some(variant) = slot.get() {
            return variant.clone();
        }
        let body = entry.body.clone();
        let compressed = tokio::task::spawn_blocking(move || encoder::compress_all(coding, &body))
            .await
            .ok()?
            .ok()?;
        let kept = (compressed.len() < entry.body.len()).then_some(compressed);
        let added = kept.as_ref().map_or(0, |b| b.len() as u64);
        // Set under the lock, so that the bytes counted always match what the entries hold.
        let mut state = self.write();
        let current = state
            .entries
            .get(path)
            .is_some_and(|e| Arc::ptr_eq(e, entry));
        if slot.set(kept).is_ok() && current {
            state.bytes += added;
            self.evict(&mut state, path);
        }
        slot.get().cloned().flatten()
    }

    fn insert(&self, path: PathBuf, entry: Arc<CachedFile>) {
        let mut state = self.write();
        state.passes.remove(&path);
        let added = entry.size();
        if let Some(old) = state.entries.insert(path.clone(), entry) {
            state.bytes -= old.size();
        }
        state.bytes += added;
        self.evict(&mut state, &path);
    }

    /// Evicts the least recently used entries other than `keep` until the budget is met.
    fn evict(&self, state: &mut State, keep: &Path) {
        while state.bytes > self.budget {
            let Some(oldest) = state
                .entries
                .iter()
                .filter(|(p, _)| **p != keep)
                .min_by_key(|(_, e)| e.last_use.load(Ordering::Relaxed))
                .map(|(p, _)| p.clone())
            else {
                break;
            };
            if let Some(evicted) = state.entries.remove(&oldest) {
                state.bytes -= evicted.size();
            }
        }
    }

    /// Drops `path` only if it still holds `stale`: a concurrent request may have put a newer
    /// version there already.
    fn remove(&self, path: &Path, stale: &Arc<CachedFile>) {
        let mut state = self.write();
        if state
            .entries
            .get(path)
            .is_some_and(|e| Arc::ptr_eq(e, stale))
        {
            state.entries.remove(path);
            state.bytes -= stale.size();
        }
    }

    fn next_use(&self) -> u64 {
        self.uses.fetch_add(1, Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    // A panic while the lock was held leaves the map consistent (every update is a single
    // insert or remove), so a poisoned lock is still safe to use.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl CachedFile {
    /// Bytes held: the file and its compressed copies.
    fn size(&self) -> u64 {
        let variants: usize = self
            .variants
            .iter()
            .filter_map(|v| v.get()?.as_ref())
            .map(Bytes::len)
            .sum();
        (self.body.len() + variants) as u64
    }

    fn variant_slot(&self, coding: Coding) -> &OnceLock<Option<Bytes>> {
        let [br, gzip] = &self.variants;
        match coding {
            Coding::Br => br,
            Coding::Gzip => gzip,
        }
    }

    /// Blocking: reads a regular file of at most `max_file` bytes that has no precompressed
    /// sibling, with the headers `ServeDir` would send for it.
    fn read(path: &Path, max_file: u64, now_ms: u64) -> Option<Self> {
        let mut file = File::open(path).ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.len() > max_file {
            return None;
        }
        let stamp = Stamp::from_meta(path, &meta)?;
        if stamp.has_sibling {
            return None;
        }
        let mut body = Vec::with_capacity(usize::try_from(meta.len()).ok()?);
        // One byte past the size seen, so a file growing under us is noticed, not truncated.
        file.by_ref()
            .take(meta.len() + 1)
            .read_to_end(&mut body)
            .ok()?;
        if body.len() as u64 != meta.len() {
            return None;
        }
        let content_type = mime_guess::from_path(path)
            .first_raw()
            .map_or(HeaderValue::from_static("application/octet-stream"), |m| {
                HeaderValue::from_static(m)
            });
        let modified = httpdate::HttpDate::from(stamp.modified);
        Some(Self {
            body: Bytes::from(body),
            content_type,
            etag: etag(stamp.len, stamp.modified)?,
            last_modified: HeaderValue::from_str(&modified.to_string()).ok()?,
            modified,
            variants: Default::default(),
            stamp,
            checked_ms: AtomicU64::new(now_ms),
            last_use: AtomicU64::new(0),
        })
    }
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        Self::from_meta(path, &std::fs::metadata(path).ok()?)
    }

    fn from_meta(path: &Path, meta: &std::fs::Metadata) -> Option<Self> {
        let has_sibling = SIBLINGS.iter().any(|ext| {
            let mut sibling = path.as_os_str().to_owned();
            sibling.push(".");
            sibling.push(ext);
            Path::new(&sibling).exists()
        });
        Some(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok()?,
            has_sibling,
        })
    }
}

/// The same strong ETag `ServeDir` derives from size and modification time, so a browser that
/// got a file from one path revalidates it with a 304 on the other.
fn etag(len: u64, modified: SystemTime) -> Option<HeaderValue> {
    let since = modified.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    HeaderValue::from_str(&format!(
        "\"{:x}.{:08x}-{:x}\"",
        since.as_secs(),
        since.subsec_nanos(),
        len
    ))
    .ok()
}

/// `If-None-Match` by weak comparison (RFC 9110 §13.1.2): `*`, or any listed tag equal to `etag`
/// with `W/` ignored on both sides.
pub fn none_match_fails(header: &HeaderValue, etag: &HeaderValue) -> bool {
    let header = header.as_bytes();
    if header.trim_ascii() == b"*" {
        return true;
    }
    let ours = opaque(etag.as_bytes());
    let matches = |tag: &[u8]| {
        let tag = tag.trim_ascii();
        !tag.is_empty() && opaque(tag) == ours
    };
    // Commas inside a quoted tag do not separate tags (RFC 9110 §8.8.3).
    let mut in_quotes = false;
    let mut start = 0;
    for (i, &b) in header.iter().enumerate() {
        match b {
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => {
                if matches(header.get(start..i).unwrap_or_default()) {
                    return true;
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    matches(header.get(start..).unwrap_or_default())
}

fn opaque(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

#[cfg(test)]
mod tests;
