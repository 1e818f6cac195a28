use proptest::prelude::*;
use proptest::strategy::ValueTree;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::auth::SimulatedAuthenticator;

fn config() -> Config {
    let mut c = Config::new(4);
    c.batch_requests_max = 8;
    c.batch_bytes_max = 4096;
    c.request_op_bytes_max = 256;
    c.reply_bytes_max = 256;
    c.state_chunk_bytes_max = 512;
    c.decisions_per_fetch_max = 4;
    c
}

fn limits() -> WireLimits {
    WireLimits::from_config(&config())
}

fn tag(seed: u8) -> AuthTag {
    AuthTag([seed; AUTH_TAG_LEN])
}

prop_compose! {
    fn arb_request()(client in any::<u64>(), seq in any::<u64>(), ro in any::<bool>(),
                     op in proptest::collection::vec(any::<u8>(), 0..64), t in any::<u8>())
                     -> Request {
        Request { client: ClientId(client), seq: RequestSeq(seq), read_only: ro, op, tag: tag(t) }
    }
}

prop_compose! {
    fn arb_batch()(ts in any::<u64>(), requests in proptest::collection::vec(arb_request(), 0..4))
                   -> Batch {
        Batch { timestamp: Timestamp(ts), requests }
    }
}

prop_compose! {
    fn arb_cert()(write in any::<bool>(), reg in any::<u64>(), cid in any::<u64>(),
                  d in any::<[u8; 32]>(), signers in proptest::collection::btree_set(0u8..4, 0..4))
                  -> Certificate {
        Certificate {
            kind: if write { VoteKind::Write } else { VoteKind::Accept },
            regency: Regency(reg),
            cid: SeqNo(cid),
            digest: Digest(d),
            votes: signers.into_iter().map(|s| Vote { signer: ReplicaId(s), tag: tag(s) }).collect(),
        }
    }
}

prop_compose! {
    fn arb_stopdata()(reg in any::<u64>(), last in proptest::option::of(arb_cert()),
                      written in proptest::option::of((arb_cert(), arb_batch()))) -> StopData {
        StopData { regency: Regency(reg), last_decided: last, written }
    }
}

fn signed(from: u8, body: ReplicaBody) -> SignedMessage {
    SignedMessage {
        from: ReplicaId(from),
        body,
        tag: tag(from),
    }
}

