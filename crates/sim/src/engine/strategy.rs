//! Wiring of the strategic adversary into a run: who colludes, which network, which
//! Byzantine clients, the periodic moves, and the throughput floor.

use rand::Rng;

use super::{Event, Sim, ms};
use crate::adversary::{Adversary, Attack, Plan};
use crate::byz::{Behaviour, Byzantine, Packet};
use crate::clients::{ByzClient, ClientAttack};
use crate::network::{Hold, NetMode};
use crate::{Failure, Faults, Node, SimConfig, SimReport};
use rampart_bft::{Principal, ReplicaId, SimulatedAuthenticator};

/// Byzantine clients at most per run.
const BYZ_CLIENTS_MAX: usize = 2;

/// Run one seed, and for throughput-floor runs (one Byzantine replica, quiet network, no
/// crashes) also the same configuration without faults, and compare the rates.
pub(crate) fn run_checked(cfg: SimConfig) -> SimReport {
    let sim = Sim::new(cfg.clone());
    let floor = sim.floor_applies();
    let mut report = sim.run();
    if floor {
        let mut base = cfg.clone();
        base.faults = Faults::NONE;
        base.attack = None;
        let b = Sim::new(base).run();
        let baseline = b.summary.rate_milli;
        report.summary.baseline_milli = Some(baseline);
        let floor_milli = baseline / 2;
        if report.failure.is_none() && report.summary.rate_milli < floor_milli {
            report.failure = Some(Failure::Throughput {
                rate_milli: report.summary.rate_milli,
                floor_milli,
            });
        }
    }
    report
}

impl Sim {
    /// Whether the throughput floor applies: exactly one Byzantine replica, a quiet
    /// network, no crashes, no Byzantine clients other than the attack's own.
    pub(super) fn floor_applies(&self) -> bool {
        let byz = self.replicas.iter().filter(|s| s.byz.is_some()).count();
        let clients_ok =
            self.byz_clients.is_empty() || self.summary.attack == Attack::OneFollowerClient.name();
        // Chosen crashes (finding 9a) are crashes too.
        let no_crashes =
            !self.random_crashes && self.summary.attack != Attack::RestartLeaderAfterSync.name();
        byz == 1 && self.net.mode == NetMode::Quiet && no_crashes && clients_ok
    }

    /// Make replica `r` Byzantine with `behaviours` (replacing what it was).
    fn make_byzantine(&mut self, r: u8, behaviours: Vec<Behaviour>) {
        let auth = SimulatedAuthenticator::new(Principal::Replica(ReplicaId(r)), self.cfg.seed);
        self.replicas[usize::from(r)].byz = Some(Byzantine::new(ReplicaId(r), behaviours, auth));
    }

