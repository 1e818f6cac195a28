//! Unit tests of the replica core over scripted inputs.

use proptest::prelude::*;

use super::*;
use crate::app::BatchContext;
use crate::app::RestoreError;
use crate::auth::{Principal, SimulatedAuthenticator};
use crate::message::{StopData, Sync, Vote};
use crate::types::DangerTestMutation;

#[derive(Default)]
struct Echo(Vec<Vec<u8>>);

impl Application for Echo {
    fn execute_batch(&mut self, _: &BatchContext, ops: &[&[u8]]) -> Vec<Vec<u8>> {
        ops.iter()
            .map(|op| {
                self.0.push(op.to_vec());
                op.to_vec()
            })
            .collect()
    }
    fn query(&self, _: &[u8]) -> Option<Vec<u8>> {
        Some(vec![self.0.len() as u8])
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.concat()
    }
    fn restore(&mut self, _: &[u8]) -> Result<(), RestoreError> {
        Err(RestoreError {
            reason: "not used in these tests",
        })
    }
    fn state_digest(&self) -> Digest {
        Digest::of("echo", &[&self.0.concat()])
    }
}

const SEED: u64 = 9;
type R = Replica<Echo, SimulatedAuthenticator>;

fn auth(i: u8) -> SimulatedAuthenticator {
    SimulatedAuthenticator::new(Principal::Replica(ReplicaId(i)), SEED)
}

fn replica(i: u8, config: Config) -> R {
    Replica::new(
        config,
        ReplicaId(i),
        auth(i),
        Echo::default(),
        RecoveredState::default(),
        1,
        Timestamp(0),
    )
    .expect("valid config")
}

/// Persist everything at once and return the other outputs.
fn drain(r: &mut R) -> Vec<Output> {
    let mut out = Vec::new();
    while let Some(o) = r.poll_output() {
        match o {
            Output::Persist { token, .. } => r.handle_persisted(token),
            o => out.push(o),
        }
    }
    out
}

fn request(client: u64, op: &[u8]) -> Request {
    let a = SimulatedAuthenticator::new(Principal::Client(ClientId(client)), SEED);
    Request::new_signed(&a, ClientId(client), RequestSeq(1), false, op.to_vec())
}

fn batch(client: u64, op: &[u8]) -> Batch {
    Batch {
        timestamp: Timestamp(5),
        requests: vec![request(client, op)],
    }
}

fn signed(from: u8, body: ReplicaBody) -> Message {
    Message::Replica(SignedMessage::new(&auth(from), ReplicaId(from), body))
}

fn cert(kind: VoteKind, regency: u64, cid: u64, digest: Digest, signers: &[u8]) -> Certificate {
    let votes = signers
        .iter()
        .map(|&s| {
            let body = match kind {
                VoteKind::Write => ReplicaBody::Write {
                    regency: Regency(regency),
                    cid: SeqNo(cid),
                    digest,
                },
                VoteKind::Accept => ReplicaBody::Accept {
                    regency: Regency(regency),
                    cid: SeqNo(cid),
                    digest,
                },
            };
            Vote {
                signer: ReplicaId(s),
                tag: auth(s).sign(&body.signing_payload()),
            }
        })
        .collect();
    Certificate {
        kind,
        regency: Regency(regency),
        cid: SeqNo(cid),
        digest,
        votes,
    }
}

fn stopdata(from: u8, regency: u64, written: Option<(Certificate, Batch)>) -> SignedMessage {
    let body = ReplicaBody::StopData(StopData {
        regency: Regency(regency),
        last_decided: None,
        written,
    });
    SignedMessage::new(&auth(from), ReplicaId(from), body)
}

fn broadcasts_write(outs: &[Output], digest: Digest) -> bool {
    outs.iter().any(|o| {
        matches!(o, Output::Broadcast { msg: Message::Replica(m) }
            if matches!(m.body, ReplicaBody::Write { digest: d, .. } if d == digest))
    })
}

