//! An agent's durable store: an append-only log of records that survives the agent's crash.
//!
//! An agent has no file of its own (it must stay a deterministic state machine that runs in a
//! box, in the simulator or in a test), so the runtime lends it one through its context:
//! [`crate::Context::durable`]. What backs it depends on where the agent runs:
//!
//! * a box started with a data directory ([`crate::BoxBuilder::data_dir`], `box --data-dir`)
//!   keeps one file per agent, `<data dir>/<agent identifier, escaped>.log`;
//! * the simulator keeps a [`MemoryDisk`] per agent that outlives the agent's crash, as a disk
//!   would (unless the run's faults include `amnesia`);
//! * a box without a data directory, or a test that drives an agent by hand, gives none: the
//!   agent then keeps everything in memory, as before durable stores existed.
//!
//! Records are framed as `[length: u32 LE][crc32 of the bytes: u32 LE][bytes]`. A crash in the
//! middle of an append leaves a torn last record: its length runs past the end of the file or
//! its checksum fails. Reading stops there, and the file is cut back to the last whole record
//! before anything is appended, so a torn tail never hides later records.
//!
//! [`DurableLog::append`] only buffers (the operating system's page cache, or the simulated
//! disk's pending bytes); [`DurableLog::sync`] makes everything appended so far survive a crash.
//! An agent must sync before it sends a message that depends on what it appended.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::Error;

/// Bytes of a record's header: its length and its checksum.
const HEADER: usize = 8;
/// Records larger than this are refused (and, on reading, taken for a torn tail).
const MAX_RECORD: usize = 1 << 30;
/// Below this size a log is never worth compacting.
const DEFAULT_COMPACT_MIN: u64 = 1 << 20;

/// An append-only log of records that survives the crash of the agent that holds it.
#[derive(Debug)]
pub struct DurableLog {
    backend: Backend,
    /// The log's size in bytes, whole records only (`None` until first read or opened).
    size: Option<u64>,
    /// The size right after the last rewrite: the log is worth compacting once it has grown
    /// well beyond that.
    base: u64,
    /// The smallest size at which [`DurableLog::should_compact`] says yes.
    compact_min: u64,
}

#[derive(Debug)]
enum Backend {
    File(FileLog),
    Memory(Arc<Mutex<MemoryDisk>>),
}

#[derive(Debug)]
struct FileLog {
    path: PathBuf,
    /// Open for appending once the tail has been checked (and cut back if torn).
    file: Option<File>,
}

/// A simulated disk holding one agent's log: what was synced survives a crash of the agent,
/// what was appended since the last sync does not.
#[derive(Debug, Default, Clone)]
pub struct MemoryDisk {
    synced: Vec<u8>,
    pending: Vec<u8>,
}

impl MemoryDisk {
    /// A crash: what was appended but not synced is gone.
    pub fn crash(&mut self) {
        self.pending.clear();
    }

    /// The bytes that would survive a crash now.
    pub fn synced_len(&self) -> usize {
        self.synced.len()
    }
}

impl DurableLog {
    /// The log in file `path` (created, with its directory, on the first append).
    pub fn file(path: impl Into<PathBuf>) -> Self {
        DurableLog::new(Backend::File(FileLog {
            path: path.into(),
            file: None,
        }))
    }

    /// The log of agent `id` in the data directory `dir`.
    pub fn in_dir(dir: &Path, id: &str) -> Self {
        DurableLog::file(dir.join(format!("{}.log", escape(id))))
    }

    /// A log on a simulated disk; the caller keeps the disk to crash it or hand it to the
    /// agent's next incarnation.
    pub fn memory(disk: Arc<Mutex<MemoryDisk>>) -> Self {
        DurableLog::new(Backend::Memory(disk))
    }

    fn new(backend: Backend) -> Self {
        DurableLog {
            backend,
            size: None,
            base: 0,
            compact_min: DEFAULT_COMPACT_MIN,
        }
    }

    /// Sets the smallest size (bytes) at which the log is worth compacting (default 1 MiB).
    pub fn compact_at_least(mut self, bytes: u64) -> Self {
        self.compact_min = bytes;
        self
    }

