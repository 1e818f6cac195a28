//! Issue 10, finding 1: agreement after a checkpoint is installed. Two scripted scenarios
//! over the real cores (n = 4, checkpoint period 2) in which the adversary chooses every
//! delivery. Before the fix both ended with two correct replicas deciding different
//! batches for instance 3.

mod scripted;

use std::time::Duration;

use rampart_bft::message::{ReplicaBody, StopData, Sync};
use rampart_bft::*;
use scripted::*;

/// Instances 1 (everyone) and 2 (PROPOSE and WRITEs to all, ACCEPTs only to `deciders`).
fn first_two_instances(net: &mut Net, deciders: &[u8]) {
    net.submit(&[0, 1, 2, 3], &request(1, b"a"));
    net.deliver(|_| true);
    net.submit(&[0, 1, 2, 3], &request(2, b"b"));
    let d = deciders.to_vec();
    net.deliver(|m| !is(m, "accept") || d.contains(&m.to.0));
    net.take(|m| is(m, "accept"));
    for i in deciders {
        assert_eq!(net.cores[usize::from(*i)].last_decided(), SeqNo(2));
    }
}

/// Byzantine `byz` makes `victims` install checkpoint 2: it prompts a fetch from itself
/// (a WRITE for a far instance) and answers it with a DECISIONS naming checkpoint 2; the
/// state transfer itself runs among everyone.
fn transfer_checkpoint_2(net: &mut Net, byz: u8, victims: &[u8]) {
    for &v in victims {
        net.inject(
            byz,
            v,
            ReplicaBody::Write {
                regency: Regency(0),
                cid: SeqNo(9),
                digest: Digest([9; 32]),
            },
        );
        net.deliver(|m| m.from.0 == byz && m.to.0 == v && is(m, "write"));
        // The victim's FETCH to byz is answered by the adversary instead of byz's core.
        net.take(|m| m.from.0 == v && m.to.0 == byz && is(m, "fetch"));
        net.inject(
            byz,
            v,
            ReplicaBody::Decisions {
                decisions: Vec::new(),
                checkpoint: Some(SeqNo(2)),
                regency_proof: None,
            },
        );
        net.deliver(|m| m.from.0 == byz && m.to.0 == v && is(m, "decisions"));
    }
    let st = [
        "staterequest",
        "statedigests",
        "chunkrequest",
        "chunk",
        "fetch",
        "decisions",
    ];
    net.deliver(|m| st.contains(&kind(&m.msg.body)));
    for &v in victims {
        assert_eq!(
            net.installed[usize::from(v)],
            vec![2],
            "replica {v} installs checkpoint 2"
        );
    }
}

/// Instance 3 = C: PROPOSE and WRITEs to all, ACCEPTs only to `deciders`.
fn third_instance_decided_by(net: &mut Net, deciders: &[u8]) {
    net.submit(&[0, 1, 2, 3], &request(3, b"C"));
    let d = deciders.to_vec();
    net.deliver(|m| !is(m, "accept") || d.contains(&m.to.0));
    net.take(|m| is(m, "accept"));
    for i in deciders {
        assert_eq!(net.cores[usize::from(*i)].last_decided(), SeqNo(3));
    }
}