/// Normal case (paper, VP-Consensus): WRITE after a valid PROPOSE, ACCEPT after Q
/// WRITEs, decide after Q ACCEPTs, and not one vote earlier.
#[test]
fn decides_only_on_a_quorum_of_accepts() {
    let mut r = replica(1, Config::new(4));
    let now = Timestamp(1);
    let b = batch(1, b"x");
    let d = b.digest();
    let from = |i| Peer::Replica(ReplicaId(i));
    let propose = ReplicaBody::Propose {
        regency: Regency(0),
        cid: SeqNo(1),
        batch: b,
    };
    r.handle_message(now, from(0), signed(0, propose))
        .expect("valid proposal");
    assert!(broadcasts_write(&drain(&mut r), d));
    let write = |i| {
        signed(
            i,
            ReplicaBody::Write {
                regency: Regency(0),
                cid: SeqNo(1),
                digest: d,
            },
        )
    };
    r.handle_message(now, from(0), write(0))
        .expect("valid write");
    assert_eq!(
        r.status().vote.accepted,
        None,
        "two WRITEs are not a quorum"
    );
    r.handle_message(now, from(2), write(2))
        .expect("valid write");
    assert_eq!(r.status().vote.accepted, Some((Regency(0), d)));
    let accept = |i| {
        signed(
            i,
            ReplicaBody::Accept {
                regency: Regency(0),
                cid: SeqNo(1),
                digest: d,
            },
        )
    };
    r.handle_message(now, from(0), accept(0))
        .expect("valid accept");
    assert_eq!(r.last_decided(), SeqNo(0), "two ACCEPTs are not a quorum");
    r.handle_message(now, from(3), accept(3))
        .expect("valid accept");
    assert_eq!(r.last_decided(), SeqNo(1));
    let outs = drain(&mut r);
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::Decided { cid: SeqNo(1), .. }))
    );
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Reply {
            client: ClientId(1),
            ..
        }
    )));
}

/// A SYNC must carry the value of the highest-regency write certificate in its proofs;
/// a correct replica rejects any other value (and, with the mutation, does not).
#[test]
fn sync_must_carry_the_certified_value() {
    let a = batch(1, b"a");
    let b = batch(2, b"b");
    let cert_a = cert(VoteKind::Write, 0, 1, a.digest(), &[0, 1, 3]);
    let proofs = vec![
        stopdata(0, 1, Some((cert_a, a.clone()))),
        stopdata(1, 1, None),
        stopdata(3, 1, None),
    ];
    let sync = |batch: &Batch| {
        let s = Sync {
            regency: Regency(1),
            cid: SeqNo(1),
            batch: batch.clone(),
            proofs: proofs.clone(),
        };
        signed(1, ReplicaBody::Sync(s))
    };
    let leader = Peer::Replica(ReplicaId(1));
    let now = Timestamp(1);

    let mut r = replica(2, Config::new(4));
    let err = r.handle_message(now, leader, sync(&b));
    assert!(matches!(
        err,
        Err(Error::PeerMisbehaved {
            fault: PeerFault::InvalidSync,
            ..
        })
    ));
    assert_eq!(r.regency(), Regency(0));
    assert_eq!(r.stats().peer_faults, 1);
    r.handle_message(now, leader, sync(&a))
        .expect("certified value");
    assert_eq!(r.regency(), Regency(1));
    assert!(broadcasts_write(&drain(&mut r), a.digest()));

    let mut config = Config::new(4);
    config.danger_test_mutation = Some(DangerTestMutation::SkipSyncCheck);
    let mut m = replica(2, config);
    m.handle_message(now, leader, sync(&b))
        .expect("the mutation skips the check");
    assert!(broadcasts_write(&drain(&mut m), b.digest()));
}

/// Lying STOPDATA (a certificate with a forged vote) invalidates the SYNC carrying it.
#[test]
fn sync_with_a_forged_certificate_is_rejected() {
    let a = batch(1, b"a");
    let mut forged = cert(VoteKind::Write, 0, 1, a.digest(), &[0, 1, 3]);
    forged.votes[2].tag = forged.votes[0].tag;
    let proofs = vec![
        stopdata(0, 1, Some((forged, a.clone()))),
        stopdata(1, 1, None),
        stopdata(3, 1, None),
    ];
    let s = Sync {
        regency: Regency(1),
        cid: SeqNo(1),
        batch: a,
        proofs,
    };
    let mut r = replica(2, Config::new(4));
    let err = r.handle_message(
        Timestamp(1),
        Peer::Replica(ReplicaId(1)),
        signed(1, ReplicaBody::Sync(s)),
    );
    assert!(matches!(
        err,
        Err(Error::PeerMisbehaved {
            fault: PeerFault::InvalidSync,
            ..
        })
    ));
}

