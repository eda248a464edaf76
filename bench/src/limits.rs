//! The machine's physical limits: what no server on this box can beat.
//!
//! Each test is bounded to a few seconds so the whole benchmark stays quick enough to run on
//! every change; the numbers are rates, so a shorter run only costs a little precision.

use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fieldvault_crypto::{Key256, SecretString};
use serde::Serialize;

/// Time budget for each rate test.
const BUDGET: Duration = Duration::from_millis(2500);
/// Block size for the write and cipher tests.
const MIB: usize = 1024 * 1024;
/// Size of each file in the small-file test: the benchmark's attachment.
pub const SMALL_FILE_BYTES: usize = 100 * 1024;

/// Measured limits of this machine.
#[derive(Debug, Serialize)]
pub struct Limits {
    /// 1 KiB append + `sync_data`, one stream: the ceiling for durable single-writer commits.
    pub fsync_per_sec: f64,
    /// Sequential write in 1 MiB blocks including the final `sync_all`, in MB/s (10^6 bytes).
    pub seq_write_mb_per_sec: f64,
    /// Bytes actually written in the sequential-write test (it stops early at the budget).
    pub seq_write_bytes: u64,
    /// Durable new files of [`SMALL_FILE_BYTES`] per second, one stream per core into one
    /// directory, each created under a staging name, written, `sync_all`'d, renamed into place
    /// and its directory fsync'd: what storing one attachment costs the file system before any
    /// encryption or HTTP. Attachment intake is bounded by this as much as by bandwidth.
    pub small_files_per_sec: f64,
    /// Streams used for `small_files_per_sec`.
    pub small_file_streams: usize,
    /// `envelope::seal` over 1 MiB buffers on one core, MB/s: the small-record API, including its
    /// per-call cipher set-up and allocation.
    pub aes_gcm_envelope_mb_per_sec: f64,
    /// `stream::seal_all` over 1 MiB buffers on one core, MB/s: what blob encryption costs.
    pub aes_gcm_stream_mb_per_sec: f64,
    /// One PBKDF2-SHA256 password hash at `DEFAULT_ITERATIONS`, in milliseconds: the CPU
    /// price of every password login.
    pub pbkdf2_ms: f64,
    /// The iteration count used for `pbkdf2_ms`.
    pub pbkdf2_iterations: u32,
}

/// Runs all limit tests in a scratch directory created under `dir`.
pub fn measure(dir: &Path, write_mib: u64) -> anyhow::Result<Limits> {
    let scratch = tempfile::Builder::new()
        .prefix(".fieldvault-bench-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a scratch directory in {}", dir.display()))?;
    let fsync_per_sec = fsync_rate(&scratch.path().join("fsync.dat"))?;
    let (seq_write_bytes, seq_write_mb_per_sec) =
        sequential_write(&scratch.path().join("seq.dat"), write_mib)?;
    let small_file_streams = std::thread::available_parallelism().map_or(1, usize::from);
    let small_files_per_sec = small_file_rate(&scratch.path().join("files"), small_file_streams)?;
    let key = Key256::generate().context("cannot generate a key")?;
    let aes_gcm_envelope_mb_per_sec =
        cipher_rate(|buf| fieldvault_crypto::envelope::seal(&key, b"bench", buf).map(|v| v.len()))?;
    let aes_gcm_stream_mb_per_sec = cipher_rate(|buf| {
        fieldvault_crypto::stream::seal_all(&key, b"bench", buf).map(|v| v.len())
    })?;
    let pbkdf2_iterations = fieldvault_crypto::password::DEFAULT_ITERATIONS;
    let start = Instant::now();
    let hash = fieldvault_crypto::password::hash(
        &SecretString::from("correct horse battery staple"),
        pbkdf2_iterations,
    )
    .context("password hash failed")?;
    let pbkdf2_ms = start.elapsed().as_secs_f64() * 1e3;
    black_box(hash);
    Ok(Limits {
        fsync_per_sec,
        seq_write_mb_per_sec,
        seq_write_bytes,
        small_files_per_sec,
        small_file_streams,
        aes_gcm_envelope_mb_per_sec,
        aes_gcm_stream_mb_per_sec,
        pbkdf2_ms,
        pbkdf2_iterations,
    })
}

