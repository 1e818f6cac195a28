//! Issue 10, findings 3, 4 and 8: liveness attacks and failures around state transfer and
//! request forwarding, scripted over the real cores (n = 4) with the adversary choosing
//! every delivery.

mod scripted;

use std::time::Duration;

use rampart_bft::message::ReplicaBody;
use rampart_bft::*;
use scripted::*;

/// Messages of catch-up and state transfer.
const TRANSFER: [&str; 6] = [
    "fetch",
    "decisions",
    "staterequest",
    "statedigests",
    "chunkrequest",
    "chunk",
];

fn in_transfer(net: &Net, i: usize) -> bool {
    net.cores[i]
        .status()
        .state_transfer
        .is_some_and(|s| !s.starts_with("chosen=None"))
}

/// Finding 3: Byzantine replica 3 keeps sending unsolicited DECISIONS that name a
/// checkpoint beyond everyone's log, and vouches for it (with a real checkpoint digest) when
/// asked. No correct replica enters a state transfer on its word alone, the leader keeps
/// proposing, and twelve instances are decided with no leader change. Before the fix the
/// leader stopped proposing at the first such message.
#[test]
fn unsolicited_decisions_do_not_stop_the_leader() {
    let mut net = Net::new(4, 2);
    // Everyone decides instances 1 and 2 (so checkpoint 2 exists), then replica 3 turns.
    for c in 1..=2u64 {
        net.submit(&[0, 1, 2, 3], &request(c, b"x"));
        net.deliver(|_| true);
    }
    let (_, real_digest) = net.checkpoints[3][0];
    net.muted.push(ReplicaId(3));
    let correct = [0u8, 1, 2];
    for c in 3..=14u64 {
        let claimed = SeqNo(c + 8);
        for &to in &correct {
            net.inject(
                3,
                to,
                ReplicaBody::Decisions {
                    decisions: Vec::new(),
                    checkpoint: Some(claimed),
                    regency_proof: None,
                },
            );
        }
        net.deliver(|_| true);
        for &to in &correct {
            net.inject(
                3,
                to,
                ReplicaBody::StateDigests {
                    checkpoints: vec![(claimed, real_digest, 1)],
                },
            );
        }
        net.submit(&correct, &request(c, b"y"));
        net.deliver(|_| true);
        for &i in &correct {
            assert!(
                !in_transfer(&net, usize::from(i)),
                "replica {i} in transfer"
            );
            assert_eq!(
                net.cores[usize::from(i)].last_decided(),
                SeqNo(c),
                "replica {i} decides instance {c}"
            );
        }
        // Time passes (probe timers fire), but less than a request timeout per instance.
        net.advance(Duration::from_millis(600), &correct);
        net.deliver(|_| true);
    }
    for &i in &correct {
        let core = &net.cores[usize::from(i)];
        assert_eq!(core.regency(), Regency(0), "replica {i}: no leader change");
        assert_eq!(core.stats().stops_sent, 0, "replica {i} sent no STOP");
        assert_eq!(core.stats().state_transfers, 0, "replica {i}");
    }
    net.agreement(&correct).expect("agreement");
}

/// Finding 4: replica 3 chose checkpoint 4 and downloaded its first chunk; meanwhile the
/// others move on to instance 8 and garbage-collect checkpoint 4 (two are kept: 6 and 8).
/// After its retries fail it asks for digests again and finishes at checkpoint 8. Before
/// the fix it asked for checkpoint 4 forever.
#[test]
fn state_transfer_re_picks_a_checkpoint_the_providers_dropped() {
    let mut config = Config::new(4);
    config.checkpoint_interval = 2;
    config.state_chunk_bytes_max = 8;
    let mut net = Net::with_config(config);
    let others = [0u8, 1, 2];
    let isolated = |m: &InFlight| m.from.0 == 3 || m.to.0 == 3;
    for c in 1..=4u64 {
        net.submit(&others, &request(c, b"x"));
        net.deliver(|m| !isolated(m));
        net.take(isolated);
    }
    assert_eq!(net.cores[0].last_decided(), SeqNo(4));
    assert_eq!(net.cores[3].last_decided(), SeqNo(0));

    // Replica 3 sees traffic for instance 5, catches up by state transfer, chooses
    // checkpoint 4 and receives chunk 0 of it; the request for chunk 1 is lost.
    net.submit(&[0, 1, 2, 3], &request(5, b"x"));
    net.deliver(|m| !isolated(m) || (m.to.0 == 3 && is(m, "propose")));
    net.take(|m| isolated(m) && !TRANSFER.contains(&kind(&m.msg.body)));
    net.deliver(|m| TRANSFER.contains(&kind(&m.msg.body)) && !is(m, "chunkrequest"));
    assert!(net.cores[3].status().state_transfer.is_some());
    let first = net.take(|m| is(m, "chunkrequest"));
    assert_eq!(first.len(), 1);
    let ReplicaBody::ChunkRequest { cid, index } = first[0].msg.body else {
        unreachable!()
    };
    assert_eq!((cid, index), (SeqNo(4), 0), "replica 3 chose checkpoint 4");
    net.queue.extend(first);
    let first_chunk = |m: &InFlight| {
        matches!(m.msg.body, ReplicaBody::ChunkRequest { index: 0, .. }) || is(m, "chunk")
    };
    net.deliver(first_chunk);
    net.take(|m| is(m, "chunkrequest"));
    assert!(
        net.cores[3]
            .status()
            .state_transfer
            .is_some_and(|s| s.contains("next=1"))
    );

    // The others decide 6..8: checkpoint 4 is gone from every one of them.
    net.take(isolated);
    assert_eq!(net.cores[0].last_decided(), SeqNo(5));
    for c in 6..=8u64 {
        net.submit(&others, &request(c, b"x"));
        net.deliver(|m| !isolated(m));
    }
    net.take(isolated);
    assert_eq!(net.cores[0].last_decided(), SeqNo(8));
    assert!(net.checkpoints[0].iter().any(|(c, _)| *c == 8));

    for _ in 0..20 {
        if !net.installed[3].is_empty() {
            break;
        }
        net.advance(net.config.fetch_timeout, &[3]);
        net.deliver(|m| TRANSFER.contains(&kind(&m.msg.body)));
    }
    assert_eq!(net.installed[3], vec![8], "replica 3 installs checkpoint 8");
    assert_eq!(net.cores[3].last_decided(), SeqNo(8));
    net.agreement(&[0, 1, 2, 3]).expect("agreement");
}

