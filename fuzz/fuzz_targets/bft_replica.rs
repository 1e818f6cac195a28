//! Hostile message sequences into a live replica core: a Byzantine peer must never make it
//! panic or break its invariants (checked by the core after every input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_bft::{
    Application, BatchContext, ClientId, Config, Digest, Peer, Principal, RecoveredState, Replica,
    ReplicaId, RestoreError, SimulatedAuthenticator, Timestamp,
};

#[derive(Default)]
struct Counter(u64);

impl Application for Counter {
    fn execute_batch(&mut self, _ctx: &BatchContext, ops: &[&[u8]]) -> Vec<Vec<u8>> {
        ops.iter()
            .map(|_| {
                self.0 += 1;
                self.0.to_le_bytes().to_vec()
            })
            .collect()
    }
    fn query(&self, _op: &[u8]) -> Option<Vec<u8>> {
        Some(self.0.to_le_bytes().to_vec())
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
    fn restore(&mut self, s: &[u8]) -> Result<(), RestoreError> {
        let b: [u8; 8] = s
            .try_into()
            .map_err(|_| RestoreError { reason: "length" })?;
        self.0 = u64::from_le_bytes(b);
        Ok(())
    }
    fn state_digest(&self) -> Digest {
        Digest::of("fuzz", &[&self.0.to_le_bytes()])
    }
}

fuzz_target!(|data: &[u8]| {
    let config = Config::new(4);
    let auth = SimulatedAuthenticator::new(Principal::Replica(ReplicaId(1)), 0);
    let Ok(mut r) = Replica::new(
        config,
        ReplicaId(1),
        auth,
        Counter::default(),
        RecoveredState::default(),
        1,
        Timestamp(0),
    ) else {
        return;
    };
    // Input: a sequence of [sender byte][len u16][bytes] records.
    let mut rest = data;
    let mut now = 0u64;
    while rest.len() >= 3 {
        let sender = rest[0];
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]]));
        rest = &rest[3..];
        let take = len.min(rest.len());
        let (msg, tail) = rest.split_at(take);
        rest = tail;
        now += 1_000_000;
        let peer = if sender < 4 {
            Peer::Replica(ReplicaId(sender))
        } else {
            Peer::Client(ClientId(u64::from(sender)))
        };
        let _ = r.handle_bytes(Timestamp(now), peer, msg);
        if sender % 7 == 0 {
            r.handle_timeout(Timestamp(now * 50));
        }
        while let Some(out) = r.poll_output() {
            if let rampart_bft::Output::Persist { token, .. } = out {
                r.handle_persisted(token);
            }
        }
    }
});
