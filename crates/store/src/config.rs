//! `rampart.toml` and the key file it points to.
//!
//! ```toml
//! store_id = "9f0c…"          # 16 random bytes, hex; binds metadata to this store
//! key_file = "rampart.key"    # relative to this file; must be mode 0600
//! protocol = "ca"             # "ca" (DepSky-CA, default) or "a" (DepSky-A, plaintext)
//! segment_size = 4194304      # plaintext bytes per segment
//! trusted_writers = []        # extra writers' public keys (hex); our own is implied
//!
//! [[clouds]]
//! name = "aws-eu"
//! url = "s3://bucket/prefix"  # any object_store URL: file://, s3://, az://, gs://, memory://
//! options = { aws_region = "eu-west-1" }   # object_store options; credentials from env
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rampart_crypto::hash::derive_key;
use rampart_crypto::sign::{SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::StoreError;
use crate::meta::{CLOUDS_MAX, Protocol, SEGMENT_BYTES_MAX};

/// Default plaintext segment size: 4 MiB.
pub const SEGMENT_SIZE_DEFAULT: u32 = 4 * 1024 * 1024;
/// Smallest segment size accepted from a config file.
pub const SEGMENT_SIZE_MIN: u32 = 4 * 1024;
/// Largest config or key file read, in bytes.
const CONFIG_BYTES_MAX: u64 = 1024 * 1024;

/// One cloud as written in `rampart.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// Human-readable name used in reports.
    pub name: String,
    /// An `object_store` URL.
    pub url: String,
    /// Backend options passed to `object_store::parse_url_opts` (never logged).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// Optional audit logging of store operations.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Directory of a secure log (`rampart log init DIR`), relative to the config file.
    pub log_dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    store_id: String,
    key_file: PathBuf,
    #[serde(default = "default_protocol")]
    protocol: String,
    #[serde(default = "default_segment_size")]
    segment_size: u32,
    #[serde(default)]
    trusted_writers: Vec<String>,
    clouds: Vec<CloudConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audit: Option<AuditConfig>,
    /// Settings of the S3 gateway (`rampart gateway`), parsed strictly by that crate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<toml::Table>,
}

fn default_protocol() -> String {
    "ca".into()
}

fn default_segment_size() -> u32 {
    SEGMENT_SIZE_DEFAULT
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    signing_key: String,
    namespace_secret: String,
}

/// The client's secrets: its signing key and the namespace secret that hides key names.
pub struct Secrets {
    /// Signs metadata this client writes.
    pub signing_key: SigningKey,
    namespace_secret: Zeroizing<[u8; 32]>,
}

/// A second copy, for a second client that shares one key file (the CLI beside a gateway).
impl Clone for Secrets {
    fn clone(&self) -> Self {
        Self {
            signing_key: SigningKey::from_seed(&self.signing_key.danger_seed()),
            namespace_secret: self.namespace_secret.clone(),
        }
    }
}

impl Secrets {
    /// Fresh secrets from the OS RNG.
    pub fn generate() -> Self {
        let mut ns = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(ns.as_mut());
        Self {
            signing_key: SigningKey::generate(),
            namespace_secret: ns,
        }
    }

    /// Key for the keyed hash that turns user keys into cloud object names.
    pub fn name_id_key(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(derive_key(
            "rampart-store 2026 name-id",
            self.namespace_secret.as_ref(),
        ))
    }

    /// Key that seals user keys inside metadata.
    pub fn name_seal_key(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(derive_key(
            "rampart-store 2026 name-seal",
            self.namespace_secret.as_ref(),
        ))
    }

    /// Key under which the plaintext's digest is hashed before it enters metadata, so that
    /// clouds cannot test guesses of the plaintext.
    pub fn content_digest_key(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(derive_key(
            "rampart-store 2026 content-digest",
            self.namespace_secret.as_ref(),
        ))
    }

    /// Key that wraps each version's data key for the sealed single backend.
    pub fn key_wrap_key(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(derive_key(
            "rampart-store 2026 key-wrap",
            self.namespace_secret.as_ref(),
        ))
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Secrets {{ signing_key: {:?}, namespace_secret: <redacted> }}",
            self.signing_key
        )
    }
}

