//! Issue 10, findings 9a and 9b: a leader's own PROPOSE and SYNC leave only after its vote
//! is durable, and a leader restarted while its regency's SYNC is out learns that SYNC
//! back from its peers.

mod scripted;

use rampart_bft::message::{ReplicaBody, SignedMessage, StopData};
use rampart_bft::*;
use scripted::*;

/// Poll every output, acknowledging persists; returns the others.
fn settle(r: &mut Core) -> Vec<Output> {
    let mut out = Vec::new();
    while let Some(o) = r.poll_output() {
        match o {
            Output::Persist { token, .. } => r.handle_persisted(token),
            o => out.push(o),
        }
    }
    out
}

/// Poll every output without acknowledging persists: the others and the last token.
fn poll_unacked(r: &mut Core) -> (Vec<Output>, Option<u64>) {
    let mut out = Vec::new();
    let mut last = None;
    while let Some(o) = r.poll_output() {
        match o {
            Output::Persist { token, .. } => last = Some(token),
            o => out.push(o),
        }
    }
    (out, last)
}

fn position(outs: &[Output], k: &str) -> Option<usize> {
    outs.iter().position(|o| match o {
        Output::Broadcast {
            msg: Message::Replica(m),
        } => kind(&m.body) == k,
        _ => false,
    })
}

fn from(r: &mut Core, i: u8, body: ReplicaBody) {
    let m = SignedMessage::new(&auth(i), ReplicaId(i), body);
    r.handle_message(
        Timestamp(1),
        Peer::Replica(ReplicaId(i)),
        Message::Replica(m),
    )
    .expect("valid message");
}

/// Finding 9b: the leader's PROPOSE is held until its own vote for the batch is durable,
/// and then leaves before its WRITE. Before the fix it left at once.
#[test]
fn propose_leaves_after_the_leaders_vote_is_durable() {
    let mut r = core(0);
    r.handle_timeout(Timestamp(0));
    settle(&mut r);
    r.handle_request(Timestamp(1), request(1, b"x"))
        .expect("request");
    let (outs, token) = poll_unacked(&mut r);
    let token = token.expect("the vote is persisted");
    assert_eq!(
        position(&outs, "propose"),
        None,
        "PROPOSE before the vote is durable"
    );
    r.handle_persisted(token);
    let outs = settle(&mut r);
    let p = position(&outs, "propose").expect("PROPOSE after the persist");
    let w = position(&outs, "write").expect("WRITE after the persist");
    assert!(p < w, "PROPOSE before WRITE");
}

/// Finding 9b, for the SYNC that stands in for a PROPOSE: the new leader's SYNC is held
/// until its vote for the SYNC's batch is durable.
#[test]
fn sync_leaves_after_the_new_leaders_vote_is_durable() {
    let mut r = core(1);
    r.handle_timeout(Timestamp(0));
    settle(&mut r);
    r.handle_request(Timestamp(1), request(1, b"x"))
        .expect("request");
    settle(&mut r);
    for i in [0, 2] {
        from(
            &mut r,
            i,
            ReplicaBody::Stop {
                regency: Regency(1),
            },
        );
        settle(&mut r);
    }
    assert_eq!(r.regency(), Regency(1));
    let sd = || {
        ReplicaBody::StopData(StopData {
            regency: Regency(1),
            last_decided: None,
            written: None,
        })
    };
    from(&mut r, 0, sd());
    settle(&mut r);
    from(&mut r, 2, sd());
    let (outs, token) = poll_unacked(&mut r);
    let token = token.expect("the vote is persisted");
    assert_eq!(
        position(&outs, "sync"),
        None,
        "SYNC before the vote is durable"
    );
    r.handle_persisted(token);
    let outs = settle(&mut r);
    let s = position(&outs, "sync").expect("SYNC after the persist");
    let w = position(&outs, "write").expect("WRITE after the persist");
    assert!(s < w, "SYNC before WRITE");
}

/// Finding 9a: replica 0 is silent, replicas 1–3 change to regency 1 (leader 1) and decide
/// instance 1 there. Replica 1 restarts from its storage while the regency is current: it
/// comes back waiting for regency 1's SYNC, which it signed itself, and must accept it from
/// a peer's catch-up answer to propose again. Before the fix it skipped its own SYNC, stayed
/// waiting, and instance 2 was never proposed.
#[test]
fn a_restarted_leader_accepts_its_own_sync_from_a_peer() {
    let mut net = Net::new(4, 100);
    net.muted.push(ReplicaId(0));
    let live = [1u8, 2, 3];
    net.submit(&live, &request(1, b"a"));
    net.deliver(|_| true);
    net.advance(net.config.request_timeout, &live);
    net.forwards.clear();
    net.advance(net.config.request_timeout, &live);
    net.deliver(|_| true);
    for i in live {
        assert_eq!(net.cores[usize::from(i)].regency(), Regency(1));
        assert_eq!(net.cores[usize::from(i)].last_decided(), SeqNo(1));
    }

    net.restart(1);
    assert!(
        net.cores[1].status().syncing,
        "restarts waiting for the SYNC"
    );
    for _ in 0..10 {
        net.deliver(|_| true);
        if !net.cores[1].status().syncing {
            break;
        }
        net.advance(net.config.fetch_timeout, &[1]);
    }
    assert!(!net.cores[1].status().syncing, "learned its own SYNC back");

    net.submit(&live, &request(2, b"b"));
    net.deliver(|_| true);
    for i in live {
        let core = &net.cores[usize::from(i)];
        assert_eq!(
            core.last_decided(),
            SeqNo(2),
            "replica {i} decides instance 2"
        );
        assert_eq!(
            core.regency(),
            Regency(1),
            "replica {i}: no further leader change"
        );
    }
    net.agreement(&live).expect("agreement");
}
