//! Issue 10, findings 9c and 9d: network input can neither panic the core through its
//! output queue nor push the execution timestamp far beyond a follower's clock.

mod scripted;

use std::time::Duration;

use rampart_bft::message::{Batch, ReplicaBody, SignedMessage};
use rampart_bft::*;
use scripted::*;

/// Poll every output, acknowledging persists unless `ack` is false; returns the last
/// persist token seen.
fn poll(r: &mut Core, ack: bool) -> (usize, Option<u64>) {
    let (mut n, mut last) = (0, None);
    while let Some(o) = r.poll_output() {
        n += 1;
        if let Output::Persist { token, .. } = o {
            last = Some(token);
            if ack {
                r.handle_persisted(token);
            }
        }
    }
    (n, last)
}

fn send(r: &mut Core, now: Timestamp, i: u8, body: ReplicaBody) -> Result<(), Error> {
    let m = SignedMessage::new(&auth(i), ReplicaId(i), body);
    r.handle_message(now, Peer::Replica(ReplicaId(i)), Message::Replica(m))
}

/// Finding 9c: follower 1 decides instance 1 while its disk is stalled (the decision's
/// persist is not acknowledged), then the client retransmits its request more than
/// `OUTPUTS_MAX` times; every cached reply is held for the persist. The driver drains
/// `poll_output` after every input, as required. When the disk catches up, the held replies
/// are released: bounded, counted drops, no panic. Before the fix the release tripped the
/// output-queue assertion.
#[test]
fn a_stalled_disk_and_a_request_flood_cannot_panic_the_core() {
    let mut r = core(1);
    r.handle_timeout(Timestamp(0));
    poll(&mut r, true);
    let now = Timestamp(1);
    let req = request(1, b"x");
    let batch = Batch {
        timestamp: now,
        requests: vec![req.clone()],
    };
    let digest = batch.digest();
    send(
        &mut r,
        now,
        0,
        ReplicaBody::Propose {
            regency: Regency(0),
            cid: SeqNo(1),
            batch,
        },
    )
    .expect("propose");
    poll(&mut r, true);
    for i in [0, 2] {
        let w = ReplicaBody::Write {
            regency: Regency(0),
            cid: SeqNo(1),
            digest,
        };
        send(&mut r, now, i, w).expect("write");
        poll(&mut r, true);
    }
    for i in [0, 2] {
        let a = ReplicaBody::Accept {
            regency: Regency(0),
            cid: SeqNo(1),
            digest,
        };
        send(&mut r, now, i, a).expect("accept");
    }
    assert_eq!(r.last_decided(), SeqNo(1));
    let (_, token) = poll(&mut r, false);
    let token = token.expect("the decision is persisted");
    for _ in 0..OUTPUTS_MAX + 100 {
        r.handle_request(now, req.clone()).expect("retransmission");
        poll(&mut r, false);
    }
    r.handle_persisted(token);
    let (released, _) = poll(&mut r, true);
    assert!(released <= OUTPUTS_MAX, "{released} outputs released");
    assert!(r.stats().outputs_dropped >= 100, "{:?}", r.stats());
}

/// Finding 9d: a follower refuses a proposal whose timestamp is more than
/// `timestamp_ahead_max` ahead of its own clock, and accepts one within it. Before the fix
/// only monotonicity was checked.
#[test]
fn a_far_future_batch_timestamp_is_refused() {
    let mut r = core(1);
    r.handle_timeout(Timestamp(0));
    poll(&mut r, true);
    let now = Timestamp(0).saturating_add(Duration::from_secs(1_000));
    let ahead = r.config().timestamp_ahead_max;
    let propose = |t: Timestamp| ReplicaBody::Propose {
        regency: Regency(0),
        cid: SeqNo(1),
        batch: Batch {
            timestamp: t,
            requests: vec![request(1, b"x")],
        },
    };
    let far = now.saturating_add(ahead + Duration::from_secs(1));
    let e = send(&mut r, now, 0, propose(far));
    assert!(
        matches!(
            e,
            Err(Error::PeerMisbehaved {
                fault: PeerFault::InvalidBatch,
                ..
            })
        ),
        "{e:?}"
    );
    assert!(!r.status().has_proposal);
    send(&mut r, now, 0, propose(now.saturating_add(ahead))).expect("within the bound");
    assert!(r.status().has_proposal);
}
