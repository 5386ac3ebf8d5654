//! [`VClock`]: the vector clocks of R3.4, one counter per stream.
//!
//! *Invariant*: entry `(t, k)` happens-before the current point of a stream whose clock is `V`
//! iff `V[t] ≥ k`. Missing components are 0 (a stream created later has issued nothing the
//! clock could have seen).

/// A vector clock indexed by stream id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VClock(Vec<u64>);

impl VClock {
    /// Component `s` (0 if the clock has never seen stream `s`).
    #[inline]
    pub(crate) fn get(&self, s: usize) -> u64 {
        self.0.get(s).copied().unwrap_or(0)
    }

    /// Component-wise maximum with `other`.
    pub(crate) fn join(&mut self, other: &VClock) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a = (*a).max(*b);
        }
    }

    /// Raises component `s` to at least `v`.
    pub(crate) fn raise(&mut self, s: usize, v: u64) {
        if self.0.len() <= s {
            self.0.resize(s + 1, 0);
        }
        self.0[s] = self.0[s].max(v);
    }

    /// Increments component `s` and returns its new value.
    pub(crate) fn tick(&mut self, s: usize) -> u64 {
        if self.0.len() <= s {
            self.0.resize(s + 1, 0);
        }
        self.0[s] += 1;
        self.0[s]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tick_get() {
        let mut a = VClock::default();
        assert_eq!(a.get(3), 0);
        assert_eq!(a.tick(2), 1);
        let mut b = VClock::default();
        b.tick(0);
        b.tick(0);
        b.tick(4);
        a.join(&b);
        assert_eq!((a.get(0), a.get(2), a.get(4), a.get(9)), (2, 1, 1, 0));
    }
}
