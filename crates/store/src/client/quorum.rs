//! Quorum machinery: work spread over several clouds, finished at `n − f`.
//!
//! Invariants (ADR 0001, ADR 0006):
//!
//! - A [`Quorum`] task sends its result exactly once into a channel of capacity `n`, so
//!   collecting never blocks a task; a caller that has its quorum hands whatever has not
//!   finished to [`Background`], where it keeps running and can be waited on. Nothing is
//!   cancelled silently: a process that must not lose stragglers calls
//!   [`Background::wait`].
//! - An [`Uploads`] queue per cloud holds at most `write_queue_segments` shards, so a
//!   write's memory does not grow with the object. A cloud whose queue stays full for the
//!   straggler timeout is dropped from the write only while more than the required number
//!   of clouds stay live; a dropped or failed upload is aborted, which leaves nothing
//!   visible (multipart uploads are discarded).
//! - [`Uploads::finish`] returns only once `need` uploads completed; fewer is
//!   [`StoreError::QuorumUnavailable`] with every cloud's failure.
//! - At most `Tuning::straggler_uploads_max` uploads keep running after their write
//!   returned, across the client: beyond it, a write drops its slower clouds' uploads when
//!   it returns. Dropping a cloud interrupts its upload even inside a request that hangs,
//!   so a hanging cloud cannot keep one more upload (and its buffers) alive per write.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use object_store::buffered::BufWriter;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{CloudOfClouds, join_failures, one_line, shard_path};
use crate::StoreError;
use crate::cloud::Cloud;

/// A background task: the cloud it works on, what it does, and its handle.
type Task = (String, &'static str, JoinHandle<Result<(), String>>);

/// Work that continues after an operation returned (stragglers).
#[derive(Default)]
pub struct Background {
    tasks: Vec<Task>,
}

impl fmt::Debug for Background {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Background({} tasks)", self.tasks.len())
    }
}

/// How background work ended.
#[derive(Debug, Default)]
pub struct BackgroundReport {
    /// Tasks that finished successfully.
    pub completed: usize,
    /// `cloud: what failed` for tasks that failed.
    pub failed: Vec<String>,
    /// Tasks still running at the deadline (they keep running while the process lives).
    pub unfinished: Vec<String>,
}

impl Background {
    pub(super) fn push(
        &mut self,
        cloud: &str,
        what: &'static str,
        h: JoinHandle<Result<(), String>>,
    ) {
        self.tasks.push((cloud.to_owned(), what, h));
    }

    pub(super) fn extend(&mut self, other: Background) {
        self.tasks.extend(other.tasks);
    }

    /// True when every task has finished.
    pub fn all_finished(&self) -> bool {
        self.tasks.iter().all(|(_, _, h)| h.is_finished())
    }

    /// Waits for the stragglers, at most `deadline`.
    pub async fn wait(self, deadline: Duration) -> BackgroundReport {
        let until = tokio::time::Instant::now() + deadline;
        let mut rep = BackgroundReport::default();
        for (cloud, what, h) in self.tasks {
            match tokio::time::timeout_at(until, h).await {
                Ok(Ok(Ok(()))) => rep.completed += 1,
                Ok(Ok(Err(e))) => rep.failed.push(format!("{cloud}: {what}: {e}")),
                Ok(Err(e)) => rep.failed.push(format!("{cloud}: {what}: {e}")),
                Err(_) => rep.unfinished.push(format!("{cloud}: {what}")),
            }
        }
        rep
    }
}

/// Tasks running on several clouds, collected as they finish. Whatever has not finished
/// when the caller has its quorum becomes [`Background`] work.
pub(super) struct Quorum<T> {
    tx: mpsc::Sender<(usize, Result<T, String>)>,
    rx: mpsc::Receiver<(usize, Result<T, String>)>,
    handles: Vec<Option<Task>>,
    outstanding: usize,
}

