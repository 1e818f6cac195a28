//! Raw throughput of the building blocks the store pipeline chains together.
// criterion_group! generates undocumented functions.
#![allow(missing_docs)]
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rampart_crypto::{
    aead::SegmentKey,
    erasure::{ErasureCode, ReedSolomon},
    hash::Digest,
};

fn bench(c: &mut Criterion) {
    let seg = vec![0xa5u8; 4 << 20];
    let mut g = c.benchmark_group("building-blocks-4MiB");
    g.throughput(Throughput::Bytes(seg.len() as u64));
    let key = SegmentKey::generate();
    g.bench_function("aes-256-gcm seal", |b| {
        let mut buf = Vec::with_capacity(seg.len() + 16);
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(&seg);
            key.seal_in_place(1, b"aad", &mut buf);
        })
    });
    g.bench_function("blake3", |b| b.iter(|| Digest::of(&seg)));
    let code = ReedSolomon::new(2, 4).unwrap();
    let half = seg.len() / 2;
    let mut p1 = vec![0u8; half];
    let mut p2 = vec![0u8; half];
    g.bench_function("reed-solomon 2+2 encode", |b| {
        b.iter(|| {
            let data = [&seg[..half], &seg[half..]];
            code.encode(&data, &mut [&mut p1[..], &mut p2[..]]).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
