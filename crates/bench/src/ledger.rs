//! Accounting for one receiver: which messages of which sender it got, how many twice, and
//! how many out of order. Nothing is inferred from counts alone: every (sender, seq) pair has
//! its own bit, so a duplicate cannot hide a loss.

use std::ops::AddAssign;

use serde::Serialize;

/// One receiver's record of the senders' streams.
#[derive(Debug, Clone)]
pub struct Ledger {
    per_sender: u32,
    /// One bit per (sender, seq).
    seen: Vec<u64>,
    /// The last seq received from each sender, to count reordering.
    last: Vec<Option<u32>>,
    tally: Tally,
}

/// Counts over one or many receivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Bench messages received, duplicates included.
    pub received: u64,
    /// Distinct (sender, seq) pairs received.
    pub unique: u64,
    /// Messages received again.
    pub duplicates: u64,
    /// Messages received after a later one of the same sender.
    pub reordered: u64,
    /// Stamps naming a sender or seq outside the run (another run's traffic, or corruption).
    pub foreign: u64,
}

impl AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.received += o.received;
        self.unique += o.unique;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.foreign += o.foreign;
    }
}

impl Ledger {
    /// A ledger for `senders` streams of `per_sender` messages each.
    pub fn new(senders: u32, per_sender: u32) -> Ledger {
        let bits = u64::from(senders) * u64::from(per_sender);
        Ledger {
            per_sender,
            seen: vec![0; bits.div_ceil(64) as usize],
            last: vec![None; senders as usize],
            tally: Tally::default(),
        }
    }

    /// Records message `seq` of `sender`.
    pub fn record(&mut self, sender: u32, seq: u32) {
        if sender as usize >= self.last.len() || seq >= self.per_sender {
            self.tally.foreign += 1;
            return;
        }
        self.tally.received += 1;
        let bit = u64::from(sender) * u64::from(self.per_sender) + u64::from(seq);
        let (word, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
        if self.seen[word] & mask != 0 {
            self.tally.duplicates += 1;
            return;
        }
        self.seen[word] |= mask;
        self.tally.unique += 1;
        let last = &mut self.last[sender as usize];
        if last.is_some_and(|l| seq < l) {
            self.tally.reordered += 1;
        } else {
            *last = Some(seq);
        }
    }

    pub fn tally(&self) -> Tally {
        self.tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_duplicates_reordering_and_foreign_stamps() {
        let mut l = Ledger::new(2, 3);
        for (s, q) in [(0, 0), (0, 2), (0, 1), (1, 0), (1, 0), (2, 0), (0, 3)] {
            l.record(s, q);
        }
        assert_eq!(
            l.tally(),
            Tally { received: 5, unique: 4, duplicates: 1, reordered: 1, foreign: 2 }
        );
    }

    #[test]
    fn a_duplicate_cannot_hide_a_loss() {
        let mut l = Ledger::new(1, 2);
        l.record(0, 0);
        l.record(0, 0);
        let t = l.tally();
        assert_eq!((t.received, t.unique, t.duplicates), (2, 1, 1));
        let mut sum = Tally::default();
        sum += t;
        sum += t;
        assert_eq!(sum.unique, 2);
    }

    #[test]
    fn large_ledgers_use_one_bit_per_message() {
        let mut l = Ledger::new(10, 1000);
        for s in 0..10 {
            for q in 0..1000 {
                l.record(s, q);
            }
        }
        assert_eq!(l.tally().unique, 10_000);
        assert_eq!(l.seen.len(), 157);
    }
}