/// Appends 1 KiB and calls `sync_data` until the budget is spent; returns syncs per second.
fn fsync_rate(path: &Path) -> anyhow::Result<f64> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let block = [0x5au8; 1024];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < BUDGET {
        file.write_all(&block).context("fsync test: write failed")?;
        file.sync_data().context("fsync test: sync_data failed")?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Writes up to `mib` MiB in 1 MiB blocks (stopping at the budget) and then `sync_all`,
/// counting the sync, so the page cache cannot flatter the result. Returns (bytes, MB/s).
fn sequential_write(path: &Path, mib: u64) -> anyhow::Result<(u64, f64)> {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    // Non-constant content, so compressing or deduplicating filesystems cannot shortcut it.
    let mut block = vec![0u8; MIB];
    let mut x: u32 = 0x9e37_79b9;
    for b in &mut block {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let start = Instant::now();
    let mut written = 0u64;
    for i in 0..mib.max(1) {
        block[0] = i as u8;
        file.write_all(&block).context("sequential write failed")?;
        written += MIB as u64;
        if start.elapsed() >= BUDGET {
            break;
        }
    }
    file.sync_all()
        .context("sequential write: sync_all failed")?;
    let secs = start.elapsed().as_secs_f64();
    drop(file);
    // Free the space right away rather than at the end of the run.
    std::fs::remove_file(path).ok();
    Ok((written, written as f64 / 1e6 / secs))
}

/// Creates durable [`SMALL_FILE_BYTES`] files in `dir` from `streams` threads until the budget
/// is spent, the way a blob store does (staging name, write, `sync_all`, rename, directory
/// fsync); returns files per second over all streams.
fn small_file_rate(dir: &Path, streams: usize) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let start = Instant::now();
    let counts = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..streams.max(1))
            .map(|t| {
                scope.spawn(move || -> anyhow::Result<u64> {
                    let mut block = vec![0u8; SMALL_FILE_BYTES];
                    let mut n = 0u64;
                    while start.elapsed() < BUDGET {
                        block[..8].copy_from_slice(&n.to_le_bytes());
                        block[8] = t as u8;
                        let staged = dir.join(format!("{t}-{n}#staged"));
                        let done = dir.join(format!("{t}-{n}"));
                        let mut f = OpenOptions::new()
                            .create_new(true)
                            .write(true)
                            .open(&staged)
                            .with_context(|| format!("cannot create {}", staged.display()))?;
                        f.write_all(&block)
                            .context("small-file test: write failed")?;
                        f.sync_all().context("small-file test: sync_all failed")?;
                        drop(f);
                        std::fs::rename(&staged, &done).context("small-file test: rename")?;
                        std::fs::File::open(dir)
                            .and_then(|d| d.sync_all())
                            .context("small-file test: directory fsync")?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .map_err(|_| anyhow::anyhow!("small-file test thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<u64>>>()
    })?;
    let secs = start.elapsed().as_secs_f64();
    // Free the space (and the inodes) right away rather than at the end of the run.
    std::fs::remove_dir_all(dir).ok();
    Ok(counts.iter().sum::<u64>() as f64 / secs)
}

/// Calls `seal` on a 1 MiB buffer until the budget is spent; returns plaintext MB/s.
fn cipher_rate<E>(mut seal: impl FnMut(&[u8]) -> Result<usize, E>) -> anyhow::Result<f64>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let buf = vec![0x42u8; MIB];
    // Warm up once (allocator, CPU frequency, lazy initialisation).
    black_box(seal(black_box(&buf))?);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < BUDGET {
        black_box(seal(black_box(&buf))?);
        n += 1;
    }
    Ok(n as f64 * MIB as f64 / 1e6 / start.elapsed().as_secs_f64())
}