    /// Every whole record, in the order appended (a torn last record is left out).
    pub fn read_all(&mut self) -> Result<Vec<Vec<u8>>, Error> {
        let bytes = match &mut self.backend {
            Backend::File(f) => match std::fs::read(&f.path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e.into()),
            },
            Backend::Memory(disk) => {
                let disk = lock(disk);
                let mut all = disk.synced.clone();
                all.extend_from_slice(&disk.pending);
                all
            }
        };
        let (records, whole) = parse(&bytes);
        if self.size.is_none() {
            self.base = whole as u64;
        }
        self.size = Some(whole as u64);
        Ok(records.into_iter().map(<[u8]>::to_vec).collect())
    }

    /// Appends one record (durable only after [`DurableLog::sync`]).
    pub fn append(&mut self, record: &[u8]) -> Result<(), Error> {
        if record.len() > MAX_RECORD {
            return Err(Error::Invalid(format!(
                "a durable record of {} bytes is over the limit of {MAX_RECORD}",
                record.len()
            )));
        }
        let framed = frame(record);
        self.write(&framed)?;
        *self.size.get_or_insert(0) += framed.len() as u64;
        Ok(())
    }

    /// Makes every record appended so far survive a crash.
    pub fn sync(&mut self) -> Result<(), Error> {
        match &mut self.backend {
            Backend::File(f) => {
                if let Some(file) = &mut f.file {
                    file.sync_data()?;
                }
            }
            Backend::Memory(disk) => {
                let mut disk = lock(disk);
                let pending = std::mem::take(&mut disk.pending);
                disk.synced.extend_from_slice(&pending);
            }
        }
        Ok(())
    }

    /// Replaces the whole log by `records`, atomically and durably (no sync needed after): the
    /// old log stays whole until the new one is.
    pub fn rewrite<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), Error> {
        let mut bytes = Vec::new();
        for r in records {
            if r.len() > MAX_RECORD {
                return Err(Error::Invalid(format!(
                    "a durable record of {} bytes is over the limit of {MAX_RECORD}",
                    r.len()
                )));
            }
            bytes.extend_from_slice(&frame(r));
        }
        match &mut self.backend {
            Backend::File(f) => {
                let dir = f.path.parent().map(Path::to_path_buf).unwrap_or_default();
                std::fs::create_dir_all(&dir).or_else(|e| ignore_empty(&dir, e))?;
                let tmp = f.path.with_extension("log.tmp");
                {
                    let mut out = File::create(&tmp)?;
                    out.write_all(&bytes)?;
                    out.sync_all()?;
                }
                // Close the old file before the rename replaces it.
                f.file = None;
                std::fs::rename(&tmp, &f.path)?;
                sync_dir(&dir)?;
                f.file = Some(OpenOptions::new().append(true).open(&f.path)?);
            }
            Backend::Memory(disk) => {
                let mut disk = lock(disk);
                disk.synced = bytes.clone();
                disk.pending.clear();
            }
        }
        self.size = Some(bytes.len() as u64);
        self.base = bytes.len() as u64;
        Ok(())
    }

    /// The log's size in bytes (as last read, appended or rewritten).
    pub fn size(&self) -> u64 {
        self.size.unwrap_or(0)
    }

    /// Whether the log has grown enough since it was last rewritten that rewriting it (as one
    /// record of the whole state, say) pays: at least the minimum, and twice its size then.
    /// Compacting at doubling keeps the cost of rewrites proportional to what is appended.
    pub fn should_compact(&self) -> bool {
        let size = self.size();
        size >= self.compact_min && size >= 2 * self.base
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        match &mut self.backend {
            Backend::File(f) => {
                if f.file.is_none() {
                    let (file, whole) = open_for_append(&f.path)?;
                    f.file = Some(file);
                    if self.size.is_none() {
                        self.size = Some(whole);
                        self.base = whole;
                    }
                }
                if let Some(file) = &mut f.file {
                    file.write_all(bytes)?;
                }
            }
            Backend::Memory(disk) => {
                let mut disk = lock(disk);
                if self.size.is_none() {
                    let whole = (disk.synced.len() + disk.pending.len()) as u64;
                    self.size = Some(whole);
                    self.base = whole;
                }
                disk.pending.extend_from_slice(bytes);
            }
        }
        Ok(())
    }
}

/// Opens (creating) the log at `path` for appending, first cutting off a torn tail so that new
/// records follow the last whole one.
fn open_for_append(path: &Path) -> Result<(File, u64), Error> {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    std::fs::create_dir_all(&dir).or_else(|e| ignore_empty(&dir, e))?;
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let (_, whole) = parse(&bytes);
    if whole < bytes.len() {
        tracing::warn!(path = %path.display(), torn = bytes.len() - whole, "durable log: torn last record cut off");
        file.set_len(whole as u64)?;
        file.sync_all()?;
    }
    if !existed {
        // The new file's name must survive a crash too.
        sync_dir(&dir)?;
    }
    drop(file);
    Ok((OpenOptions::new().append(true).open(path)?, whole as u64))
}

fn ignore_empty(dir: &Path, e: io::Error) -> io::Result<()> {
    if dir.as_os_str().is_empty() {
        Ok(())
    } else {
        Err(e)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    // Directories cannot be opened for syncing everywhere; where they can, this makes a
    // created or renamed file's name durable.
    match File::open(dir) {
        Ok(d) => d.sync_all().or(Ok(())),
        Err(_) => Ok(()),
    }
}

fn lock(disk: &Mutex<MemoryDisk>) -> std::sync::MutexGuard<'_, MemoryDisk> {
    // Only the agent's own handler writes its disk; a poisoned lock means it panicked mid-way,
    // which a real disk would survive too.
    disk.lock().unwrap_or_else(|p| p.into_inner())
}

fn frame(record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + record.len());
    out.extend_from_slice(&(record.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(record).to_le_bytes());
    out.extend_from_slice(record);
    out
}

