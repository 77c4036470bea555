//! The set of protected TCP ports, and how `--ports` and the `ports` key spell its items.

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

/// One item of `--ports`: `P` or `LO-HI`, 1 ≤ port ≤ 65535.
pub fn parse_port_range(item: &str) -> Result<RangeInclusive<u16>, String> {
    let item = item.trim();
    let (lo, hi) = match item.split_once('-') {
        Some((lo, hi)) => (parse_port(lo)?, parse_port(hi)?),
        None => {
            let port = parse_port(item)?;
            (port, port)
        }
    };
    if lo > hi {
        return Err(format!(
            "port range {lo}-{hi} is reversed (write {hi}-{lo})"
        ));
    }
    Ok(lo..=hi)
}

fn parse_port(text: &str) -> Result<u16, String> {
    let text = text.trim();
    // Parse wide so that 70000 is reported as out of range rather than as "not a number".
    let port: u64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a port number"))?;
    match port {
        0 => Err("port 0 cannot be protected (ports are 1-65535)".to_owned()),
        1..=65535 => Ok(port as u16),
        _ => Err(format!("port {port} is out of range (ports are 1-65535)")),
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