#[test]
fn forged_and_undecodable_messages_are_counted_not_fatal() {
    let mut r = replica(1, Config::new(4));
    let now = Timestamp(1);
    // Replica 3 signs, but claims to be replica 0.
    let mut m = SignedMessage::new(
        &auth(3),
        ReplicaId(3),
        ReplicaBody::Stop {
            regency: Regency(1),
        },
    );
    m.from = ReplicaId(0);
    let e = r.handle_message(
        now,
        Peer::Replica(ReplicaId(0)),
        Message::Replica(m.clone()),
    );
    assert!(matches!(
        e,
        Err(Error::PeerMisbehaved {
            fault: PeerFault::BadSignature,
            ..
        })
    ));
    let e = r.handle_message(now, Peer::Replica(ReplicaId(3)), Message::Replica(m));
    assert!(matches!(
        e,
        Err(Error::PeerMisbehaved {
            fault: PeerFault::SenderMismatch,
            ..
        })
    ));
    assert!(matches!(
        r.handle_bytes(now, Peer::Replica(ReplicaId(3)), &[1, 1, 200]),
        Err(Error::Decode { .. })
    ));
    assert_eq!(r.stats().peer_faults, 2);
    assert_eq!(r.stats().decode_errors, 1);
}

/// f+1 STOPs make a replica join; Q STOPs install the regency and send STOPDATA to the
/// new leader, only after the regency is durable.
/// Issue 10, finding 7: with room for one request per batch and clients 1, 2 and 3
/// always pending (client 1 floods: it always has a request waiting), three
/// consecutive batches serve all three clients, not client 1 three times.
#[test]
fn batching_is_fair_across_clients() {
    let mut config = Config::new(4);
    config.batch_requests_max = 1;
    let mut r = replica(0, config);
    drain(&mut r);
    for c in [3u64, 1, 2] {
        r.pending
            .insert(ClientId(c), (request(c, b"x"), Timestamp(0), false));
    }
    let served: BTreeSet<ClientId> = (0..3)
        .map(|_| {
            let b = r.cut_batch();
            assert_eq!(b.requests.len(), 1);
            b.requests[0].client
        })
        .collect();
    assert_eq!(
        served.len(),
        3,
        "every pending client gets a batch: {served:?}"
    );
}

/// Issue 10, finding 1: a write certificate for instance 3 proves that 2 was decided,
/// even when its STOPDATA reports no last decided instance, so the choice is instance 3
/// with that certificate's batch (not instance 1 with a free batch).
/// A Byzantine replica completes an accept quorum with its own ACCEPT, keeps the decision
/// to itself, and reports it in its STOPDATA: every SYNC then starts one instance above
/// what the correct replicas decided, and none of them can fetch the missing decision from
/// a correct peer. A correct replica that signed the certificate holds the batch, so the
/// certificate in the SYNC's proofs lets it decide the instance itself and vote on the SYNC
/// (found by the simulator: `f9a-restart-leader-after-sync`, seeds 74 and 106).
#[test]
fn a_certificate_in_the_sync_decides_the_open_instance() {
    let now = Timestamp(1);
    let from = |i| Peer::Replica(ReplicaId(i));
    let a = batch(1, b"a");
    let mut r = replica(2, Config::new(4));
    let propose = ReplicaBody::Propose {
        regency: Regency(0),
        cid: SeqNo(1),
        batch: a.clone(),
    };
    r.handle_message(now, from(0), signed(0, propose))
        .expect("valid proposal");
    for i in [0, 1] {
        let w = ReplicaBody::Write {
            regency: Regency(0),
            cid: SeqNo(1),
            digest: a.digest(),
        };
        r.handle_message(now, from(i), signed(i, w))
            .expect("valid write");
    }
    drain(&mut r);
    assert_eq!(r.status().vote.accepted, Some((Regency(0), a.digest())));
    assert_eq!(r.last_decided(), SeqNo(0), "only its own and 1's ACCEPT");
    // Replica 0 holds ACCEPTs from 0, 1 and 2: a valid certificate nobody else has.
    let decided_a = cert(VoteKind::Accept, 0, 1, a.digest(), &[0, 1, 2]);
    let written_a = cert(VoteKind::Write, 0, 1, a.digest(), &[0, 1, 2]);
    let sd0 = SignedMessage::new(
        &auth(0),
        ReplicaId(0),
        ReplicaBody::StopData(StopData {
            regency: Regency(1),
            last_decided: Some(decided_a),
            written: None,
        }),
    );
    let b = batch(2, b"b");
    let s = Sync {
        regency: Regency(1),
        cid: SeqNo(2),
        batch: b.clone(),
        proofs: vec![
            sd0,
            stopdata(1, 1, Some((written_a, a.clone()))),
            stopdata(3, 1, None),
        ],
    };
    r.handle_message(now, from(1), signed(1, ReplicaBody::Sync(s)))
        .expect("valid sync");
    assert_eq!(r.regency(), Regency(1));
    assert_eq!(r.last_decided(), SeqNo(1), "decided from the SYNC's proofs");
    let outs = drain(&mut r);
    assert!(outs.iter().any(
        |o| matches!(o, Output::Decided { cid: SeqNo(1), digest, .. } if *digest == a.digest())
    ));
    assert!(broadcasts_write(&outs, b.digest()), "votes for the SYNC");
}

