//! The `[gateway]` section of `rampart.toml`: listen address, S3 access keys, limits.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::GatewayError;

/// Default listen address: loopback only, so nothing is exposed without a decision.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:9000";
/// Default largest body of one `PutObject` or `UploadPart` request: 5 GiB, as in S3.
pub const UPLOAD_BYTES_MAX_DEFAULT: u64 = 5 * 1024 * 1024 * 1024;
/// Default most connections served at once; more wait in the listen backlog.
pub const CONNECTIONS_MAX_DEFAULT: usize = 256;
/// Default most object transfers (store reads and writes) running at once; more wait.
/// Each one holds at most one store pipeline, about 120 MiB for n = 4 and 4 MiB segments
/// (see `rampart_store::Tuning`), so the default bounds transfer memory near 2 GiB.
pub const TRANSFERS_MAX_DEFAULT: usize = 16;
/// Default longest wait for a request head, and idle keep-alive limit, in seconds.
pub const HEADER_TIMEOUT_SECS_DEFAULT: u64 = 10;
/// Default longest time a connection may move no byte, in seconds.
pub const IDLE_TIMEOUT_SECS_DEFAULT: u64 = 60;
/// Default most connections from one client address.
pub const CONNECTIONS_PER_ADDRESS_MAX_DEFAULT: usize = 64;
/// Default slowest body transfer with a client, in bytes per second (4 KiB/s, 32 kbit/s),
/// averaged over [`BODY_RATE_WINDOW_SECS_DEFAULT`]: far below any working link, so only a
/// stalled or hostile client falls under it. See [`crate::rate`].
pub const BODY_RATE_MIN_BYTES_PER_SEC_DEFAULT: u64 = 4096;
/// Default window of the minimum body rate, in seconds.
pub const BODY_RATE_WINDOW_SECS_DEFAULT: u64 = 30;
/// Most access keys in one config.
pub const ACCESS_KEYS_MAX: usize = 64;

/// One S3 credential. The secret never appears in `Debug` output or logs.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKey {
    /// The access key id clients send (`AWS_ACCESS_KEY_ID`).
    pub access_key_id: String,
    /// The shared secret for Signature V4 (`AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: String,
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

impl AccessKey {
    /// A fresh random credential: a 20-character id and a 40-character secret (160 bits).
    pub fn generate() -> Self {
        let mut id = [0u8; 9];
        let mut secret = [0u8; 20];
        OsRng.fill_bytes(&mut id);
        OsRng.fill_bytes(&mut secret);
        Self {
            access_key_id: format!("RMP{}", hex::encode_upper(id))[..20].to_owned(),
            secret_access_key: hex::encode(secret),
        }
    }
}

/// Gateway settings, parsed strictly (unknown fields are an error).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address to listen on when `--listen` is not given.
    #[serde(default = "listen_default")]
    pub listen: SocketAddr,
    /// Largest body of one `PutObject` or `UploadPart`; larger ones get `EntityTooLarge`.
    #[serde(default = "upload_bytes_max_default")]
    pub upload_bytes_max: u64,
    /// Most connections served at once.
    #[serde(default = "connections_max_default")]
    pub connections_max: usize,
    /// Most object transfers (uploads, downloads, copies, completions) running at once.
    #[serde(default = "transfers_max_default")]
    pub transfers_max: usize,
    /// Longest wait for a complete HTTP/1 request head, from the connection's start or
    /// the previous response's end (so also the idle keep-alive limit), in seconds.
    #[serde(default = "header_timeout_secs_default")]
    pub header_timeout_secs: u64,
    /// Longest time a connection may move no byte in either direction, in seconds.
    #[serde(default = "idle_timeout_secs_default")]
    pub idle_timeout_secs: u64,
    /// Most connections from one client address at once; more get `503 SlowDown`.
    #[serde(default = "connections_per_address_max_default")]
    pub connections_per_address_max: usize,
    /// Slowest a client may send a request body or read a response body of an object
    /// transfer, in bytes per second over `body_rate_window_secs` of waiting for it;
    /// slower transfers are aborted (`400 RequestTimeout` where a response can still be
    /// sent) and free their transfer slot. 0 disables the check.
    #[serde(default = "body_rate_min_bytes_per_sec_default")]
    pub body_rate_min_bytes_per_sec: u64,
    /// The window of `body_rate_min_bytes_per_sec`, in seconds.
    #[serde(default = "body_rate_window_secs_default")]
    pub body_rate_window_secs: u64,
    /// PEM certificate chain for HTTPS. With `tls_key_file`, the gateway serves only
    /// HTTPS (TLS 1.2 and 1.3); without both, plain HTTP. Relative paths are relative to
    /// the directory of `rampart.toml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for HTTPS (PKCS#8, PKCS#1 or SEC1); must not be readable by others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// Credentials accepted (Signature V4). At least one.
    pub access_keys: Vec<AccessKey>,
}

