//! Issue 10, finding 5: size limits of checkpoints and state transfer, over the real cores
//! (n = 4) with the test choosing every delivery.

mod scripted;

use rampart_bft::*;
use scripted::*;

/// Finding 5a: a checkpoint whose application snapshot is near `state_bytes_max` (here
/// 4,000 of 4,096 bytes, plus four cached 1,000-byte replies in the sessions) transfers to
/// a replica that missed every instance. Before the fix the download was refused once the
/// assembled blob passed `state_bytes_max + 16`, although the core had produced that
/// checkpoint itself and its decoder accepts it, so the lagging replica never caught up.
#[test]
fn a_checkpoint_near_the_size_limit_transfers() {
    let mut config = Config::new(4);
    config.checkpoint_interval = 2;
    config.state_bytes_max = 4096;
    config.state_chunk_bytes_max = 1024;
    let mut net = Net::with_config(config);
    let others = [0u8, 1, 2];
    let isolated = |m: &InFlight| m.from.0 == 3 || m.to.0 == 3;
    for c in 1..=4u64 {
        net.submit(&others, &request(c, &[c as u8; 1000]));
        net.deliver(|m| !isolated(m));
        net.take(isolated);
    }
    assert_eq!(net.cores[0].last_decided(), SeqNo(4));
    assert_eq!(net.cores[3].last_decided(), SeqNo(0));
    let snapshot = net.cores[0].app().snapshot();
    assert_eq!(snapshot.len(), 4000, "the snapshot is near state_bytes_max");
    let blob = net.storage[0]
        .recover()
        .expect("recover")
        .checkpoints
        .last()
        .map(|c| c.blob.len())
        .expect("checkpoint 4");
    assert!(
        blob > net.config.state_bytes_max + 16,
        "the blob ({blob} bytes) is over the old bound"
    );
    assert!(blob <= message::checkpoint_blob_bytes_max(&net.config));

    // Replica 3 sees instance 5, finds instances 1..4 only in a checkpoint and downloads it.
    // Deliveries are bounded per round: a refused download is retried at once, so without
    // the fix the exchange would never go quiet.
    let bounded = |net: &mut Net| {
        let mut left = 2_000;
        net.deliver(|_| {
            left -= 1;
            left >= 0
        });
    };
    net.submit(&[0, 1, 2, 3], &request(5, b"x"));
    bounded(&mut net);
    for _ in 0..20 {
        if !net.installed[3].is_empty() {
            break;
        }
        net.queue.clear();
        net.advance(net.config.fetch_timeout, &[0, 1, 2, 3]);
        bounded(&mut net);
    }
    assert_eq!(net.installed[3], vec![4], "replica 3 installs checkpoint 4");
    assert!(net.cores[3].last_decided() >= SeqNo(4));
    let (mine, theirs) = (net.cores[3].app().snapshot(), net.cores[0].app().snapshot());
    assert!(
        mine.starts_with(&snapshot) && mine == theirs,
        "replica 3 has the state"
    );
    assert_eq!(net.cores[3].stats().state_transfers, 1);
    net.agreement(&[0, 1, 2, 3]).expect("agreement");
}