    /// Choose the attack, the colluders, the network and the Byzantine clients from the
    /// adversary's own randomness. Does nothing in [`Faults::RANDOM`] runs.
    pub(super) fn setup_adversary(&mut self) {
        let faults = self.cfg.faults;
        if !faults.byzantine || !(faults.strategic || self.cfg.attack.is_some()) {
            return;
        }
        let n = self.cfg.replicas;
        let f = self.rcfg.f();
        let rng = &mut self.adv_rng;
        let attack = self.cfg.attack.unwrap_or_else(|| {
            if rng.gen_bool(0.3) {
                Attack::Random
            } else {
                Attack::ALL[rng.gen_range(1..Attack::ALL.len())]
            }
        });
        self.summary.attack = attack.name();
        let gst = self.heal_at;
        let mode = if attack.holds_network() {
            NetMode::Adversarial
        } else if !faults.adversarial_network {
            if faults.network {
                NetMode::Random
            } else {
                NetMode::Quiet
            }
        } else {
            match (attack, rng.gen_range(0..10)) {
                // The floor attacks run mostly on a quiet network.
                (Attack::UnsolicitedDecisions | Attack::OneFollowerClient, 0..7) => NetMode::Quiet,
                (_, 0..2) => NetMode::Quiet,
                (_, 2..5) => NetMode::Adversarial,
                _ if faults.network => NetMode::Random,
                _ => NetMode::Adversarial,
            }
        };
        if mode != NetMode::Random {
            self.net.drop_p = 0.0;
            self.net.dup_p = 0.0;
            self.net.replay_p = 0.0;
            self.net.delay_max_ns = self.net.delay_max_ns.min(ms(10));
        }
        self.net.mode = mode;
        if mode != NetMode::Random || attack.holds_network() {
            self.random_crashes = false;
        }
        let plan = if attack == Attack::Random {
            // The random behaviours on the seed's Byzantine set; a quiet run keeps one.
            if mode == NetMode::Quiet {
                let mut kept = false;
                for s in &mut self.replicas {
                    if s.byz.is_some() {
                        if kept {
                            s.byz = None;
                        }
                        kept = true;
                    }
                }
                let first = self.summary.byzantine.first().cloned();
                self.summary.byzantine = first.into_iter().collect();
            }
            let colluders: Vec<u8> = self.summary.byzantine.iter().map(|(r, _)| *r).collect();
            Plan {
                attack,
                victims: (0..n as u8).filter(|r| !colluders.contains(r)).collect(),
                colluders,
                target: None,
            }
        } else {
            let plan = Plan::derive(attack, n, f, rng);
            for s in &mut self.replicas {
                s.byz = None;
            }
            self.summary.byzantine.clear();
            for r in plan.colluders.clone() {
                self.make_byzantine(r, Vec::new());
                self.summary.byzantine.push((r, Vec::new()));
            }
            plan
        };
        let rng = &mut self.adv_rng;
        if mode == NetMode::Adversarial {
            let mut holds = plan.holds(&self.rcfg, gst, rng);
            if holds.is_empty() {
                for _ in 0..rng.gen_range(1..=3) {
                    holds.push(Hold::random(n as u8, gst, rng));
                }
            }
            self.net.holds = holds;
        }
        // Byzantine clients, with ids after the honest ones.
        let mut byz_clients = Vec::new();
        let base = self.cfg.clients as u64;
        let followers: Vec<u8> = (1..n as u8)
            .filter(|r| !plan.colluders.contains(r))
            .collect();
        if attack == Attack::OneFollowerClient && !followers.is_empty() {
            let fo = followers[rng.gen_range(0..followers.len())];
            byz_clients.push(ByzClient::new(
                base,
                ClientAttack::OneFollower,
                self.cfg.seed,
                fo,
            ));
        } else if faults.byzantine_clients && mode != NetMode::Quiet && rng.gen_bool(0.4) {
            for i in 0..rng.gen_range(1..=BYZ_CLIENTS_MAX) {
                let a = ClientAttack::ALL[rng.gen_range(0..ClientAttack::ALL.len())];
                let fo = followers.first().copied().unwrap_or(1);
                byz_clients.push(ByzClient::new(base + i as u64, a, self.cfg.seed, fo));
            }
        }
        self.summary.byz_clients = byz_clients.iter().map(|c| c.attack.name()).collect();
        self.byz_clients = byz_clients;
        for i in 0..self.byz_clients.len() {
            let at = self.adv_rng.gen_range(ms(5)..ms(50));
            self.schedule(at, Event::ByzClientTick(i));
        }
        if !plan.colluders.is_empty() && attack != Attack::Random {
            let at = self.adv_rng.gen_range(ms(1)..ms(10));
            self.schedule(at, Event::AdversaryTick);
        }
        self.adv = Some(Adversary::new(plan, &self.rcfg, self.cfg.seed));
    }

    /// Send a packet now (`extra == 0`) or after `extra` ns.
    pub(super) fn send_timed(&mut self, extra: u64, p: Packet) {
        let (from, to, bytes) = p;
        if extra == 0 {
            self.send(from, to, bytes);
        } else {
            let at = self.now + extra;
            self.schedule(at, Event::Send { from, to, bytes });
        }
    }

    pub(super) fn adversary_tick(&mut self) {
        let Some(adv) = self.adv.as_mut() else { return };
        let pkts = adv.tick(&mut self.adv_rng);
        for (d, p) in pkts {
            self.send_timed(d, p);
        }
        let at = self.now + self.adv_rng.gen_range(ms(5)..ms(15));
        self.schedule(at, Event::AdversaryTick);
    }

    pub(super) fn byz_client_tick(&mut self, i: usize) {
        let n = self.cfg.replicas as u8;
        let op_max = self.rcfg.request_op_bytes_max;
        let Some(c) = self.byz_clients.get_mut(i) else {
            return;
        };
        let pkts = c.tick(n, op_max, &mut self.adv_rng);
        let period = c.period_ms();
        for p in pkts {
            self.send(p.0, p.1, p.2);
        }
        let at = self.now + ms(period);
        self.schedule(at, Event::ByzClientTick(i));
    }

    /// Honest client packets, remembered by replaying Byzantine clients.
    pub(super) fn note_client_packet(&mut self, from: Node, to: Node, bytes: &[u8]) {
        if let Node::Client(c) = from
            && c < self.cfg.clients as u64
        {
            for b in &mut self.byz_clients {
                b.see(&(from, to, bytes.to_vec()), &mut self.adv_rng);
            }
        }
    }
}