/// Scenario A: replica 1 is Byzantine and the leader of regency 1.
#[test]
fn scenario_a_byzantine_leader_cannot_reopen_an_instance_after_a_checkpoint() {
    let mut net = Net::new(4, 2);
    // Replica 2 (and the adversary's replica 1) decide instance 2 and checkpoint.
    first_two_instances(&mut net, &[1, 2]);
    transfer_checkpoint_2(&mut net, 1, &[0, 3]);
    // Instance 3 = C, accepted by 0, 2 and 3; only 2 (and 1) decide.
    third_instance_decided_by(&mut net, &[1, 2]);
    assert_eq!(net.cores[0].last_decided(), SeqNo(2));
    assert_eq!(net.cores[3].last_decided(), SeqNo(2));

    // From here on the adversary speaks for replica 1.
    net.muted.push(ReplicaId(1));
    net.take(|m| m.from.0 == 1 || m.to.0 == 1);
    let d = request(4, b"D");
    net.submit(&[0, 2, 3], &d);
    // First expiry: followers forward to the leader; second: STOP (finding 8).
    net.advance(Duration::from_secs(3), &[0, 2, 3]);
    net.forwards.clear();
    net.advance(Duration::from_secs(3), &[0, 2, 3]);
    net.deliver(|m| is(m, "stop"));
    for i in [0usize, 2, 3] {
        assert_eq!(net.cores[i].regency(), Regency(1));
    }
    // A SYNC from the STOPDATAs of 0 and 3 and a forged one of 1 claiming nothing.
    let mut proofs: Vec<_> = net
        .take(|m| m.to.0 == 1 && is(m, "stopdata") && m.from.0 != 2)
        .into_iter()
        .map(|m| m.msg)
        .collect();
    // Replicas 0 and 3 still prove instance 2, which they only have from the checkpoint.
    for p in &proofs {
        let ReplicaBody::StopData(sd) = &p.body else {
            panic!("not a STOPDATA")
        };
        assert_eq!(sd.last_cid(), SeqNo(2), "STOPDATA of {:?}", p.from);
    }
    proofs.push(rampart_bft::message::SignedMessage::new(
        &auth(1),
        ReplicaId(1),
        ReplicaBody::StopData(StopData {
            regency: Regency(1),
            last_decided: None,
            written: None,
        }),
    ));
    assert_eq!(proofs.len(), 3);
    let batch_d = rampart_bft::message::Batch {
        timestamp: Timestamp(0),
        requests: vec![d.clone()],
    };
    let sync = Sync {
        regency: Regency(1),
        cid: SeqNo(1),
        batch: batch_d.clone(),
        proofs,
    };
    for to in [0u8, 2, 3] {
        net.inject(1, to, ReplicaBody::Sync(sync.clone()));
    }
    net.deliver(|m| is(m, "sync"));
    // Then D for instance 3 in regency 1, and the adversary's votes for it.
    for to in [0u8, 2, 3] {
        net.inject(
            1,
            to,
            ReplicaBody::Propose {
                regency: Regency(1),
                cid: SeqNo(3),
                batch: batch_d.clone(),
            },
        );
    }
    for _ in 0..4 {
        net.deliver(|m| m.from.0 == 1 || !is(m, "stopdata"));
        net.echo_votes(1, Regency(1));
    }
    net.deliver(|m| m.from.0 == 1 || !is(m, "stopdata"));
    assert_eq!(net.cores[2].last_decided(), SeqNo(3));
    net.agreement(&[0, 2, 3]).expect("agreement");
}

/// Scenario B: the new leader (replica 1) is correct; replica 3 is Byzantine.
#[test]
fn scenario_b_correct_leader_keeps_the_decided_value_after_a_checkpoint() {
    let mut net = Net::new(4, 2);
    first_two_instances(&mut net, &[2, 3]);
    transfer_checkpoint_2(&mut net, 3, &[0, 1]);
    third_instance_decided_by(&mut net, &[2, 3]);
    assert_eq!(net.cores[0].last_decided(), SeqNo(2));
    assert_eq!(net.cores[1].last_decided(), SeqNo(2));

    net.muted.push(ReplicaId(3));
    net.take(|m| m.from.0 == 3 || m.to.0 == 3);
    net.submit(&[0, 1, 2], &request(4, b"D"));
    // First expiry: followers forward to the leader; second: STOP (finding 8).
    net.advance(Duration::from_secs(3), &[0, 1, 2]);
    net.forwards.clear();
    net.advance(Duration::from_secs(3), &[0, 1, 2]);
    net.deliver(|m| is(m, "stop"));
    for i in [0usize, 1, 2] {
        assert_eq!(net.cores[i].regency(), Regency(1));
    }
    // Replica 3 sends an empty STOPDATA; replica 2's is slow (held).
    net.inject(
        3,
        1,
        ReplicaBody::StopData(StopData {
            regency: Regency(1),
            last_decided: None,
            written: None,
        }),
    );
    let slow = |m: &InFlight| m.from.0 == 2 && is(m, "stopdata");
    for _ in 0..4 {
        net.deliver(|m| !slow(m));
        net.echo_votes(3, Regency(1));
    }
    net.deliver(|m| !slow(m));
    assert!(net.cores[2].last_decided() >= SeqNo(3));
    assert!(
        net.cores[0].last_decided() >= SeqNo(3) || net.cores[1].last_decided() >= SeqNo(3),
        "regency 1 decides instance 3"
    );
    net.agreement(&[0, 1, 2]).expect("agreement");
}