/// Finding 8: a client that reaches only follower 1. On the request timer's first expiry
/// the follower forwards the request to the leader, which orders it: decided everywhere,
/// no STOP, no leader change. Before the fix the follower only sent a STOP (alone, so the
/// request was never ordered).
#[test]
fn a_request_sent_to_one_follower_is_forwarded_to_the_leader() {
    let mut net = Net::new(4, 100);
    net.submit(&[1], &request(1, b"only to 1"));
    net.deliver(|_| true);
    assert_eq!(net.cores[0].last_decided(), SeqNo(0));
    net.advance(net.config.request_timeout, &[0, 1, 2, 3]);
    assert_eq!(net.forwards.len(), 1, "follower 1 forwards once");
    net.deliver_forwards();
    net.deliver(|_| true);
    for i in 0..4 {
        let core = &net.cores[i];
        assert_eq!(core.last_decided(), SeqNo(1), "replica {i} decides");
        assert_eq!(core.regency(), Regency(0), "replica {i}: no leader change");
        assert_eq!(core.stats().stops_sent, 0, "replica {i} sent no STOP");
    }
    assert_eq!(net.cores[1].stats().requests_forwarded, 1);
}

/// Finding 8, the other half: if the leader ignores the forwarded request, the follower
/// suspects it on the timer's second expiry (forwarding never costs the leader change).
#[test]
fn a_follower_suspects_a_leader_that_ignores_its_forward() {
    let mut net = Net::new(4, 100);
    net.submit(&[1], &request(1, b"only to 1"));
    net.advance(net.config.request_timeout, &[1]);
    assert_eq!(net.forwards.len(), 1);
    net.forwards.clear();
    assert_eq!(
        net.cores[1].stats().stops_sent,
        0,
        "first expiry: forward only"
    );
    net.advance(net.config.request_timeout, &[1]);
    assert_eq!(net.cores[1].stats().stops_sent, 1, "second expiry: STOP");
    assert!(net.forwards.is_empty(), "a request is forwarded once");
}

/// Finding 8, the bound: one timer expiry forwards at most `batch_bytes_max` bytes of
/// requests (here room for one of three), and a read-only request carried by a replica is
/// refused with a clear fault (each replica answers those to the client itself).
#[test]
fn forwarding_is_bounded_and_refuses_read_only_requests() {
    let mut config = Config::new(4);
    config.batch_bytes_max = 300;
    config.request_op_bytes_max = 200;
    let mut net = Net::with_config(config);
    for c in 1..=3u64 {
        net.submit(&[1], &request(c, &[7; 100]));
    }
    net.advance(net.config.request_timeout, &[1]);
    assert_eq!(net.forwards.len(), 1, "one request fits the byte budget");
    assert_eq!(net.cores[1].stats().requests_forwarded, 1);
    assert_eq!(net.cores[1].stats().stops_sent, 0);

    let a = SimulatedAuthenticator::new(Principal::Client(ClientId(9)), SEED);
    let ro = Request::new_signed(&a, ClientId(9), RequestSeq(1), true, b"q".to_vec());
    let e = net.cores[0].handle_message(net.now, Peer::Replica(ReplicaId(1)), Message::Request(ro));
    assert!(
        matches!(
            e,
            Err(Error::PeerMisbehaved {
                fault: PeerFault::SenderMismatch,
                ..
            })
        ),
        "{e:?}"
    );
}
