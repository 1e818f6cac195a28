//! TLS 1.3 with pinned raw public keys (RFC 7250), both directions authenticated.
//!
//! Every node (replica or client) has one Ed25519 key, listed in the cluster file. The
//! TLS handshake proves possession of it: the server presents its raw public key and the
//! client checks it is exactly the expected replica's; the client presents its raw public
//! key and the server maps it to a replica or client identity from the cluster file, or
//! refuses the handshake. No certificate authority, no names, no expiry: the cluster file
//! is the trust anchor. The same key signs protocol messages; the two uses cannot be
//! confused because TLS 1.3 signs `0x20 × 64 || context || …` and the core signs payloads
//! starting with `rampart-bft/v1/` (ADR 0301).

use std::collections::BTreeMap;
use std::sync::Arc;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rampart_bft::{ClientId, Peer, ReplicaId};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature_with_raw_key,
};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer,
    UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use zeroize::Zeroizing;

use crate::ClusterError;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410); the 32 seed bytes follow.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The SubjectPublicKeyInfo DER of an Ed25519 public key.
#[must_use]
pub fn spki(key: &VerifyingKey) -> Vec<u8> {
    let mut v = ED25519_SPKI_PREFIX.to_vec();
    v.extend_from_slice(key.as_bytes());
    v
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified_key(key: &SigningKey) -> Result<Arc<CertifiedKey>, ClusterError> {
    let mut der = Zeroizing::new(ED25519_PKCS8_PREFIX.to_vec());
    der.extend_from_slice(&key.to_bytes());
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec()));
    let signer = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| ClusterError::Tls(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(spki(&key.verifying_key()))],
        signer,
    )))
}

/// Who may connect to a replica: every replica and client key of the cluster file.
#[derive(Debug, Clone)]
pub struct Directory {
    by_spki: BTreeMap<Vec<u8>, Peer>,
}

impl Directory {
    /// From the cluster's public keys.
    #[must_use]
    pub fn new(replicas: &[VerifyingKey], clients: &BTreeMap<ClientId, VerifyingKey>) -> Directory {
        let mut by_spki = BTreeMap::new();
        for (i, k) in replicas.iter().enumerate() {
            let id = u8::try_from(i).unwrap_or(u8::MAX);
            by_spki.insert(spki(k), Peer::Replica(ReplicaId(id)));
        }
        for (id, k) in clients {
            by_spki.insert(spki(k), Peer::Client(*id));
        }
        Directory { by_spki }
    }

    /// The identity behind an authenticated TLS peer key.
    #[must_use]
    pub fn lookup(&self, spki: &[u8]) -> Option<Peer> {
        self.by_spki.get(spki).copied()
    }
}

/// TLS server configuration of a replica: presents `key`, requires a client key from `dir`.
pub fn server_config(
    key: &SigningKey,
    dir: Directory,
) -> Result<Arc<rustls::ServerConfig>, ClusterError> {
    let p = provider();
    let verifier = Arc::new(PinnedClients {
        dir,
        algs: p.signature_verification_algorithms,
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClusterError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(
            rustls::server::AlwaysResolvesServerRawPublicKeys::new(certified_key(key)?),
        ));
    // No resumption: connections are long-lived and the client side never reads tickets.
    cfg.send_tls13_tickets = 0;
    // Before the handshake has identified the peer, only the handshake runs: no 0-RTT
    // data (this is rustls's default; stated because the transport relies on it).
    cfg.max_early_data_size = 0;
    Ok(Arc::new(cfg))
}

/// TLS client configuration: presents `key`, accepts only the server key `expected`.
pub fn client_config(
    key: &SigningKey,
    expected: &VerifyingKey,
) -> Result<Arc<rustls::ClientConfig>, ClusterError> {
    let p = provider();
    let verifier = Arc::new(PinnedServer {
        spki: spki(expected),
        algs: p.signature_verification_algorithms,
    });
    let cfg = rustls::ClientConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClusterError::Tls(e.to_string()))?
        .dangerous() // Custom verifier: pinning replaces the web PKI; see the module docs.
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(
            rustls::client::AlwaysResolvesClientRawPublicKeys::new(certified_key(key)?),
        ));
    Ok(Arc::new(cfg))
}

/// The server name sent in the handshake (ignored by the pinned verifier).
#[must_use]
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from("rampart-replica")
        .unwrap_or_else(|_| ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
}

#[derive(Debug)]
struct PinnedServer {
    spki: Vec<u8>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use subtle::ConstantTimeEq as _;
        if intermediates.is_empty() && bool::from(end_entity.as_ref().ct_eq(&self.spki)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_raw_key_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// Both peers speak TLS 1.3 only (the configs allow nothing else).
fn no_tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls12NotOffered,
    ))
}

/// The handshake signature, checked against the raw public key the peer presented (which
/// the verifier has already matched against the cluster file).
fn verify_raw_key_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls13_signature_with_raw_key(
        message,
        &SubjectPublicKeyInfoDer::from(cert.as_ref()),
        dss,
        algs,
    )
}

#[derive(Debug)]
struct PinnedClients {
    dir: Directory,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PinnedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if intermediates.is_empty() && self.dir.lookup(end_entity.as_ref()).is_some() {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_raw_key_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// The authenticated identity of the peer of an accepted server connection.
#[must_use]
pub fn peer_of(conn: &rustls::ServerConnection, dir: &Directory) -> Option<Peer> {
    let certs = conn.peer_certificates()?;
    dir.lookup(certs.first()?.as_ref())
}