fn arb_body() -> impl Strategy<Value = ReplicaBody> {
    let leaf = prop_oneof![
        (
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(c, s, ro, result)| ReplicaBody::Reply {
                client: ClientId(c),
                seq: RequestSeq(s),
                read_only: ro,
                result
            }),
        (any::<u64>(), any::<u64>(), arb_batch()).prop_map(|(r, c, batch)| ReplicaBody::Propose {
            regency: Regency(r),
            cid: SeqNo(c),
            batch
        }),
        (any::<u64>(), any::<u64>(), any::<[u8; 32]>()).prop_map(|(r, c, d)| ReplicaBody::Write {
            regency: Regency(r),
            cid: SeqNo(c),
            digest: Digest(d)
        }),
        (any::<u64>(), any::<u64>(), any::<[u8; 32]>()).prop_map(|(r, c, d)| ReplicaBody::Accept {
            regency: Regency(r),
            cid: SeqNo(c),
            digest: Digest(d)
        }),
        any::<u64>().prop_map(|r| ReplicaBody::Stop {
            regency: Regency(r)
        }),
        arb_stopdata().prop_map(ReplicaBody::StopData),
        any::<u64>().prop_map(|c| ReplicaBody::Fetch { from_cid: SeqNo(c) }),
        Just(ReplicaBody::StateRequest),
        proptest::collection::vec((any::<u64>(), any::<[u8; 32]>(), any::<u32>()), 0..3).prop_map(
            |v| ReplicaBody::StateDigests {
                checkpoints: v
                    .into_iter()
                    .map(|(c, d, t)| (SeqNo(c), Digest(d), t))
                    .collect()
            }
        ),
        (any::<u64>(), any::<u32>()).prop_map(|(c, i)| ReplicaBody::ChunkRequest {
            cid: SeqNo(c),
            index: i
        }),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..128),
            arb_cert()
        )
            .prop_map(|(c, i, t, data, proof)| ReplicaBody::Chunk {
                cid: SeqNo(c),
                index: i,
                total: t,
                data,
                proof
            }),
    ];
    let sync = || {
        (
            any::<u64>(),
            any::<u64>(),
            arb_batch(),
            proptest::collection::vec(arb_stopdata(), 0..4),
        )
            .prop_map(|(r, c, batch, sds)| Sync {
                regency: Regency(r),
                cid: SeqNo(c),
                batch,
                proofs: sds
                    .into_iter()
                    .enumerate()
                    .map(|(i, sd)| signed(i as u8, ReplicaBody::StopData(sd)))
                    .collect(),
            })
    };
    let decisions = (
        proptest::collection::vec((arb_batch(), arb_cert()), 0..4),
        proptest::option::of(any::<u64>()),
        proptest::option::of(sync()),
    )
        .prop_map(|(ds, cp, proof)| ReplicaBody::Decisions {
            decisions: ds
                .into_iter()
                .map(|(batch, proof)| Decision { batch, proof })
                .collect(),
            checkpoint: cp.map(SeqNo),
            regency_proof: proof.map(|s| Box::new(signed(1, ReplicaBody::Sync(s)))),
        });
    prop_oneof![8 => leaf, 1 => sync().prop_map(ReplicaBody::Sync), 1 => decisions]
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        arb_request().prop_map(Message::Request),
        (0u8..4, arb_body()).prop_map(|(f, b)| Message::Replica(signed(f, b))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// decode(encode(m)) == m, and the encoding is within the advertised maximum.
    #[test]
    fn round_trip(m in arb_message()) {
        let bytes = m.encode();
        prop_assert!(bytes.len() <= limits().message_bytes_max());
        let back = Message::decode(&bytes, &limits());
        prop_assert_eq!(back, Ok(m));
    }

    /// Canonical: any byte string that decodes re-encodes to itself.
    #[test]
    fn decoded_bytes_are_canonical(m in arb_message(), cut in any::<prop::sample::Index>(),
                                   flip in any::<u8>()) {
        let mut bytes = m.encode();
        let i = cut.index(bytes.len());
        bytes[i] ^= flip;
        if let Ok(decoded) = Message::decode(&bytes, &limits()) {
            prop_assert_eq!(decoded.encode(), bytes);
        }
    }

    /// Every strict prefix is rejected (no message is a prefix of another).
    #[test]
    fn truncation_is_rejected(m in arb_message(), cut in any::<prop::sample::Index>()) {
        let bytes = m.encode();
        let i = cut.index(bytes.len());
        prop_assert!(Message::decode(&bytes[..i], &limits()).is_err());
    }

    /// Checkpoint contents round-trip.
    #[test]
    fn checkpoint_round_trip(cid in any::<u64>(), ts in any::<u64>(),
                             app in proptest::collection::vec(any::<u8>(), 0..200),
                             sessions in proptest::collection::vec((any::<u64>(), any::<u64>(),
                                 proptest::collection::vec(any::<u8>(), 0..16)), 0..8)) {
        let s = CheckpointState {
            cid: SeqNo(cid),
            timestamp: Timestamp(ts),
            app,
            sessions: sessions.into_iter().map(|(c, q, r)| (ClientId(c), RequestSeq(q), r)).collect(),
        };
        prop_assert_eq!(CheckpointState::decode(&s.encode(), &config()), Ok(s));
    }
}

fn arb_persist() -> impl Strategy<Value = PersistEntry> {
    let pair = proptest::option::of((any::<u64>(), any::<[u8; 32]>()))
        .prop_map(|o| o.map(|(r, d)| (Regency(r), Digest(d))));
    prop_oneof![
        (arb_batch(), arb_cert())
            .prop_map(|(batch, proof)| PersistEntry::Decision(Decision { batch, proof })),
        (
            any::<u64>(),
            pair.clone(),
            pair,
            proptest::option::of((arb_cert(), arb_batch()))
        )
            .prop_map(
                |(cid, wrote, accepted, written)| PersistEntry::Vote(VoteRecord {
                    cid: SeqNo(cid),
                    wrote,
                    accepted,
                    written,
                })
            ),
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| PersistEntry::Regency(RegencyRecord {
            regency: Regency(a),
            stop_target: Regency(b),
        })),
        (
            any::<u64>(),
            any::<[u8; 32]>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            arb_cert()
        )
            .prop_map(
                |(cid, d, blob, proof)| PersistEntry::Checkpoint(CheckpointRecord {
                    cid: SeqNo(cid),
                    digest: Digest(d),
                    blob: blob.into(),
                    proof,
                })
            ),
        any::<u64>().prop_map(|t| PersistEntry::TruncateLog { through: SeqNo(t) }),
    ]
}

