//! Issue 10, finding 6 (last item): a tiny FETCH or CHUNKREQUEST makes a replica build,
//! sign and queue up to MiB of reply. Each peer now has a byte budget for those replies,
//! refilled with the replica's clock. Scripted over the real cores (n = 4): the adversary
//! (Byzantine replica 2) chooses what to send and when.

mod scripted;

use std::time::Duration;

use rampart_bft::message::ReplicaBody;
use rampart_bft::*;
use scripted::*;

const RATE: usize = 16 << 10;

/// Four instances of 1,000-byte ops with replica 3 cut off: checkpoints 2 and 4 exist at
/// 0, 1 and 2, and replica 3 has decided nothing.
fn lagging_replica_3() -> Net {
    let mut config = Config::new(4);
    config.checkpoint_interval = 2;
    config.state_chunk_bytes_max = 1024;
    config.costly_reply_bytes_per_sec = RATE;
    let mut net = Net::with_config(config);
    let isolated = |m: &InFlight| m.from.0 == 3 || m.to.0 == 3;
    for c in 1..=4u64 {
        net.submit(&[0, 1, 2], &request(c, &[c as u8; 1000]));
        net.deliver(|m| !isolated(m));
        net.take(isolated);
    }
    assert_eq!(net.cores[0].last_decided(), SeqNo(4));
    assert_eq!(net.cores[3].last_decided(), SeqNo(0));
    net
}

fn encoded(m: &InFlight) -> usize {
    Message::Replica(m.msg.clone()).encode().len()
}

/// Byzantine replica 2 sends replica 0 a thousand tiny CHUNKREQUESTs (and FETCHes) every
/// 100 ms of virtual time for 10 s, while honest replica 3 catches up by state transfer
/// from the same replica. Replica 2 receives at most the budget (one second's burst plus
/// the rate per second, plus one reply); replica 3's transfer completes anyway. Before the
/// budget replica 0 answered every request: about 1,000 × 1.1 KiB per tick.
#[test]
fn a_peer_spamming_chunk_requests_gets_bounded_reply_bytes_and_honest_transfer_completes() {
    let mut net = lagging_replica_3();
    // Replica 3 sees instance 5 and starts catching up.
    net.submit(&[0, 1, 2, 3], &request(5, b"x"));
    let ticks = 100u32;
    let tick = Duration::from_millis(100);
    let mut spam_bytes = 0usize;
    let mut most_in_a_tick = 0usize;
    for t in 0..ticks {
        for i in 0..1000u32 {
            let body = if i % 10 == 0 {
                ReplicaBody::Fetch { from_cid: SeqNo(1) }
            } else {
                ReplicaBody::ChunkRequest {
                    cid: SeqNo(4),
                    index: i % 8,
                }
            };
            net.inject(2, 0, body);
        }
        // Every message is delivered (the spam included), but what replica 0 sends to the
        // Byzantine replica is counted and discarded.
        let mut left = 20_000;
        net.deliver(|m| {
            left -= 1;
            left >= 0 && !(m.from.0 == 0 && m.to.0 == 2)
        });
        let to_byz =
            net.take(|m| m.from.0 == 0 && m.to.0 == 2 && TRANSFER.contains(&kind(&m.msg.body)));
        let bytes: usize = to_byz.iter().map(encoded).sum();
        most_in_a_tick = most_in_a_tick.max(bytes);
        spam_bytes += bytes;
        net.take(|m| m.from.0 == 0 && m.to.0 == 2);
        if t + 1 < ticks {
            net.advance(tick, &[0, 1, 2, 3]);
        }
    }
    let seconds = (ticks as usize - 1) / 10 + 1;
    // One second's burst, the rate per second, one reply over (reply sizes are estimated
    // with a fixed overhead, above the real one at n = 4).
    let bound = RATE * (seconds + 1) + 4096;
    assert!(
        spam_bytes <= bound,
        "replica 2 got {spam_bytes} bytes in {seconds} s (bound {bound})"
    );
    assert!(
        spam_bytes > 0,
        "the spammer is still served within its budget"
    );
    assert!(net.cores[0].stats().costly_requests_deferred > 0);
    assert_eq!(net.installed[3], vec![4], "replica 3 installs checkpoint 4");
    assert!(net.cores[3].last_decided() >= SeqNo(4));
    net.agreement(&[0, 1, 3]).expect("agreement");
    eprintln!(
        "spam: {spam_bytes} bytes to replica 2 over {seconds} virtual s (most in 100 ms: {most_in_a_tick})"
    );
}

/// Messages of catch-up and state transfer.
const TRANSFER: [&str; 6] = [
    "fetch",
    "decisions",
    "staterequest",
    "statedigests",
    "chunkrequest",
    "chunk",
];

/// A request that finds its sender's budget spent is kept and answered once the budget
/// refills (the replica's timer says when), not dropped: a lone honest requester asking
/// for every chunk at once receives all of them, at the budget's pace.
#[test]
fn a_request_over_budget_is_answered_when_the_budget_refills() {
    let mut net = lagging_replica_3();
    net.queue.clear();
    let mut got = Vec::new();
    for round in 0..40 {
        let missing: Vec<u32> = (0..8).filter(|i| !got.contains(i)).collect();
        if missing.is_empty() {
            break;
        }
        if round == 0 {
            // Every chunk, four times over: about 48 KiB of replies for a 16 KiB budget.
            for _ in 0..4 {
                for &index in &missing {
                    net.inject(
                        3,
                        0,
                        ReplicaBody::ChunkRequest {
                            cid: SeqNo(4),
                            index,
                        },
                    );
                }
            }
        } else {
            // Asked again, one at a time: the kept request is the newest.
            net.inject(
                3,
                0,
                ReplicaBody::ChunkRequest {
                    cid: SeqNo(4),
                    index: missing[0],
                },
            );
        }
        net.deliver(|m| m.to.0 == 0);
        for m in net.take(|m| m.from.0 == 0 && m.to.0 == 3 && is(m, "chunk")) {
            if let ReplicaBody::Chunk { index, .. } = m.msg.body {
                got.push(index);
            }
        }
        let due = net.cores[0].poll_timeout().expect("a timer");
        net.advance(
            Duration::from_nanos(due.0.saturating_sub(net.now.0)).min(Duration::from_millis(250)),
            &[0],
        );
        for m in net.take(|m| m.from.0 == 0 && m.to.0 == 3 && is(m, "chunk")) {
            if let ReplicaBody::Chunk { index, .. } = m.msg.body {
                got.push(index);
            }
        }
        net.take(|_| true);
    }
    got.sort_unstable();
    got.dedup();
    assert_eq!(
        got,
        (0..8).collect::<Vec<u32>>(),
        "every chunk was answered"
    );
    assert!(
        net.cores[0].stats().costly_requests_deferred > 0,
        "some waited for the budget"
    );
}
