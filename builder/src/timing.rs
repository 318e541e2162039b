//! Where a build's wall time goes: a [`Timeline`] of named phases, kept
//! per built derivation so `b3 build --stats` (and the build benchmark) can
//! show the breakdown of a build step, not just its total.

use std::time::{Duration, Instant};

/// Consecutive named phases of one build step.
#[derive(Debug, Clone)]
pub struct Timeline {
    last: Instant,
    phases: Vec<(&'static str, Duration)>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::new()
    }
}

impl Timeline {
    /// A timeline whose first phase starts now.
    pub fn new() -> Timeline {
        Timeline {
            last: Instant::now(),
            phases: Vec::new(),
        }
    }

    /// Ends the current phase, calling it `name`; the next starts now.
    pub fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.add(name, now.saturating_duration_since(self.last));
        self.last = now;
    }

    /// Adds `d` to phase `name` (phases of the same name add up).
    pub fn add(&mut self, name: &'static str, d: Duration) {
        match self.phases.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => *t += d,
            None => self.phases.push((name, d)),
        }
    }

    /// Splits the phase `from` in two: `part` of it becomes phase `name`.
    pub fn split(&mut self, from: &'static str, name: &'static str, part: Duration) {
        if let Some((_, t)) = self.phases.iter_mut().find(|(n, _)| *n == from) {
            let part = part.min(*t);
            *t -= part;
            self.add(name, part);
        }
    }

    pub fn phases(&self) -> &[(&'static str, Duration)] {
        &self.phases
    }

    pub fn total(&self) -> Duration {
        self.phases.iter().map(|(_, d)| *d).sum()
    }
}

/// Per phase (in first-seen order), the median over `timelines`.
pub fn median_phases<'a>(
    timelines: impl IntoIterator<Item = &'a Timeline>,
) -> Vec<(&'static str, Duration)> {
    let mut by_name: Vec<(&'static str, Vec<Duration>)> = Vec::new();
    let mut count = 0;
    for t in timelines {
        count += 1;
        for (name, d) in t.phases() {
            match by_name.iter_mut().find(|(n, _)| n == name) {
                Some((_, v)) => v.push(*d),
                None => by_name.push((name, vec![*d])),
            }
        }
    }
    by_name
        .into_iter()
        .map(|(name, mut v)| {
            // A phase a timeline lacks counts as zero there.
            v.resize(count.max(v.len()), Duration::ZERO);
            v.sort();
            (name, v[v.len() / 2])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_add_up_split_and_give_medians() {
        let mut t = Timeline::new();
        t.add("a", Duration::from_millis(10));
        t.add("b", Duration::from_millis(5));
        t.add("a", Duration::from_millis(2));
        t.split("a", "c", Duration::from_millis(4));
        assert_eq!(
            t.phases(),
            &[
                ("a", Duration::from_millis(8)),
                ("b", Duration::from_millis(5)),
                ("c", Duration::from_millis(4)),
            ]
        );
        assert_eq!(t.total(), Duration::from_millis(17));
        let mut u = Timeline::new();
        u.add("a", Duration::from_millis(20));
        let mut w = Timeline::new();
        w.add("a", Duration::from_millis(30));
        w.add("b", Duration::from_millis(1));
        let m = median_phases([&t, &u, &w]);
        assert_eq!(m[0], ("a", Duration::from_millis(20)));
        // u has no "b": zero there, so the median of {0, 1, 5} is 1.
        assert_eq!(m[1], ("b", Duration::from_millis(1)));
    }
}