/// A loaded, validated configuration.
#[derive(Debug)]
pub struct StoreConfig {
    /// Store identity bound into every signature.
    pub store_id: [u8; 16],
    /// Protocol for new writes.
    pub protocol: Protocol,
    /// Plaintext bytes per segment for new writes.
    pub segment_size: u32,
    /// Keys whose metadata is accepted (always includes our own).
    pub trusted_writers: Vec<VerifyingKey>,
    /// The clouds, in order: cloud `i` holds shard `i`.
    pub clouds: Vec<CloudConfig>,
    /// Audit log settings, with `log_dir` resolved against the config's directory.
    pub audit: Option<AuditConfig>,
    /// This client's secrets.
    pub secrets: Secrets,
    /// The `[gateway]` table, uninterpreted: the S3 gateway crate parses it (strictly).
    pub gateway: Option<GatewaySection>,
}

/// The raw `[gateway]` table of `rampart.toml`. It holds S3 secret keys, so its `Debug`
/// output is redacted.
#[derive(Clone)]
pub struct GatewaySection(pub toml::Table);

impl std::fmt::Debug for GatewaySection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewaySection(<redacted>)")
    }
}

impl StoreConfig {
    /// Reads and validates `path` and its key file.
    pub fn load(path: &Path) -> Result<Self, StoreError> {
        // It holds the S3 gateway's secrets and cloud credentials: private, as the key file.
        require_private(path, "config")?;
        let text = read_small(path)?;
        let file: ConfigFile = toml::from_str(&text).map_err(|e| StoreError::Config {
            path: path.to_owned(),
            reason: one_line(&e.to_string()),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let cfg_err = |reason: String| StoreError::Config {
            path: path.to_owned(),
            reason,
        };

        let mut store_id = [0u8; 16];
        hex::decode_to_slice(&file.store_id, &mut store_id)
            .map_err(|_| cfg_err("store_id must be 32 hex digits".into()))?;
        let protocol = match file.protocol.as_str() {
            "ca" => Protocol::Confidential,
            "a" => Protocol::Replicated,
            "sealed" => Protocol::Sealed,
            other => {
                return Err(cfg_err(format!(
                    "protocol must be \"ca\", \"a\" or \"sealed\", not {other:?}"
                )));
            }
        };
        if !(SEGMENT_SIZE_MIN..=SEGMENT_BYTES_MAX).contains(&file.segment_size) {
            return Err(cfg_err(format!(
                "segment_size must be between {SEGMENT_SIZE_MIN} and {SEGMENT_BYTES_MAX}"
            )));
        }
        check_clouds(file.clouds.len(), protocol).map_err(cfg_err)?;
        for (i, c) in file.clouds.iter().enumerate() {
            if file.clouds[..i].iter().any(|o| o.name == c.name) {
                return Err(cfg_err(format!("duplicate cloud name {:?}", c.name)));
            }
            url::Url::parse(&c.url)
                .map_err(|e| cfg_err(format!("cloud {:?}: bad url: {e}", c.name)))?;
        }
        let key_path = base.join(&file.key_file);
        let secrets = load_key_file(&key_path)?;
        let mut trusted_writers = vec![secrets.signing_key.verifying_key()];
        for w in &file.trusted_writers {
            let k = VerifyingKey::from_hex(w)
                .map_err(|_| cfg_err(format!("bad trusted writer key {w:?}")))?;
            if !trusted_writers.contains(&k) {
                trusted_writers.push(k);
            }
        }
        let audit = file.audit.map(|a| AuditConfig {
            log_dir: base.join(a.log_dir),
        });
        Ok(Self {
            store_id,
            protocol,
            segment_size: file.segment_size,
            trusted_writers,
            clouds: file.clouds,
            audit,
            secrets,
            gateway: file.gateway.map(GatewaySection),
        })
    }

    /// Number of clouds `n`.
    pub fn n(&self) -> usize {
        self.clouds.len()
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn read_small(path: &Path) -> Result<String, StoreError> {
    let io = |source| StoreError::Io {
        context: format!("reading {}", path.display()),
        source,
    };
    let meta = fs::metadata(path).map_err(io)?;
    if meta.len() > CONFIG_BYTES_MAX {
        return Err(StoreError::Config {
            path: path.to_owned(),
            reason: "file is too large".into(),
        });
    }
    let bytes = fs::read(path).map_err(io)?;
    String::from_utf8(bytes).map_err(|_| StoreError::Config {
        path: path.to_owned(),
        reason: "not valid UTF-8".into(),
    })
}

/// Refuses a file that group or others may access: it holds secrets. `what` names it in
/// the error ("config", "key file").
fn require_private(path: &Path, what: &str) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(|source| StoreError::Io {
                context: format!("reading {what} {}", path.display()),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(StoreError::Config {
                path: path.to_owned(),
                reason: format!(
                    "{what} is accessible by others (mode {:o}); run chmod 600",
                    mode & 0o777
                ),
            });
        }
    }
    Ok(())
}

fn load_key_file(path: &Path) -> Result<Secrets, StoreError> {
    require_private(path, "key file")?;
    let text = Zeroizing::new(read_small(path)?);
    let bad = || StoreError::Config {
        path: path.to_owned(),
        reason: "not a valid Rampart key file".into(),
    };
    let file: KeyFile = toml::from_str(&text).map_err(|_| bad())?;
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(&file.signing_key, seed.as_mut()).map_err(|_| bad())?;
    let mut ns = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(&file.namespace_secret, ns.as_mut()).map_err(|_| bad())?;
    drop(Zeroizing::new(file.signing_key));
    drop(Zeroizing::new(file.namespace_secret));
    Ok(Secrets {
        signing_key: SigningKey::from_seed(&seed),
        namespace_secret: ns,
    })
}

/// Checks that `n` clouds suit `protocol`: 4 to [`CLOUDS_MAX`] clouds (n ≥ 3f + 1 with
/// f ≥ 1) for DepSky-A and DepSky-CA, exactly one for the sealed single backend.
pub fn check_clouds(n: usize, protocol: Protocol) -> Result<(), String> {
    match protocol {
        Protocol::Sealed if n == 1 => Ok(()),
        Protocol::Sealed => Err(format!(
            "protocol \"sealed\" is the single-backend mode and takes exactly one cloud, found {n} \
             (use \"ca\" for several clouds)"
        )),
        _ if n == 1 => Err(
            "one cloud needs protocol = \"sealed\" (a single encrypted backend, no fault tolerance)"
                .into(),
        ),
        _ if !(4..=CLOUDS_MAX).contains(&n) => Err(format!(
            "need between 4 and {CLOUDS_MAX} clouds to tolerate a faulty one (n >= 3f+1), found {n}"
        )),
        _ => Ok(()),
    }
}

/// What `rampart init` created.
#[derive(Debug)]
pub struct InitReport {
    /// The config file written.
    pub config_path: PathBuf,
    /// The key file written (mode 0600).
    pub key_path: PathBuf,
    /// The cloud directories created.
    pub cloud_dirs: Vec<PathBuf>,
    /// Public key of the new signing key.
    pub public_key: VerifyingKey,
}

/// Writes `dir/rampart.toml` with `clouds` local-directory clouds under `dir/clouds/`, and a
/// fresh key file `dir/rampart.key` with mode 0600. Refuses to overwrite an existing config.
/// Four or more clouds use DepSky-CA; one cloud is the sealed single backend (see
/// [`check_clouds`]).
pub fn init_local(dir: &Path, clouds: usize) -> Result<InitReport, StoreError> {
    let config_path = dir.join("rampart.toml");
    let key_path = dir.join("rampart.key");
    let protocol = if clouds == 1 {
        Protocol::Sealed
    } else {
        Protocol::Confidential
    };
    check_clouds(clouds, protocol).map_err(|reason| StoreError::Config {
        path: config_path.clone(),
        reason,
    })?;
    for p in [&config_path, &key_path] {
        if p.exists() {
            return Err(StoreError::Config {
                path: p.clone(),
                reason: "already exists; refusing to overwrite (move it away first)".into(),
            });
        }
    }
    let io = |context: String| move |source| StoreError::Io { context, source };
    let dir = fs::canonicalize(dir).map_err(io(format!("resolving {}", dir.display())))?;
    let mut cloud_dirs = Vec::new();
    let mut cloud_cfgs = Vec::new();
    for i in 1..=clouds {
        let d = dir.join("clouds").join(format!("cloud-{i}"));
        fs::create_dir_all(&d).map_err(io(format!("creating {}", d.display())))?;
        let url = url::Url::from_directory_path(&d).map_err(|_| StoreError::Config {
            path: d.clone(),
            reason: "not an absolute path".into(),
        })?;
        cloud_cfgs.push(CloudConfig {
            name: format!("local-{i}"),
            url: url.to_string(),
            options: BTreeMap::new(),
        });
        cloud_dirs.push(d);
    }
    let secrets = Secrets::generate();
    let mut store_id = [0u8; 16];
    OsRng.fill_bytes(&mut store_id);
    let file = ConfigFile {
        store_id: hex::encode(store_id),
        key_file: PathBuf::from("rampart.key"),
        protocol: if protocol == Protocol::Sealed {
            "sealed".into()
        } else {
            default_protocol()
        },
        segment_size: SEGMENT_SIZE_DEFAULT,
        trusted_writers: vec![],
        clouds: cloud_cfgs,
        audit: None,
        gateway: None,
    };
    let body = toml::to_string_pretty(&file).expect("config serialises");
    let summary = if clouds == 1 {
        "One cloud: a single encrypted backend (protocol \"sealed\"), no fault tolerance.".into()
    } else {
        format!(
            "n = {clouds} clouds tolerate f = {} faulty ones.",
            (clouds - 1) / 3
        )
    };
    let text = format!(
        "# Rampart cloud-of-clouds store. {summary}\n\
         # Each cloud is an object_store URL (file://, s3://, az://, gs://) with options.\n{body}"
    );
    let key = KeyFile {
        signing_key: hex::encode(*secrets.signing_key.danger_seed()),
        namespace_secret: hex::encode(*secrets.namespace_secret),
    };
    let key_text = Zeroizing::new(format!(
        "# Rampart client secrets. Keep private (mode 0600). Public key: {}\n{}",
        secrets.signing_key.verifying_key(),
        toml::to_string(&key).expect("key file serialises")
    ));
    drop(Zeroizing::new(key.signing_key));
    drop(Zeroizing::new(key.namespace_secret));
    write_new_file(&key_path, key_text.as_bytes(), 0o600)?;
    write_new_file(&config_path, text.as_bytes(), 0o600)?;
    Ok(InitReport {
        config_path,
        key_path,
        cloud_dirs,
        public_key: secrets.signing_key.verifying_key(),
    })
}

fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        context: format!("writing {}", path.display()),
        source,
    };
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_load_roundtrip_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let rep = init_local(dir.path(), 4).unwrap();
        assert_eq!(rep.cloud_dirs.len(), 4);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&rep.key_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let cfg = StoreConfig::load(&rep.config_path).unwrap();
        assert_eq!(cfg.n(), 4);
        assert_eq!(cfg.trusted_writers, vec![rep.public_key]);
        assert!(init_local(dir.path(), 4).is_err());
    }