impl<T: Send + 'static> Quorum<T> {
    pub(super) fn new(n: usize) -> Self {
        // Each task sends exactly once, so capacity n never blocks.
        let (tx, rx) = mpsc::channel(n.max(1));
        Self {
            tx,
            rx,
            handles: (0..n).map(|_| None).collect(),
            outstanding: 0,
        }
    }

    pub(super) fn spawn<F>(&mut self, i: usize, cloud: &str, what: &'static str, fut: F)
    where
        F: std::future::Future<Output = Result<T, String>> + Send + 'static,
    {
        let tx = self.tx.clone();
        let h = tokio::spawn(async move {
            let r = fut.await;
            let summary = r.as_ref().map(|_| ()).map_err(Clone::clone);
            let _ = tx.send((i, r)).await;
            summary
        });
        self.handles[i] = Some((cloud.to_owned(), what, h));
        self.outstanding += 1;
    }

    /// The next task to finish, or `None` when all have.
    pub(super) async fn next(&mut self) -> Option<(usize, Result<T, String>)> {
        if self.outstanding == 0 {
            return None;
        }
        let r = self.rx.recv().await?;
        self.handles[r.0] = None;
        self.outstanding -= 1;
        Some(r)
    }

    /// A finished task's result, if one is ready now.
    pub(super) fn try_next(&mut self) -> Option<(usize, Result<T, String>)> {
        let r = self.rx.try_recv().ok()?;
        self.handles[r.0] = None;
        self.outstanding -= 1;
        Some(r)
    }

    fn is_running(&self, i: usize) -> bool {
        self.handles[i].is_some()
    }

    pub(super) fn into_background(self) -> Background {
        let mut bg = Background::default();
        for (cloud, what, h) in self.handles.into_iter().flatten() {
            bg.push(&cloud, what, h);
        }
        bg
    }
}

/// Streams the shards of one blob to some clouds through bounded queues.
pub(super) struct Uploads {
    clouds: Vec<Arc<Cloud>>,
    senders: Vec<Option<mpsc::Sender<Bytes>>>,
    /// Set to drop a cloud from the write; wakes its upload even inside a hanging request.
    aborts: Vec<watch::Sender<bool>>,
    /// Uploads of this client running now, across writes (shared).
    running: Arc<AtomicUsize>,
    /// Most uploads that may keep running after their write returned.
    stragglers_max: usize,
    tasks: Quorum<()>,
    pub(super) failures: Vec<(String, String)>,
}

impl Uploads {
    /// Starts an upload of `shard_path(i)` for every cloud `i` in `which`.
    pub(super) fn start(
        client: &CloudOfClouds,
        name_id: &[u8; 32],
        blob_id: &[u8; 16],
        which: &[usize],
    ) -> Self {
        let n = client.n();
        let tuning = &client.inner.tuning;
        let mut up = Self {
            clouds: client.inner.clouds.clone(),
            senders: (0..n).map(|_| None).collect(),
            aborts: (0..n).map(|_| watch::Sender::new(false)).collect(),
            running: client.inner.uploads_running.clone(),
            stragglers_max: tuning.straggler_uploads_max,
            tasks: Quorum::new(n),
            failures: Vec::new(),
        };
        for &i in which {
            let cloud = client.inner.clouds[i].clone();
            let (tx, mut rx) = mpsc::channel::<Bytes>(tuning.write_queue_segments.max(1));
            let mut abort = up.aborts[i].subscribe();
            let running = Running::start(&up.running);
            let store = cloud.store().clone();
            let path = shard_path(name_id, blob_id, i);
            let (cap, conc) = (tuning.upload_part_bytes, tuning.upload_concurrency.max(1));
            let op_timeout = tuning.op_timeout;
            let task = async move {
                let _running = running;
                let mut w = BufWriter::with_capacity(store, path, cap).with_max_concurrency(conc);
                let dropped = || Err::<(), String>("dropped from the write".into());
                // Dropping the cloud interrupts the upload, even a request that hangs.
                let mut res = tokio::select! {
                    r = async {
                        while let Some(b) = rx.recv().await {
                            w.put(b).await.map_err(|e| one_line(&e))?;
                        }
                        Ok::<(), String>(())
                    } => r,
                    () = dropped_from_write(&mut abort) => dropped(),
                };
                if res.is_ok() && *abort.borrow() {
                    res = dropped();
                }
                if res.is_ok() {
                    res = tokio::select! {
                        r = w.shutdown() => return r.map_err(|e| one_line(&e)),
                        () = dropped_from_write(&mut abort) => dropped(),
                    };
                }
                // Abort leaves nothing visible: multipart uploads are discarded.
                let _ = tokio::time::timeout(op_timeout, w.abort()).await;
                res
            };
            up.tasks.spawn(i, &cloud.name, "data upload", task);
            up.senders[i] = Some(tx);
        }
        up
    }