proptest! {
    /// Durable entries round-trip, and every strict prefix (a torn write) is rejected.
    #[test]
    fn persist_entry_round_trip(e in arb_persist(), cut in any::<prop::sample::Index>()) {
        let bytes = e.encode();
        prop_assert_eq!(PersistEntry::decode(&bytes, &config()), Ok(e));
        let i = cut.index(bytes.len());
        prop_assert!(PersistEntry::decode(&bytes[..i], &config()).is_err());
    }

    /// The in-place checkpoint decoding (a disk storage's, which reuses the file buffer
    /// for the blob) agrees with `decode` behind any prefix, rejects what `decode`
    /// rejects, and the split encoding `head ++ blob ++ tail` is `encode`.
    #[test]
    fn checkpoint_entry_decodes_in_place(e in arb_persist(), junk in proptest::collection::vec(any::<u8>(), 0..40),
                                         cut in any::<prop::sample::Index>()) {
        let bytes = e.encode();
        let mut file = junk.clone();
        file.extend_from_slice(&bytes);
        let in_place = PersistEntry::decode_checkpoint_in(file, junk.len(), &config());
        match &e {
            PersistEntry::Checkpoint(c) => {
                let (head, tail) = PersistEntry::checkpoint_encoding(c);
                prop_assert_eq!([&head[..], &c.blob[..], &tail[..]].concat(), bytes.clone());
                prop_assert_eq!(in_place, Ok(c.clone()));
            }
            _ => prop_assert!(in_place.is_err()),
        }
        let i = cut.index(bytes.len());
        let mut torn = junk.clone();
        torn.extend_from_slice(&bytes[..i]);
        prop_assert!(PersistEntry::decode_checkpoint_in(torn, junk.len(), &config()).is_err());
    }

    /// A checkpoint encoded with its snapshot written in place is the canonical encoding,
    /// whether or not the snapshot length is known up front.
    #[test]
    fn checkpoint_encoded_in_place_is_canonical(app in proptest::collection::vec(any::<u8>(), 0..200),
                                                known in any::<bool>()) {
        let s = CheckpointState {
            cid: SeqNo(7),
            timestamp: Timestamp(9),
            app: app.clone(),
            sessions: vec![(ClientId(1), RequestSeq(2), vec![3, 4])],
        };
        let sessions = [(ClientId(1), RequestSeq(2), &[3u8, 4][..])];
        let streamed = CheckpointState::encode_with(
            SeqNo(7), Timestamp(9), known.then_some(app.len()), |out| out.extend_from_slice(&app), &sessions);
        prop_assert_eq!(&streamed, &s.encode());
        let v = CheckpointState::decode_view(&streamed, &config()).expect("decodes");
        prop_assert_eq!(v.app, &app[..]);
    }
}

/// Many random and mutated byte strings through the decoder: it must never panic. This is
/// the CI-friendly companion of `fuzz/fuzz_targets/bft_message.rs` (no nightly needed).
#[test]
fn decoder_survives_random_and_mutated_bytes() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xb17);
    let l = limits();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = arb_message();
    let mut accepted = 0usize;
    for i in 0..20_000 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            let len = rng.gen_range(0..300);
            let mut b: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            // Give the random bytes a plausible header half of the time.
            if len >= 3 && rng.gen_bool(0.5) {
                b[0] = WIRE_VERSION;
                b[1] = rng.gen_range(0..2);
                b[2] = rng.gen_range(0..4);
            }
            b
        } else {
            let m = strategy.new_tree(&mut runner).expect("strategy").current();
            let mut b = m.encode();
            for _ in 0..rng.gen_range(1..6) {
                match rng.gen_range(0..4) {
                    0 if !b.is_empty() => {
                        let j = rng.gen_range(0..b.len());
                        b[j] ^= 1 << rng.gen_range(0..8);
                    }
                    1 if !b.is_empty() => {
                        let j = rng.gen_range(0..b.len());
                        b.truncate(j);
                    }
                    2 => {
                        let j = rng.gen_range(0..=b.len());
                        b.insert(j, rng.r#gen());
                    }
                    _ if b.len() >= 4 => {
                        // Huge length prefixes are the classic allocation bomb.
                        let j = rng.gen_range(0..b.len() - 3);
                        b[j..j + 4].copy_from_slice(&u32::MAX.to_le_bytes());
                    }
                    _ => {}
                }
            }
            b
        };
        if let Ok(m) = Message::decode(&bytes, &l) {
            accepted += 1;
            assert_eq!(m.encode(), bytes, "accepted bytes must be canonical");
        }
    }
    // Sanity: the mutator sometimes leaves messages valid, and mostly does not.
    assert!(accepted > 0);
    assert!(accepted < 15_000);
}

