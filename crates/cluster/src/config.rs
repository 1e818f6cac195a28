//! The cluster file (`cluster.toml`) and the private key files.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rampart_bft::{ClientId, Config, ReplicaId};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::ClusterError;

/// Name of the cluster file inside a cluster directory.
pub const CLUSTER_FILE: &str = "cluster.toml";
/// Largest cluster file accepted (it is small; anything larger is not ours).
pub const CLUSTER_FILE_BYTES_MAX: u64 = 1 << 20;

/// One replica in the cluster file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaEntry {
    /// Replica id, `0..n`, in order.
    pub id: u8,
    /// Address it listens on.
    pub addr: SocketAddr,
    /// Ed25519 public key, hex (pins its TLS identity and verifies its protocol signatures).
    pub public_key: String,
}

/// One client identity in the cluster file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientEntry {
    /// Client id.
    pub id: u64,
    /// Ed25519 public key, hex.
    pub public_key: String,
}

/// Protocol settings every replica must agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolSettings {
    /// Decisions between checkpoints (BFT-SMaRt default 1024).
    pub checkpoint_interval: u64,
    /// Request timeout before a leader change, in milliseconds (BFT-SMaRt default 2000).
    pub request_timeout_ms: u64,
}

impl Default for ProtocolSettings {
    fn default() -> Self {
        ProtocolSettings {
            checkpoint_interval: 1024,
            request_timeout_ms: 2000,
        }
    }
}

/// Transport limits of each replica (the `[transport]` section; every field optional).
/// Per-connection budgets are not here: they derive from the core's wire limits
/// ([`crate::listen::TransportLimits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TransportSettings {
    /// Concurrent client connections a replica serves (one per client identity at most).
    pub client_connections_max: usize,
    /// Concurrent TLS handshakes (unauthenticated connections) a replica runs.
    pub handshakes_max: usize,
    /// A TLS handshake not finished within this time closes the connection, in ms.
    pub handshake_timeout_ms: u64,
    /// Time a frame may take once its first byte arrived, in ms ...
    pub frame_timeout_ms: u64,
    /// ... plus its declared length at this rate (bytes per second).
    pub frame_rate_min_bytes_per_sec: u64,
    /// A client connection with no frame for this long is closed, in ms.
    pub client_idle_timeout_ms: u64,
    /// Bytes of client requests queued for the core, all clients together.
    pub client_inbound_bytes_max: usize,
    /// Bytes of replies queued for clients, all clients together.
    pub client_outbound_bytes_max: usize,
}

impl Default for TransportSettings {
    fn default() -> Self {
        TransportSettings {
            client_connections_max: 1024,
            handshakes_max: 64,
            handshake_timeout_ms: 5_000,
            frame_timeout_ms: 10_000,
            frame_rate_min_bytes_per_sec: 256 << 10,
            client_idle_timeout_ms: 300_000,
            client_inbound_bytes_max: 64 << 20,
            client_outbound_bytes_max: 128 << 20,
        }
    }
}

impl TransportSettings {
    fn check(&self) -> Result<(), String> {
        let all = [
            self.client_connections_max as u64,
            self.handshakes_max as u64,
            self.handshake_timeout_ms,
            self.frame_timeout_ms,
            self.frame_rate_min_bytes_per_sec,
            self.client_idle_timeout_ms,
            self.client_inbound_bytes_max as u64,
            self.client_outbound_bytes_max as u64,
        ];
        if all.contains(&0) {
            return Err("transport settings must be positive".into());
        }
        Ok(())
    }
}

/// The on-disk form of `cluster.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClusterToml {
    n: usize,
    f: usize,
    #[serde(default)]
    protocol: ProtocolSettings,
    #[serde(default)]
    transport: TransportSettings,
    replicas: Vec<ReplicaEntry>,
    #[serde(default)]
    clients: Vec<ClientEntry>,
}

/// A parsed and checked cluster description.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Directory of the cluster file (key files and replica data live beside it).
    pub dir: PathBuf,
    /// Replicas, indexed by id.
    pub replicas: Vec<ReplicaEntry>,
    /// Their public keys, indexed by id.
    pub replica_keys: Vec<VerifyingKey>,
    /// Client public keys.
    pub client_keys: BTreeMap<ClientId, VerifyingKey>,
    /// Protocol settings.
    pub protocol: ProtocolSettings,
    /// Transport limits.
    pub transport: TransportSettings,
}