    pub(super) fn live(&self) -> usize {
        self.senders.iter().filter(|s| s.is_some()).count()
    }

    pub(super) fn cancel(&mut self, i: usize, why: &str) {
        if self.senders[i].take().is_some() {
            tracing::warn!(cloud = %self.clouds[i].name, "dropping cloud from write: {why}");
            self.failures
                .push((self.clouds[i].name.clone(), why.to_owned()));
        }
        self.aborts[i].send_replace(true);
    }

    pub(super) fn cancel_all(&mut self, why: &str) {
        for i in 0..self.senders.len() {
            self.cancel(i, why);
        }
    }

    /// Queues `shard` for cloud `i`. A cloud whose queue stays full for `timeout` is
    /// dropped if more than `keep` clouds are still live; otherwise this waits.
    pub(super) async fn send(&mut self, i: usize, shard: Bytes, timeout: Duration, keep: usize) {
        let mut shard = Some(shard);
        while let (Some(tx), Some(s)) = (self.senders[i].as_ref(), shard.take()) {
            match tx.send_timeout(s, timeout).await {
                Ok(()) => return,
                Err(SendTimeoutError::Closed(_)) => {
                    let why = self.reason(i).unwrap_or_else(|| "upload failed".into());
                    self.cancel(i, &why);
                }
                Err(SendTimeoutError::Timeout(s)) => {
                    if self.live() > keep {
                        self.cancel(i, "too slow");
                    }
                    shard = Some(s);
                }
            }
        }
    }

    /// The failure of cloud `i`'s task, if it has finished with one.
    fn reason(&mut self, i: usize) -> Option<String> {
        while let Some((j, r)) = self.tasks.try_next() {
            if let Err(e) = r {
                self.failures.push((self.clouds[j].name.clone(), e));
            }
        }
        self.failures
            .iter()
            .rev()
            .find(|(c, _)| *c == self.clouds[i].name)
            .map(|(_, r)| r.clone())
    }

    /// Closes the queues and waits until `need` uploads completed; the rest continue as
    /// background work.
    pub(super) async fn finish(
        mut self,
        op: &'static str,
        need: usize,
        n: usize,
    ) -> Result<Background, StoreError> {
        for s in &mut self.senders {
            *s = None;
        }
        let mut ok = 0;
        while ok < need {
            match self.tasks.next().await {
                Some((_, Ok(()))) => ok += 1,
                Some((j, Err(e))) => self.failures.push((self.clouds[j].name.clone(), e)),
                None => break,
            }
        }
        // Uploads still running become stragglers only while at most `stragglers_max` run
        // across the client; the rest are dropped now (scrub repairs those clouds), so a
        // hanging cloud does not keep one more upload alive per write.
        let over = self
            .running
            .load(Ordering::SeqCst)
            .saturating_sub(self.stragglers_max);
        let late: Vec<usize> = (0..self.senders.len())
            .filter(|&j| self.tasks.is_running(j))
            .take(over)
            .collect();
        for j in late {
            tracing::warn!(cloud = %self.clouds[j].name, "dropping straggler upload: too many run");
            self.aborts[j].send_replace(true);
        }
        if ok < need {
            self.failures.dedup();
            return Err(StoreError::QuorumUnavailable {
                op,
                answered: ok,
                needed: need,
                n,
                detail: join_failures(&self.failures),
            });
        }
        Ok(self.tasks.into_background())
    }
}

/// Resolves once the upload is dropped from its write; never if the write ended (and
/// closed the channel) without dropping it.
async fn dropped_from_write(abort: &mut watch::Receiver<bool>) {
    if abort.wait_for(|a| *a).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Counts one running upload in a shared gauge while it lives.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn start(gauge: &Arc<AtomicUsize>) -> Self {
        gauge.fetch_add(1, Ordering::SeqCst);
        Self(gauge.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
