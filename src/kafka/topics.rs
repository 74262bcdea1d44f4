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
