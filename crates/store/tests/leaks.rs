//! What a cloud can learn about the plaintext from the bytes it stores: nothing it could
//! test a guess against. Every common unkeyed digest of each plaintext, and of each of its
//! 4 MiB segments, is searched for in every byte every cloud holds (metadata, manifests,
//! blobs), in the confidential (DepSky-CA, four clouds) and sealed (one cloud) modes.
//! DepSky-A stores plaintext replicas on purpose and is not tested here.

mod common;

use std::sync::Arc;

use common::{data, tuning};
use futures::TryStreamExt;
use md5::Digest as _;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use rampart_store::cloud::{CasMode, Cloud};
use rampart_store::config::Secrets;
use rampart_store::{CloudOfClouds, Protocol};

/// The segment size the issue names (and the store's default).
const SEG_4M: usize = 4 * 1024 * 1024;

/// Four-byte checksums would match random ciphertext by chance (about one in 2³² per
/// offset), so they are searched for only in stored objects up to this size: metadata,
/// manifests, and the blobs of small objects. Digests of 16 bytes or more are searched for
/// in every byte.
const SHORT_SEARCH_MAX: usize = 64 * 1024;

fn store(n: usize, protocol: Protocol) -> (CloudOfClouds, Vec<Arc<InMemory>>) {
    let mems: Vec<_> = (0..n).map(|_| Arc::new(InMemory::new())).collect();
    let clouds = mems
        .iter()
        .enumerate()
        .map(|(i, m)| Cloud::new(format!("mem-{i}"), i, m.clone(), CasMode::Native))
        .collect();
    let s = CloudOfClouds::from_parts(
        [9; 16],
        protocol,
        SEG_4M as u32,
        Secrets::generate(),
        vec![],
        clouds,
        tuning(),
    )
    .unwrap();
    (s, mems)
}

/// Long (≥ 16 bytes) and short (4 bytes) unkeyed digests of `b`, each named.
fn digests(
    b: &[u8],
    what: &str,
    long: &mut Vec<(String, Vec<u8>)>,
    short: &mut Vec<(String, Vec<u8>)>,
) {
    let md5: [u8; 16] = md5::Md5::digest(b).into();
    long.push((
        format!("BLAKE3({what})"),
        blake3::hash(b).as_bytes().to_vec(),
    ));
    long.push((format!("SHA-256({what})"), sha2::Sha256::digest(b).to_vec()));
    long.push((
        format!("SHA-1({what})"),
        <sha1::Sha1 as sha1::Digest>::digest(b).to_vec(),
    ));
    long.push((format!("MD5({what})"), md5.to_vec()));
    // Hex forms, as an ETag or a checksum header would carry them.
    long.push((format!("MD5-hex({what})"), hex::encode(md5).into_bytes()));
    long.push((
        format!("BLAKE3-hex({what})"),
        blake3::hash(b).to_hex().as_bytes().to_vec(),
    ));
    if b.is_empty() {
        // Both CRCs of the empty input are 0, which every encoding holds; the size
        // already says the object is empty.
        return;
    }
    let crc = crc32fast::hash(b);
    let crcc = crc32c::crc32c(b);
    for (name, v) in [("CRC32", crc), ("CRC32C", crcc)] {
        short.push((format!("{name}-be({what})"), v.to_be_bytes().to_vec()));
        short.push((format!("{name}-le({what})"), v.to_le_bytes().to_vec()));
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every object every cloud holds, with its name.
async fn stored(mems: &[Arc<InMemory>]) -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    for (i, m) in mems.iter().enumerate() {
        let objects: Vec<_> = m.list(None).try_collect().await.unwrap();
        for o in objects {
            let b = m.get(&o.location).await.unwrap().bytes().await.unwrap();
            all.push((format!("cloud {i}: {}", o.location), b.to_vec()));
        }
    }
    all
}

fn search(mode: Protocol, n: usize) {
    common::rt().block_on(async {
        let (s, mems) = store(n, mode);
        let sizes = [0usize, 1, 100, 5000, 2 * SEG_4M + 7];
        let mut long = Vec::new();
        let mut short = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            let plain = data(len, 40 + i as u64);
            digests(&plain, &format!("object {i}"), &mut long, &mut short);
            for (j, seg) in plain.chunks(SEG_4M).enumerate() {
                digests(
                    seg,
                    &format!("object {i} segment {j}"),
                    &mut long,
                    &mut short,
                );
            }
            // As the gateway does: the MD5 (the S3 ETag) goes into the attributes.
            let md5: [u8; 16] = md5::Md5::digest(&plain).into();
            let mut attrs = md5.to_vec();
            attrs.extend_from_slice(hex::encode(md5).as_bytes());
            let r = s
                .put(&format!("dir/obj-{i}"), &plain[..], attrs.clone(), None)
                .await
                .unwrap();
            r.background.wait(std::time::Duration::from_secs(30)).await;
            // Two keys with equal content: nothing should link them either (checked by
            // the same search, since equal content gives equal unkeyed digests).
            if i == 2 {
                s.put("dir/copy", &plain[..], attrs, None)
                    .await
                    .unwrap()
                    .background
                    .wait(std::time::Duration::from_secs(30))
                    .await;
                // Nor does the keyed digest: it covers the version's random blob id.
                let a = s.head("dir/obj-2").await.unwrap().content_digest;
                let b = s.head("dir/copy").await.unwrap().content_digest;
                assert_ne!(a, b, "equal content is linkable through the digest");
            }
            // The attributes come back to the owner, so they were stored (sealed).
            let info = s.head(&format!("dir/obj-{i}")).await.unwrap();
            assert_eq!(&info.attrs[..16], &md5[..]);
        }
        let objects = stored(&mems).await;
        assert!(
            objects.len() >= 2 * sizes.len(),
            "{} objects",
            objects.len()
        );
        for (name, bytes) in &objects {
            for (what, d) in &long {
                assert!(!contains(bytes, d), "{mode}: {name} holds {what}");
            }
            if bytes.len() <= SHORT_SEARCH_MAX {
                for (what, d) in &short {
                    assert!(!contains(bytes, d), "{mode}: {name} holds {what}");
                }
            }
        }
    });
}

#[test]
fn no_cloud_holds_an_unkeyed_digest_of_the_plaintext_depsky_ca() {
    search(Protocol::Confidential, 4);
}

#[test]
fn no_cloud_holds_an_unkeyed_digest_of_the_plaintext_sealed() {
    search(Protocol::Sealed, 1);
}