#[test]
fn oversized_input_is_rejected_before_parsing() {
    let l = limits();
    let bytes = vec![WIRE_VERSION; l.message_bytes_max() + 1];
    assert!(matches!(
        Message::decode(&bytes, &l),
        Err(DecodeError::TooLarge {
            field: "message",
            ..
        })
    ));
}

#[test]
fn limits_are_enforced() {
    let l = limits();
    let big = Request {
        client: ClientId(1),
        seq: RequestSeq(1),
        read_only: false,
        op: vec![0; 257],
        tag: tag(1),
    };
    assert!(matches!(
        Message::decode(&Message::Request(big).encode(), &l),
        Err(DecodeError::TooLarge { field: "op", .. })
    ));
    let too_many = Batch {
        timestamp: Timestamp(0),
        requests: (0..9)
            .map(|i| Request {
                client: ClientId(i),
                seq: RequestSeq(1),
                read_only: false,
                op: vec![],
                tag: tag(0),
            })
            .collect(),
    };
    let m = Message::Replica(signed(
        0,
        ReplicaBody::Propose {
            regency: Regency(0),
            cid: SeqNo(1),
            batch: too_many,
        },
    ));
    assert!(matches!(
        Message::decode(&m.encode(), &l),
        Err(DecodeError::TooLarge {
            field: "batch requests",
            ..
        })
    ));
    let bad_replica = Message::Replica(signed(9, ReplicaBody::StateRequest));
    assert!(Message::decode(&bad_replica.encode(), &l).is_err());
    let mut wrong_version = Message::Replica(signed(0, ReplicaBody::StateRequest)).encode();
    wrong_version[0] = WIRE_VERSION + 1;
    assert_eq!(
        Message::decode(&wrong_version, &l),
        Err(DecodeError::Version {
            version: WIRE_VERSION + 1
        })
    );
}

#[test]
fn certificates_need_a_quorum_of_distinct_valid_votes() {
    let c = config();
    let auths: Vec<SimulatedAuthenticator> = (0..4)
        .map(|i| SimulatedAuthenticator::new(Principal::Replica(ReplicaId(i)), 1))
        .collect();
    let body = ReplicaBody::Write {
        regency: Regency(2),
        cid: SeqNo(5),
        digest: Digest([3; 32]),
    };
    let vote = |i: u8| Vote {
        signer: ReplicaId(i),
        tag: auths[usize::from(i)].sign(&body.signing_payload()),
    };
    let cert = |votes| Certificate {
        kind: VoteKind::Write,
        regency: Regency(2),
        cid: SeqNo(5),
        digest: Digest([3; 32]),
        votes,
    };
    assert!(cert(vec![vote(0), vote(1), vote(3)]).verify(&c, &auths[2]));
    // Too few.
    assert!(!cert(vec![vote(0), vote(1)]).verify(&c, &auths[2]));
    // Duplicates do not count twice.
    assert!(!cert(vec![vote(0), vote(0), vote(1)]).verify(&c, &auths[2]));
    // A forged vote (replica 3's tag claimed for replica 2).
    let mut forged = vote(3);
    forged.signer = ReplicaId(2);
    assert!(!cert(vec![vote(0), vote(1), forged]).verify(&c, &auths[2]));
    // An ACCEPT certificate is not a WRITE certificate.
    let mut accept = cert(vec![vote(0), vote(1), vote(3)]);
    accept.kind = VoteKind::Accept;
    assert!(!accept.verify(&c, &auths[2]));
}

/// The transport sizes client connections from these two bounds: they must be exact for
/// the largest request and reply (too small refuses honest traffic, too large wastes the
/// per-client budget).
#[test]
fn request_and_reply_bounds_are_the_largest_encodings() {
    let l = limits();
    let req = Message::Request(Request {
        client: ClientId(u64::MAX),
        seq: RequestSeq(u64::MAX),
        read_only: true,
        op: vec![0xab; l.request_op_bytes_max],
        tag: tag(1),
    });
    let bytes = req.encode();
    assert_eq!(bytes.len(), l.request_message_bytes_max());
    assert!(Message::decode(&bytes, &l).is_ok());
    let reply = Message::Replica(SignedMessage {
        from: ReplicaId(3),
        body: ReplicaBody::Reply {
            client: ClientId(7),
            seq: RequestSeq(9),
            read_only: false,
            result: vec![0xcd; l.reply_bytes_max],
        },
        tag: tag(2),
    });
    let bytes = reply.encode();
    assert_eq!(bytes.len(), l.reply_message_bytes_max());
    assert!(Message::decode(&bytes, &l).is_ok());
    assert!(l.request_message_bytes_max() <= l.message_bytes_max());
    assert!(l.reply_message_bytes_max() <= l.message_bytes_max());
}