impl Cluster {
    /// n.
    #[must_use]
    pub fn n(&self) -> usize {
        self.replicas.len()
    }

    /// f = ⌊(n−1)/3⌋.
    #[must_use]
    pub fn f(&self) -> usize {
        self.n().saturating_sub(1) / 3
    }

    /// The core's configuration for this cluster (KV-sized limits).
    #[must_use]
    pub fn bft_config(&self) -> Config {
        let mut c = Config::new(self.n());
        c.request_op_bytes_max = rampart_kv::REQUEST_BYTES_MAX;
        c.reply_bytes_max = rampart_kv::REQUEST_BYTES_MAX;
        c.batch_bytes_max = rampart_bft::BATCH_BYTES_MAX;
        c.decisions_per_fetch_max = 4;
        c.checkpoint_interval = self.protocol.checkpoint_interval;
        c.request_timeout = Duration::from_millis(self.protocol.request_timeout_ms);
        c.clients_max = self.client_keys.len().max(1);
        c.pending_requests_max = self.client_keys.len().max(1);
        c
    }

    /// Load and check `path` (a `cluster.toml`).
    pub fn load(path: &Path) -> Result<Cluster, ClusterError> {
        let bad = |reason: String| ClusterError::ClusterFile {
            path: path.to_owned(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        if meta.len() > CLUSTER_FILE_BYTES_MAX {
            return Err(bad(format!("larger than {CLUSTER_FILE_BYTES_MAX} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let t: ClusterToml = toml::from_str(&text).map_err(|e| bad(e.message().to_owned()))?;
        if t.replicas.len() != t.n {
            return Err(bad(format!(
                "n = {} but {} replicas listed",
                t.n,
                t.replicas.len()
            )));
        }
        if t.n < 4 || t.n > rampart_bft::REPLICAS_MAX {
            return Err(bad(format!(
                "n = {} (need 4 ≤ n ≤ {})",
                t.n,
                rampart_bft::REPLICAS_MAX
            )));
        }
        if t.f != (t.n - 1) / 3 {
            return Err(bad(format!(
                "f = {} but n = {} implies f = {}",
                t.f,
                t.n,
                (t.n - 1) / 3
            )));
        }
        if t.protocol.checkpoint_interval == 0 || t.protocol.request_timeout_ms == 0 {
            return Err(bad("protocol settings must be positive".into()));
        }
        t.transport.check().map_err(bad)?;
        let mut replica_keys = Vec::with_capacity(t.n);
        for (i, r) in t.replicas.iter().enumerate() {
            if usize::from(r.id) != i {
                return Err(bad(format!(
                    "replica entry {i} has id {} (ids must be 0..n in order)",
                    r.id
                )));
            }
            replica_keys.push(
                parse_public_key(&r.public_key).map_err(|e| bad(format!("replica {i}: {e}")))?,
            );
        }
        let mut client_keys = BTreeMap::new();
        for c in &t.clients {
            let k = parse_public_key(&c.public_key)
                .map_err(|e| bad(format!("client {}: {e}", c.id)))?;
            if client_keys.insert(ClientId(c.id), k).is_some() {
                return Err(bad(format!("client id {} listed twice", c.id)));
            }
        }
        Ok(Cluster {
            dir: path
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_owned),
            replicas: t.replicas,
            replica_keys,
            client_keys,
            protocol: t.protocol,
            transport: t.transport,
        })
    }

    /// The replica entry for `id`, or a clear error.
    pub fn replica(&self, id: u8) -> Result<&ReplicaEntry, ClusterError> {
        self.replicas
            .get(usize::from(id))
            .ok_or(ClusterError::UnknownReplica { id, n: self.n() })
    }

    /// Path of replica `id`'s key file.
    #[must_use]
    pub fn replica_key_path(&self, id: ReplicaId) -> PathBuf {
        self.dir.join(format!("replica-{}.key", id.0))
    }

    /// Path of client `id`'s key file.
    #[must_use]
    pub fn client_key_path(&self, id: ClientId) -> PathBuf {
        self.dir.join(format!("client-{}.key", id.0))
    }

    /// Load replica `id`'s private key and check it matches the cluster file.
    pub fn replica_key(&self, id: ReplicaId) -> Result<SigningKey, ClusterError> {
        let expected =
            self.replica_keys
                .get(usize::from(id.0))
                .ok_or(ClusterError::UnknownReplica {
                    id: id.0,
                    n: self.n(),
                })?;
        let path = self.replica_key_path(id);
        let key = read_key_file(&path)?;
        if key.verifying_key() != *expected {
            return Err(ClusterError::KeyMismatch { path });
        }
        Ok(key)
    }

    /// Load client `id`'s private key and check it matches the cluster file.
    pub fn client_key(&self, id: ClientId) -> Result<SigningKey, ClusterError> {
        let expected = self
            .client_keys
            .get(&id)
            .ok_or(ClusterError::UnknownClient { id: id.0 })?;
        let path = self.client_key_path(id);
        let key = read_key_file(&path)?;
        if key.verifying_key() != *expected {
            return Err(ClusterError::KeyMismatch { path });
        }
        Ok(key)
    }
}

fn parse_public_key(hex_key: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = hex::decode(hex_key)
        .map_err(|e| format!("public key is not hex: {e}"))?
        .try_into()
        .map_err(|_| "public key is not 32 bytes".to_owned())?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| "public key is not a valid Ed25519 point".to_owned())
}

/// Options of [`init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// n.
    pub replicas: usize,
    /// Client identities to create.
    pub clients: u64,
    /// Replica addresses; `None`: 127.0.0.1 and `base_port + id`.
    pub addrs: Option<Vec<SocketAddr>>,
    /// First port when `addrs` is `None`.
    pub base_port: u16,
    /// Protocol settings.
    pub protocol: ProtocolSettings,
    /// Transport limits.
    pub transport: TransportSettings,
}

/// Write `dir/cluster.toml` and fresh private keys (`replica-I.key`, `client-J.key`, mode
/// 0600). Refuses to overwrite an existing cluster file.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<PathBuf, ClusterError> {
    let n = opts.replicas;
    if !(4..=rampart_bft::REPLICAS_MAX).contains(&n) {
        return Err(ClusterError::BadReplicaCount { n });
    }
    if opts.clients == 0 || opts.clients > 10_000 {
        return Err(ClusterError::BadClientCount {
            clients: opts.clients,
        });
    }
    let addrs = match &opts.addrs {
        Some(a) if a.len() == n => a.clone(),
        Some(a) => {
            return Err(ClusterError::AddrCount { addrs: a.len(), n });
        }
        None => (0..n)
            .map(|i| {
                let port = u16::try_from(usize::from(opts.base_port) + i)
                    .map_err(|_| ClusterError::BadReplicaCount { n })?;
                Ok(SocketAddr::from(([127, 0, 0, 1], port)))
            })
            .collect::<Result<_, ClusterError>>()?,
    };
    std::fs::create_dir_all(dir).map_err(|e| ClusterError::io(dir, e))?;
    let path = dir.join(CLUSTER_FILE);
    if path.exists() {
        return Err(ClusterError::AlreadyInitialised { path });
    }
    let mut replicas = Vec::with_capacity(n);
    for (i, addr) in addrs.into_iter().enumerate() {
        let key = SigningKey::generate(&mut rand_core::OsRng);
        write_key_file(&dir.join(format!("replica-{i}.key")), &key)?;
        replicas.push(ReplicaEntry {
            id: u8::try_from(i).map_err(|_| ClusterError::BadReplicaCount { n })?,
            addr,
            public_key: hex::encode(key.verifying_key().as_bytes()),
        });
    }
    let mut clients = Vec::new();
    for id in 0..opts.clients {
        let key = SigningKey::generate(&mut rand_core::OsRng);
        write_key_file(&dir.join(format!("client-{id}.key")), &key)?;
        clients.push(ClientEntry {
            id,
            public_key: hex::encode(key.verifying_key().as_bytes()),
        });
    }
    let t = ClusterToml {
        n,
        f: (n - 1) / 3,
        protocol: opts.protocol,
        transport: opts.transport,
        replicas,
        clients,
    };
    let text = toml::to_string(&t).map_err(|e| ClusterError::ClusterFile {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let header = "# Rampart BFT cluster: n replicas tolerate f Byzantine ones (n >= 3f+1).\n\
                  # Public data only; the private keys are the 0600 *.key files beside it.\n";
    let tmp = dir.join(".cluster.toml.tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| ClusterError::io(&tmp, e))?;
        f.write_all(header.as_bytes())
            .and_then(|()| f.write_all(text.as_bytes()))
            .and_then(|()| f.sync_all())
            .map_err(|e| ClusterError::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| ClusterError::io(&path, e))?;
    Ok(path)
}

fn write_key_file(path: &Path, key: &SigningKey) -> Result<(), ClusterError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ClusterError::io(path, e))?;
    let text = Zeroizing::new(format!("{}\n", hex::encode(key.to_bytes())));
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| ClusterError::io(path, e))
}

/// Read a private key file: 64 hex digits; must not be readable by group or others.
pub fn read_key_file(path: &Path) -> Result<SigningKey, ClusterError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|e| ClusterError::io(path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ClusterError::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() > 256 {
        return Err(ClusterError::BadKeyFile {
            path: path.to_owned(),
        });
    }
    let text =
        Zeroizing::new(std::fs::read_to_string(path).map_err(|e| ClusterError::io(path, e))?);
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), seed.as_mut_slice()).map_err(|_| {
        ClusterError::BadKeyFile {
            path: path.to_owned(),
        }
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_a_loadable_cluster_with_private_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = InitOptions {
            replicas: 4,
            clients: 2,
            addrs: None,
            base_port: 7100,
            protocol: ProtocolSettings::default(),
            transport: TransportSettings::default(),
        };
        let path = init(dir.path(), &opts).expect("init");
        let c = Cluster::load(&path).expect("load");
        assert_eq!((c.n(), c.f()), (4, 1));
        assert_eq!(c.replicas[3].addr, "127.0.0.1:7103".parse().expect("addr"));
        for i in 0..4u8 {
            c.replica_key(ReplicaId(i)).expect("replica key matches");
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(c.replica_key_path(ReplicaId(i)))
                    .expect("meta")
                    .permissions(),
            );
            assert_eq!(mode & 0o777, 0o600);
        }
        c.client_key(ClientId(1)).expect("client key");
        assert!(matches!(
            c.client_key(ClientId(2)),
            Err(ClusterError::UnknownClient { id: 2 })
        ));
        assert!(matches!(
            c.replica(4),
            Err(ClusterError::UnknownReplica { id: 4, n: 4 })
        ));
        // No overwrite.
        assert!(matches!(
            init(dir.path(), &opts),
            Err(ClusterError::AlreadyInitialised { .. })
        ));
        // A key readable by others is refused.
        let p = c.replica_key_path(ReplicaId(0));
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod");
        assert!(matches!(
            c.replica_key(ReplicaId(0)),
            Err(ClusterError::KeyPermissions { .. })
        ));
        // Another replica's key does not pass for this one.
        std::fs::copy(
            c.replica_key_path(ReplicaId(2)),
            c.replica_key_path(ReplicaId(1)),
        )
        .expect("copy");
        assert!(matches!(
            c.replica_key(ReplicaId(1)),
            Err(ClusterError::KeyMismatch { .. })
        ));
    }

    #[test]
    fn load_rejects_inconsistent_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = InitOptions {
            replicas: 4,
            clients: 1,
            addrs: None,
            base_port: 7100,
            protocol: ProtocolSettings::default(),
            transport: TransportSettings::default(),
        };
        let path = init(dir.path(), &opts).expect("init");
        let text = std::fs::read_to_string(&path).expect("read");
        for (from, to) in [
            ("n = 4", "n = 5"),
            ("f = 1", "f = 2"),
            ("id = 3", "id = 7"),
            (
                "client_connections_max = 1024",
                "client_connections_max = 0",
            ),
        ] {
            assert!(text.contains(from), "{from}");
            std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
            assert!(Cluster::load(&path).is_err(), "{from} -> {to}");
        }
        std::fs::write(&path, "not toml [").expect("write");
        assert!(Cluster::load(&path).is_err());
    }
}