#[test]
fn a_write_certificate_above_h_raises_the_choice() {
    let b = batch(1, b"C");
    let c = cert(VoteKind::Write, 0, 3, b.digest(), &[0, 2, 3]);
    let proofs = vec![
        stopdata(0, 1, Some((c, b.clone()))),
        stopdata(1, 1, None),
        stopdata(3, 1, None),
    ];
    let (h, forced, batch) = R::choose(&proofs, None);
    assert_eq!(h, SeqNo(2));
    assert_eq!(forced, Some(b.digest()));
    assert_eq!(batch, Some(b));
}

#[test]
fn stop_quorums() {
    let mut r = replica(2, Config::new(4));
    let now = Timestamp(1);
    let stop = |i| {
        signed(
            i,
            ReplicaBody::Stop {
                regency: Regency(1),
            },
        )
    };
    r.handle_message(now, Peer::Replica(ReplicaId(0)), stop(0))
        .expect("valid");
    assert_eq!(r.status().stop_target, Regency(0), "one STOP is not f+1");
    r.handle_message(now, Peer::Replica(ReplicaId(3)), stop(3))
        .expect("valid");
    assert_eq!(r.status().stop_target, Regency(1), "f+1 STOPs: join");
    assert_eq!(r.regency(), Regency(1), "own STOP makes Q = 3: install");
    // The STOPDATA is held until the regency record is persisted.
    let held = r.poll_output();
    assert!(matches!(held, Some(Output::Persist { .. })));
    let mut saw_stopdata_before_persist = false;
    while let Some(o) = r.poll_output() {
        if matches!(
            &o,
            Output::Send {
                to: ReplicaId(1),
                ..
            }
        ) {
            saw_stopdata_before_persist = true;
        }
    }
    assert!(!saw_stopdata_before_persist);
    r.handle_persisted(r.next_token - 1);
    let outs = drain(&mut r);
    assert!(outs.iter().any(
        |o| matches!(o, Output::Send { to: ReplicaId(1), msg: Message::Replica(m) }
        if matches!(m.body, ReplicaBody::StopData(_)))
    ));
}

fn arb_body() -> impl Strategy<Value = ReplicaBody> {
    let d = prop_oneof![
        Just(batch(1, b"a").digest()),
        Just(batch(2, b"b").digest()),
        any::<[u8; 32]>().prop_map(Digest)
    ];
    (0u8..9, 0u64..3, 0u64..4, d, any::<bool>()).prop_map(|(k, reg, cid, digest, flag)| {
        let (regency, cid) = (Regency(reg), SeqNo(cid));
        let b = if flag { batch(1, b"a") } else { batch(2, b"b") };
        match k {
            0 => ReplicaBody::Propose {
                regency,
                cid,
                batch: b,
            },
            1 => ReplicaBody::Write {
                regency,
                cid,
                digest,
            },
            2 => ReplicaBody::Accept {
                regency,
                cid,
                digest,
            },
            3 => ReplicaBody::Stop { regency },
            4 => ReplicaBody::Fetch { from_cid: cid },
            5 => ReplicaBody::StateRequest,
            6 => ReplicaBody::StopData(StopData {
                regency,
                last_decided: None,
                written: None,
            }),
            7 => ReplicaBody::Decisions {
                decisions: vec![],
                checkpoint: Some(cid),
                regency_proof: None,
            },
            _ => ReplicaBody::Chunk {
                cid,
                index: 0,
                total: 1,
                data: vec![1, 2],
                proof: cert(
                    VoteKind::Accept,
                    regency.0,
                    cid.0,
                    Digest([7; 32]),
                    &[0, 1, 2],
                ),
            },
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any sequence of validly signed messages from replicas, timeouts and persistence
    /// acknowledgements keeps the core's invariants (checked after every input) and never
    /// panics; outputs stay bounded.
    #[test]
    fn hostile_sequences_keep_invariants(steps in proptest::collection::vec((0u8..4, arb_body(), 0u8..3), 1..60)) {
        let mut r = replica(1, Config::new(4));
        let mut now = 0u64;
        for (from, body, action) in steps {
            now += 10_000_000;
            if from == 1 {
                r.handle_timeout(Timestamp(now * 100));
                continue;
            }
            let _ = r.handle_message(Timestamp(now), Peer::Replica(ReplicaId(from)), signed(from, body));
            if action == 0 {
                drain(&mut r);
            }
        }
        drain(&mut r);
        prop_assert!(r.poll_output().is_none());
    }
}