/// The whole records in `bytes`, and how many bytes they take (the rest is a torn tail).
fn parse(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let len =
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let sum = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let start = at + HEADER;
        if len > MAX_RECORD || bytes.len() - start < len {
            break;
        }
        let record = &bytes[start..start + len];
        if crc32(record) != sum {
            break;
        }
        records.push(record);
        at = start + len;
    }
    (records, at)
}

/// A file name for an agent identifier: `/` and anything unusual become `%XX`.
fn escape(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// CRC-32 (IEEE), table-driven: catches a torn or half-written record.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut c = !0u32;
    for &b in bytes {
        c = TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ovid-durable-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn identifiers_become_flat_file_names() {
        assert_eq!(escape("Store/Proxy0"), "Store%2FProxy0");
        assert_eq!(escape("controller"), "controller");
    }

    #[test]
    fn file_round_trip_across_reopening() {
        let dir = temp_dir("round-trip");
        let mut log = DurableLog::in_dir(&dir, "Store/Proxy0");
        assert!(
            log.read_all().unwrap().is_empty(),
            "no file yet: no records"
        );
        log.append(b"one").unwrap();
        log.append(b"").unwrap();
        log.append(&[7u8; 10_000]).unwrap();
        log.sync().unwrap();
        drop(log);
        let mut again = DurableLog::in_dir(&dir, "Store/Proxy0");
        let records = again.read_all().unwrap();
        assert_eq!(
            records,
            vec![b"one".to_vec(), Vec::new(), vec![7u8; 10_000]]
        );
        again.append(b"four").unwrap();
        again.sync().unwrap();
        let records = DurableLog::in_dir(&dir, "Store/Proxy0").read_all().unwrap();
        assert_eq!(records.len(), 4);
        assert_eq!(records[3], b"four");
        assert!(dir.join("Store%2FProxy0.log").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_tail_is_ignored_and_cut_before_appending() {
        let dir = temp_dir("torn");
        let path = dir.join("a.log");
        let mut log = DurableLog::file(&path);
        log.append(b"first").unwrap();
        log.append(b"second").unwrap();
        log.sync().unwrap();
        drop(log);
        let whole = std::fs::read(&path).unwrap();
        // A crash in the middle of writing a third record: its header and part of its bytes.
        let mut torn = whole.clone();
        torn.extend_from_slice(&frame(b"third, never finished")[..HEADER + 5]);
        std::fs::write(&path, &torn).unwrap();
        let mut log = DurableLog::file(&path);
        assert_eq!(
            log.read_all().unwrap(),
            vec![b"first".to_vec(), b"second".to_vec()]
        );
        // A record whose bytes were written but are garbage (checksum fails) is torn too.
        let mut corrupt = whole.clone();
        let mut bad = frame(b"garbled");
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        corrupt.extend_from_slice(&bad);
        std::fs::write(&path, &corrupt).unwrap();
        assert_eq!(DurableLog::file(&path).read_all().unwrap().len(), 2);
        // Appending after a torn tail cuts it off first, so the new record is readable.
        log.append(b"third").unwrap();
        log.sync().unwrap();
        assert_eq!(
            DurableLog::file(&path).read_all().unwrap(),
            vec![b"first".to_vec(), b"second".to_vec(), b"third".to_vec()]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn compaction_rewrites_the_log_and_appends_go_on_after_it() {
        let dir = temp_dir("compact");
        let path = dir.join("c.log");
        let mut log = DurableLog::file(&path).compact_at_least(1000);
        for i in 0..100u32 {
            log.append(&i.to_le_bytes()).unwrap();
        }
        log.sync().unwrap();
        assert_eq!(log.size(), 100 * 12);
        assert!(log.should_compact());
        log.rewrite([b"everything so far".as_slice()]).unwrap();
        assert!(!log.should_compact(), "just compacted");
        assert_eq!(log.size(), (HEADER + 17) as u64);
        log.append(b"after").unwrap();
        log.sync().unwrap();
        assert_eq!(
            DurableLog::file(&path).read_all().unwrap(),
            vec![b"everything so far".to_vec(), b"after".to_vec()]
        );
        assert!(!path.with_extension("log.tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_memory_disk_keeps_what_was_synced_across_a_crash() {
        let disk = Arc::new(Mutex::new(MemoryDisk::default()));
        let mut log = DurableLog::memory(disk.clone());
        log.append(b"kept").unwrap();
        log.sync().unwrap();
        log.append(b"lost").unwrap();
        assert_eq!(log.read_all().unwrap().len(), 2, "visible before the crash");
        lock(&disk).crash();
        let mut next = DurableLog::memory(disk.clone());
        assert_eq!(next.read_all().unwrap(), vec![b"kept".to_vec()]);
        next.rewrite([b"new".as_slice()]).unwrap();
        lock(&disk).crash();
        assert_eq!(
            DurableLog::memory(disk).read_all().unwrap(),
            vec![b"new".to_vec()]
        );
    }
}
