//! The set of protected TCP ports.

use std::fmt;
use std::ops::RangeInclusive;

/// Protected ports as sorted, disjoint, non-adjacent ranges: the form an nftables interval
/// set accepts without auto-merge, and a compact one for logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSet {
    ranges: Vec<RangeInclusive<u16>>,
}

impl PortSet {
    pub fn new(ranges: &[RangeInclusive<u16>]) -> Self {
        let mut sorted = ranges.to_vec();
        sorted.sort_by_key(|r| *r.start());
        let mut merged: Vec<RangeInclusive<u16>> = Vec::with_capacity(sorted.len());
        for range in sorted {
            match merged.last_mut() {
                Some(last) if u32::from(*range.start()) <= u32::from(*last.end()) + 1 => {
                    *last = *last.start()..=(*last.end()).max(*range.end());
                }
                _ => merged.push(range),
            }
        }
        Self { ranges: merged }
    }

    pub fn ranges(&self) -> &[RangeInclusive<u16>] {
        &self.ranges
    }

    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ranges.iter().flat_map(Clone::clone)
    }

    pub fn contains(&self, port: u16) -> bool {
        self.ranges.iter().any(|r| r.contains(&port))
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, range) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if range.start() == range.end() {
                write!(f, "{}", range.start())?;
            } else {
                write!(f, "{}-{}", range.start(), range.end())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_ranges_merge() {
        let set = PortSet::new(&[10..=20, 15..=30, 5..=5, 65535..=65535, 1..=4]);
        assert_eq!(set.ranges(), [1..=5, 10..=30, 65535..=65535]);
    }
}