fn listen_default() -> SocketAddr {
    LISTEN_DEFAULT.parse().expect("constant address parses")
}
fn upload_bytes_max_default() -> u64 {
    UPLOAD_BYTES_MAX_DEFAULT
}
fn connections_max_default() -> usize {
    CONNECTIONS_MAX_DEFAULT
}
fn transfers_max_default() -> usize {
    TRANSFERS_MAX_DEFAULT
}
fn header_timeout_secs_default() -> u64 {
    HEADER_TIMEOUT_SECS_DEFAULT
}
fn idle_timeout_secs_default() -> u64 {
    IDLE_TIMEOUT_SECS_DEFAULT
}
fn connections_per_address_max_default() -> usize {
    CONNECTIONS_PER_ADDRESS_MAX_DEFAULT
}
fn body_rate_min_bytes_per_sec_default() -> u64 {
    BODY_RATE_MIN_BYTES_PER_SEC_DEFAULT
}
fn body_rate_window_secs_default() -> u64 {
    BODY_RATE_WINDOW_SECS_DEFAULT
}

impl GatewayConfig {
    /// The connection limits for [`crate::serve`].
    pub fn conn_limits(&self) -> crate::conn::ConnLimits {
        crate::conn::ConnLimits {
            header_timeout: std::time::Duration::from_secs(self.header_timeout_secs),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs),
            per_address_max: self.connections_per_address_max,
        }
    }

    /// The minimum body rate of object transfers ([`crate::rate`]).
    pub fn min_body_rate(&self) -> crate::rate::MinRate {
        crate::rate::MinRate {
            bytes_per_sec: self.body_rate_min_bytes_per_sec,
            window: std::time::Duration::from_secs(self.body_rate_window_secs),
        }
    }

    /// A config with defaults and one fresh access key (what `rampart init` writes).
    pub fn generate() -> Self {
        Self {
            listen: listen_default(),
            upload_bytes_max: UPLOAD_BYTES_MAX_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            transfers_max: TRANSFERS_MAX_DEFAULT,
            header_timeout_secs: HEADER_TIMEOUT_SECS_DEFAULT,
            idle_timeout_secs: IDLE_TIMEOUT_SECS_DEFAULT,
            connections_per_address_max: CONNECTIONS_PER_ADDRESS_MAX_DEFAULT,
            body_rate_min_bytes_per_sec: BODY_RATE_MIN_BYTES_PER_SEC_DEFAULT,
            body_rate_window_secs: BODY_RATE_WINDOW_SECS_DEFAULT,
            tls_cert_file: None,
            tls_key_file: None,
            access_keys: vec![AccessKey::generate()],
        }
    }

    /// Parses the raw `[gateway]` table and checks its values.
    pub fn from_table(table: toml::Table) -> Result<Self, GatewayError> {
        let cfg: Self = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| GatewayError::Config {
                reason: e.message().to_owned(),
            })?;
        let bad = |reason: &str| {
            Err(GatewayError::Config {
                reason: reason.to_owned(),
            })
        };
        if cfg.access_keys.is_empty() {
            return bad("[gateway] needs at least one [[gateway.access_keys]] entry");
        }
        if cfg.access_keys.len() > ACCESS_KEYS_MAX {
            return bad("[gateway] has more than 64 access keys");
        }
        for (i, k) in cfg.access_keys.iter().enumerate() {
            if k.access_key_id.len() < 3 || k.access_key_id.len() > 128 {
                return bad("access_key_id must be 3 to 128 characters");
            }
            if !k.access_key_id.chars().all(|c| c.is_ascii_alphanumeric()) {
                return bad("access_key_id must be ASCII letters and digits");
            }
            if k.secret_access_key.len() < 16 {
                return bad("secret_access_key must be at least 16 characters");
            }
            if cfg.access_keys[..i]
                .iter()
                .any(|o| o.access_key_id == k.access_key_id)
            {
                return bad("duplicate access_key_id");
            }
        }
        if cfg.upload_bytes_max == 0 {
            return bad("upload_bytes_max must be positive");
        }
        if cfg.connections_max == 0 {
            return bad("connections_max must be positive");
        }
        if cfg.transfers_max == 0 {
            return bad("transfers_max must be positive");
        }
        if !(1..=3600).contains(&cfg.header_timeout_secs) {
            return bad("header_timeout_secs must be 1 to 3600");
        }
        if !(1..=86400).contains(&cfg.idle_timeout_secs) {
            return bad("idle_timeout_secs must be 1 to 86400");
        }
        if cfg.connections_per_address_max == 0 {
            return bad("connections_per_address_max must be positive");
        }
        if !(1..=3600).contains(&cfg.body_rate_window_secs) {
            return bad("body_rate_window_secs must be 1 to 3600");
        }
        if cfg.tls_cert_file.is_some() != cfg.tls_key_file.is_some() {
            return bad("set both tls_cert_file and tls_key_file for HTTPS, or neither");
        }
        Ok(cfg)
    }

    /// The `[gateway]` section as TOML text, to append to `rampart.toml`.
    pub fn to_toml_section(&self) -> String {
        #[derive(Serialize)]
        struct Wrapper<'a> {
            gateway: &'a GatewayConfig,
        }
        toml::to_string_pretty(&Wrapper { gateway: self }).expect("gateway config serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_section_round_trips_and_debug_hides_the_secret() {
        let cfg = GatewayConfig::generate();
        let text = cfg.to_toml_section();
        let table: toml::Table = toml::from_str(&text).unwrap();
        let gw = table["gateway"].as_table().unwrap().clone();
        let back = GatewayConfig::from_table(gw).unwrap();
        assert_eq!(
            back.access_keys[0].access_key_id,
            cfg.access_keys[0].access_key_id
        );
        assert_eq!(
            back.access_keys[0].secret_access_key,
            cfg.access_keys[0].secret_access_key
        );
        assert_eq!(back.listen, cfg.listen);
        let dbg = format!("{back:?}");
        assert!(!dbg.contains(&cfg.access_keys[0].secret_access_key));
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn rejects_unknown_fields_and_missing_keys() {
        let t: toml::Table = toml::from_str("access_keys = []").unwrap();
        assert!(GatewayConfig::from_table(t).is_err());
        let t: toml::Table = toml::from_str(
            "typo = 1\n[[access_keys]]\naccess_key_id = \"abc\"\nsecret_access_key = \"0123456789abcdef\"",
        )
        .unwrap();
        assert!(GatewayConfig::from_table(t).is_err());
        let t: toml::Table = toml::from_str(
            "[[access_keys]]\naccess_key_id = \"abc\"\nsecret_access_key = \"short\"",
        )
        .unwrap();
        assert!(GatewayConfig::from_table(t).is_err());
        let t: toml::Table = toml::from_str(
            "tls_cert_file = \"c.pem\"\n[[access_keys]]\naccess_key_id = \"abc\"\nsecret_access_key = \"0123456789abcdef\"",
        )
        .unwrap();
        let err = GatewayConfig::from_table(t).unwrap_err();
        assert!(err.to_string().contains("tls_key_file"), "{err}");
    }
}
