//! A whole cluster in one process: the embedded default (`rampart kv up`), benchmarks and
//! other subsystems that need a replicated KV without deploying it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rampart_bft::ReplicaId;
use tokio::net::TcpListener;

use crate::ClusterError;
use crate::config::{
    CLUSTER_FILE, Cluster, InitOptions, ProtocolSettings, TransportSettings, init,
};
use crate::replica::{ReplicaOptions, TransportStats, run_replica};

/// Replicas of a local cluster running as tasks of this process.
pub struct LocalCluster {
    /// The cluster description.
    pub cluster: Cluster,
    /// Path of its cluster file.
    pub path: PathBuf,
    tasks: Vec<Option<tokio::task::JoinHandle<Result<(), ClusterError>>>>,
    stats: Vec<Arc<TransportStats>>,
}

/// Options of [`LocalCluster::start`].
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// n (for a new cluster).
    pub replicas: usize,
    /// Client identities (for a new cluster).
    pub clients: u64,
    /// Keep the replicas' state on disk under the cluster directory (else in memory).
    pub durable: bool,
    /// Protocol settings (for a new cluster).
    pub protocol: ProtocolSettings,
    /// Transport limits (for a new cluster).
    pub transport: TransportSettings,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            replicas: 4,
            clients: 4,
            durable: true,
            protocol: ProtocolSettings::default(),
            transport: TransportSettings::default(),
        }
    }
}

impl LocalCluster {
    /// Start every replica of `dir/cluster.toml`, creating the cluster first (on free
    /// loopback ports) if the file does not exist. Returns once all listen.
    pub async fn start(dir: &Path, opts: &LocalOptions) -> Result<LocalCluster, ClusterError> {
        let path = dir.join(CLUSTER_FILE);
        let mut listeners = Vec::new();
        if !path.exists() {
            let mut addrs = Vec::new();
            for _ in 0..opts.replicas {
                let l = TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| ClusterError::Bind {
                        addr: ([127, 0, 0, 1], 0).into(),
                        source: e,
                    })?;
                addrs.push(l.local_addr().map_err(|e| ClusterError::io(dir, e))?);
                listeners.push(Some(l));
            }
            init(
                dir,
                &InitOptions {
                    replicas: opts.replicas,
                    clients: opts.clients,
                    addrs: Some(addrs),
                    base_port: 0,
                    protocol: opts.protocol,
                    transport: opts.transport,
                },
            )?;
        }
        let cluster = Cluster::load(&path)?;
        listeners.resize_with(cluster.n(), || None);
        let mut tasks = Vec::new();
        let mut stats = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let id = ReplicaId(u8::try_from(i).unwrap_or(u8::MAX));
            let key = cluster.replica_key(id)?;
            let data_dir = opts
                .durable
                .then(|| cluster.dir.join(format!("replica-{i}")));
            let (tx, rx) = tokio::sync::oneshot::channel();
            let s = Arc::new(TransportStats::default());
            stats.push(s.clone());
            let task = tokio::spawn(run_replica(
                cluster.clone(),
                id,
                key,
                ReplicaOptions {
                    data_dir,
                    danger_byzantine: None,
                    stats: s,
                },
                listener,
                Some(tx),
            ));
            match rx.await {
                Ok(_) => tasks.push(Some(task)),
                Err(_) => {
                    return match task.await {
                        Ok(Err(e)) => Err(e),
                        _ => Err(ClusterError::Core(
                            "replica task ended before listening".into(),
                        )),
                    };
                }
            }
        }
        Ok(LocalCluster {
            cluster,
            path,
            tasks,
            stats,
        })
    }

    /// Replica `id`'s transport counters.
    #[must_use]
    pub fn transport_stats(&self, id: ReplicaId) -> Option<Arc<TransportStats>> {
        self.stats.get(usize::from(id.0)).cloned()
    }

    /// Stop replica `id` abruptly (its tasks are dropped, like a crash of the process
    /// without the disk loss). Its connections close.
    pub fn crash(&mut self, id: ReplicaId) {
        if let Some(Some(t)) = self.tasks.get_mut(usize::from(id.0)).map(Option::take) {
            t.abort();
        }
    }

    /// Wait until a replica task fails (it never ends by itself otherwise).
    pub async fn wait(&mut self) -> Result<(), ClusterError> {
        let mut set = tokio::task::JoinSet::new();
        for t in self.tasks.iter_mut().filter_map(Option::take) {
            set.spawn(t);
        }
        match set.join_next().await {
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(e))) => Err(ClusterError::Core(e.to_string())),
            Some(Err(e)) => Err(ClusterError::Core(e.to_string())),
            None => Ok(()),
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for t in self.tasks.iter_mut().filter_map(Option::take) {
            t.abort();
        }
    }
}