    #[test]
    fn one_cloud_is_the_sealed_single_backend_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let rep = init_local(dir.path(), 1).unwrap();
        let cfg = StoreConfig::load(&rep.config_path).unwrap();
        assert_eq!((cfg.n(), cfg.protocol), (1, Protocol::Sealed));
        let text = fs::read_to_string(&rep.config_path).unwrap();
        fs::write(&rep.config_path, text.replace("\"sealed\"", "\"ca\"")).unwrap();
        let err = StoreConfig::load(&rep.config_path).unwrap_err();
        assert!(
            err.to_string().contains("needs protocol = \"sealed\""),
            "{err}"
        );
        for (n, protocol, ok) in [
            (1, Protocol::Sealed, true),
            (4, Protocol::Sealed, false),
            (1, Protocol::Replicated, false),
            (2, Protocol::Confidential, false),
            (3, Protocol::Confidential, false),
            (4, Protocol::Confidential, true),
            (16, Protocol::Replicated, true),
            (17, Protocol::Confidential, false),
        ] {
            assert_eq!(check_clouds(n, protocol).is_ok(), ok, "{n} {protocol}");
        }
    }

    #[test]
    fn rejects_bad_configs() {
        let dir = tempfile::tempdir().unwrap();
        let rep = init_local(dir.path(), 4).unwrap();
        let good = fs::read_to_string(&rep.config_path).unwrap();
        let cases = [
            good.replace("protocol = \"ca\"", "protocol = \"zz\""),
            good.replace("store_id = \"", "store_id = \"zz"),
            good.replace("[[clouds]]", "[[nonsense]]"),
            "this is not toml ][".to_string(),
            // Sealed is the one-cloud mode only.
            good.replace("protocol = \"ca\"", "protocol = \"sealed\""),
        ];
        for (i, text) in cases.iter().enumerate() {
            fs::write(&rep.config_path, text).unwrap();
            let err = StoreConfig::load(&rep.config_path).unwrap_err();
            assert!(matches!(err, StoreError::Config { .. }), "case {i}: {err}");
            assert!(
                !err.to_string().contains('\n'),
                "case {i}: error must be one line: {err}"
            );
        }
        // A key file readable by others is refused.
        fs::write(&rep.config_path, &good).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&rep.key_path, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(
                StoreConfig::load(&rep.config_path)
                    .unwrap_err()
                    .to_string()
                    .contains("chmod 600")
            );
        }
    }
}
