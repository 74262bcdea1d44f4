//! Topic names (SPEC §1–§2). Names are configurable; these are the defaults.

/// Default input topics, one per event family (any type is accepted on
/// any input topic).
pub const INPUTS: [&str; 4] = ["usage", "tickets", "payments", "surveys"];

pub const HEALTH: &str = "vitals.health";
pub const ALERTS_AT_RISK: &str = "vitals.alerts.at-risk";
pub const ALERTS_UPSELL: &str = "vitals.alerts.upsell";
pub const DLQ: &str = "vitals.dlq";
/// Internal: the ordered per-partition event log the fold reads.
pub const SEQUENCED: &str = "vitals.sequenced";
/// Internal: records that arrived on the wrong input partition.
pub const REPARTITION: &str = "vitals.repartition";
/// The shadow scorecard's health records and alerts (only written when a
/// `[shadow]` scorecard is configured; `vitals broker` creates it too).
pub const SHADOW: &str = "vitals.shadow";
/// The Kafka snapshot store's topic (`snapshot.topic`; used only with
/// `snapshot.store = "kafka"`; `vitals broker` creates it too).
pub const SNAPSHOTS: &str = "vitals.snapshots";

/// Every topic the service reads or writes, inputs first.
pub fn all() -> Vec<&'static str> {
    let mut v = INPUTS.to_vec();
    v.extend([
        SEQUENCED,
        REPARTITION,
        HEALTH,
        ALERTS_AT_RISK,
        ALERTS_UPSELL,
        DLQ,
    ]);
    v
}

/// Input topics with different partition counts: accounts could not be
/// owned per partition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("input topics are not co-partitioned (all must have the same partition count, keyed by account_id): {}", .counts.iter().map(|(t, n)| format!("{t} has {n}")).collect::<Vec<_>>().join(", "))]
pub struct NotCoPartitioned {
    pub counts: Vec<(String, u32)>,
}

/// Checks that every topic has the same partition count (DESIGN.md,
/// "State ownership"); returns it.
pub fn check_co_partitioned(counts: &[(String, u32)]) -> Result<u32, NotCoPartitioned> {
    match counts.first() {
        Some(&(_, n)) if n > 0 && counts.iter().all(|c| c.1 == n) => Ok(n),
        _ => Err(NotCoPartitioned {
            counts: counts.to_vec(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn co_partitioning_is_checked_and_the_error_names_topics_and_counts() {
        let ok = [("usage".to_string(), 4), ("tickets".to_string(), 4)];
        assert_eq!(check_co_partitioned(&ok), Ok(4));
        let bad = [
            ("usage".to_string(), 4),
            ("tickets".to_string(), 4),
            ("payments".to_string(), 6),
        ];
        let e = check_co_partitioned(&bad).unwrap_err().to_string();
        assert_eq!(
            e,
            "input topics are not co-partitioned (all must have the same partition count, \
             keyed by account_id): usage has 4, tickets has 4, payments has 6"
        );
        assert!(check_co_partitioned(&[]).is_err());
        assert!(check_co_partitioned(&[("usage".to_string(), 0)]).is_err());
    }
}
