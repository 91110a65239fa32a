//! The Rollout controller's decisions, free of I/O.
//!
//! - [`machine`]: (spec, status, what the hosts serve, the last measurement, now) → (status,
//!   host moves, Events). Table-tested in `machine_tests.rs`.
//! - [`analysis`]: two Monitoring snapshots per host → traffic of the canary and baseline
//!   groups → a verdict against `spec.analysis`.
//!
//! The executor (`controller::rollout`) reads Hosts and agent metrics, calls
//! [`machine::decide`], writes `Host.spec.transport` of the hosts to move, and the status.
//! The Host controller then switches each agent through its Admin service, and its
//! `status.transports` tells the machine when a host serves the new mode.

pub mod analysis;
pub mod machine;
#[cfg(test)]
mod machine_tests;
pub mod restart;

use std::time::Duration;

/// `30s`, `5m`, `1h30m` (the CRD's duration pattern) as a [`Duration`]; `None` if malformed.
#[must_use]
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return None,
        };
        let n: u64 = digits.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        digits.clear();
    }
    (digits.is_empty() && !text.is_empty()).then(|| Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_the_schema_writes_them() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        for bad in ["", "30", "s", "3x", "99999999999999999999h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
