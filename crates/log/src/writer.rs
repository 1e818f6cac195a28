//! The durability thread: writes and fsyncs batches, then evolves the on-disk key.
//!
//! Sealing (CPU) and fsync (I/O) overlap: while a batch ending at size `n` is being made
//! durable here, the appender already seals the next one with `K(n)`, `K(n+1)`, …; each
//! entry's key was zeroized in memory right after sealing it. At most one batch is in
//! flight. For each batch, in order:
//! 1. write the frames to the segment (opening a new segment when the current one is full)
//!    and fsync it;
//! 2. write the tiles that filled in the batch and queue them for the tile syncer;
//! 3. persist `K(n)` to the key file (new slot, fsync; old slot zeroed, fsync).
//!
//! A crash anywhere leaves the key file at `K(m)`, `m` = start of the batch, so recovery
//! treats the (possibly torn) batch as the tail and checks it with `K(m)`, `K(m+1)`, ….

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};

use crate::entry::SEGMENT_MAGIC;
use crate::error::Error;
use crate::keyfile::KeyFile;
use crate::mac::EpochKey;
use crate::segment::{list_segments, segment_name};
use crate::store::TileSyncer;

/// One batch to make durable.
pub(crate) struct Job {
    /// Frames, back to back.
    pub(crate) frames: Vec<u8>,
    /// Sequence number of the batch's first entry.
    pub(crate) first_seq: u64,
    /// Entries durable once this job is done.
    pub(crate) committed_after: u64,
    /// Full tiles of the batch: (path, bytes).
    pub(crate) tiles: Vec<(PathBuf, Vec<u8>)>,
    /// `K(committed_after)`, the key of the next entry, to persist (zeroized when the job
    /// drops).
    pub(crate) new_key: EpochKey,
}

struct SegmentWriter {
    file: File,
    path: PathBuf,
    len: u64,
}

struct State {
    seg_dir: PathBuf,
    key_path: PathBuf,
    segment: Option<SegmentWriter>,
    segment_bytes_max: u64,
    key_file: KeyFile,
    syncer: Arc<TileSyncer>,
}

/// Handle of the durability thread. Dropping it finishes the in-flight batch first.
pub(crate) struct Writer {
    jobs: Option<mpsc::SyncSender<Job>>,
    done: mpsc::Receiver<Result<u64, Error>>,
    handle: Option<std::thread::JoinHandle<()>>,
    in_flight: bool,
    /// A failure of an earlier batch: the log accepts nothing more.
    failed: bool,
}

impl Writer {
    pub(crate) fn start(
        seg_dir: PathBuf,
        key_path: PathBuf,
        key_file: KeyFile,
        segment_bytes_max: u64,
        syncer: Arc<TileSyncer>,
    ) -> Self {
        let (jobs, rx) = mpsc::sync_channel::<Job>(0);
        let (done_tx, done) = mpsc::sync_channel(1);
        let mut st = State {
            seg_dir,
            key_path,
            segment: None,
            segment_bytes_max,
            key_file,
            syncer,
        };
        let handle = std::thread::spawn(move || {
            for job in rx {
                let r = st.run(job);
                if done_tx.send(r).is_err() {
                    return;
                }
            }
        });
        Writer {
            jobs: Some(jobs),
            done,
            handle: Some(handle),
            in_flight: false,
            failed: false,
        }
    }

    /// Waits for the in-flight batch. Returns the durable entry count it reached.
    pub(crate) fn wait(&mut self) -> Result<Option<u64>, Error> {
        if !self.in_flight {
            return Ok(None);
        }
        self.in_flight = false;
        match self.done.recv() {
            Ok(Ok(n)) => Ok(Some(n)),
            Ok(Err(e)) => {
                self.failed = true;
                Err(e)
            }
            Err(_) => {
                self.failed = true;
                Err(Error::WriterGone)
            }
        }
    }

    /// Hands a batch over, after waiting for the previous one.
    pub(crate) fn submit(&mut self, job: Job) -> Result<Option<u64>, Error> {
        if self.failed {
            return Err(Error::WriterGone);
        }
        let reached = self.wait()?;
        let tx = self.jobs.as_ref().ok_or(Error::WriterGone)?;
        tx.send(job).map_err(|_| Error::WriterGone)?;
        self.in_flight = true;
        Ok(reached)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.wait();
        self.jobs = None; // ends the thread's loop
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl State {
    fn run(&mut self, job: Job) -> Result<u64, Error> {
        if self
            .segment
            .as_ref()
            .is_none_or(|s| s.len >= self.segment_bytes_max)
        {
            self.open_segment(job.first_seq)?;
        }
        let seg = self.segment.as_mut().expect("opened above");
        seg.file
            .write_all(&job.frames)
            .map_err(Error::io(&seg.path))?;
        seg.file.sync_data().map_err(Error::io(&seg.path))?;
        seg.len += job.frames.len() as u64;
        for (path, bytes) in &job.tiles {
            crate::fsutil::write_file(path, bytes).map_err(Error::io(path))?;
            self.syncer.sync(path.clone());
        }
        self.key_file
            .evolve(&job.new_key)
            .map_err(Error::io(&self.key_path))?;
        Ok(job.committed_after)
    }

    fn open_segment(&mut self, start: u64) -> Result<(), Error> {
        // Continue the last segment if it is not full, else start a new one.
        if self.segment.is_none() {
            let segs = list_segments(&self.seg_dir).map_err(Error::io(&self.seg_dir))?;
            if let Some(last) = segs.last() {
                let len = fs::metadata(&last.path)
                    .map_err(Error::io(&last.path))?
                    .len();
                if len < self.segment_bytes_max {
                    let file = OpenOptions::new()
                        .append(true)
                        .open(&last.path)
                        .map_err(Error::io(&last.path))?;
                    self.segment = Some(SegmentWriter {
                        file,
                        path: last.path.clone(),
                        len,
                    });
                    return Ok(());
                }
            }
        }
        let path = self.seg_dir.join(segment_name(start));
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        file.write_all(SEGMENT_MAGIC).map_err(Error::io(&path))?;
        file.sync_all().map_err(Error::io(&path))?;
        crate::fsutil::sync_parent(&path).map_err(Error::io(&path))?;
        self.segment = Some(SegmentWriter {
            file,
            path,
            len: SEGMENT_MAGIC.len() as u64,
        });
        Ok(())
    }
}
