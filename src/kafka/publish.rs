//! Publishing events to the input topics (`vitals simulate --brokers`):
//! each event goes to its family's topic (SPEC §1 defaults, or the names
//! of `[kafka.topics]`), keyed by `account_id`, partitioned with murmur2
//! like the Java client, as JSON.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::codec::json;
use crate::config::TopicNames;
use crate::core::Event;

use super::topics;

/// The default input topic for an event type (SPEC §1); types marked
/// "[any]" go to `usage`.
pub fn topic_for(type_name: &str) -> &'static str {
    match type_name.split('.').next() {
        Some("ticket") => topics::INPUTS[1],
        Some("subscription") | Some("invoice") => topics::INPUTS[2],
        Some("survey") => topics::INPUTS[3],
        _ => topics::INPUTS[0],
    }
}

/// [`topic_for`] with the topic names of a config.
pub fn topic_in<'a>(names: &'a TopicNames, type_name: &str) -> &'a str {
    let i = topics::INPUTS
        .iter()
        .position(|&t| t == topic_for(type_name))
        .unwrap_or(0);
    names.inputs()[i]
}

/// An idempotent producer for the input topics.
pub fn producer(brokers: &str) -> Result<FutureProducer, KafkaError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    producer_with(c)
}

/// [`producer`] over `base`: brokers and client settings (security) of a
/// config.
pub fn producer_with(mut base: ClientConfig) -> Result<FutureProducer, KafkaError> {
    base.set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
}

/// Sends `events` in order (at most `in_flight` awaiting delivery, at most
/// `rate` per second unless 0) and waits for every delivery. Returns how
/// many were delivered.
pub async fn publish(
    producer: &FutureProducer,
    topics: &TopicNames,
    events: impl IntoIterator<Item = Event<'static>>,
    in_flight: usize,
    rate: u64,
) -> Result<u64, KafkaError> {
    let mut pending = std::collections::VecDeque::new();
    let mut n = 0u64;
    let start = tokio::time::Instant::now();
    for (i, ev) in events.into_iter().enumerate() {
        if rate > 0 && i % 100 == 0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
        let payload = json::encode(&ev);
        let key = ev.account_id.to_string();
        let fut = producer.send_result(
            FutureRecord::to(topic_in(topics, ev.type_name()))
                .key(&key)
                .payload(&payload),
        );
        let fut = match fut {
            Ok(f) => f,
            Err((e, _)) => return Err(e),
        };
        pending.push_back(fut);
        if pending.len() >= in_flight {
            let f = pending.pop_front().expect("not empty");
            deliver(f).await?;
            n += 1;
        }
    }
    while let Some(f) = pending.pop_front() {
        deliver(f).await?;
        n += 1;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(n)
}

async fn deliver(f: rdkafka::producer::DeliveryFuture) -> Result<(), KafkaError> {
    match f.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e),
        Err(_) => Err(KafkaError::Canceled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_go_to_the_configured_input_topics() {
        let mut names = TopicNames::default();
        assert_eq!(topic_in(&names, "ticket.opened"), "tickets");
        names.tickets = "prod.tickets".into();
        names.usage = "prod.usage".into();
        assert_eq!(topic_in(&names, "ticket.opened"), "prod.tickets");
        assert_eq!(topic_in(&names, "usage.login"), "prod.usage");
        assert_eq!(topic_in(&names, "account.updated"), "prod.usage");
        assert_eq!(topic_in(&names, "invoice.paid"), "payments");
        assert_eq!(topic_in(&names, "survey.nps"), "surveys");
    }
}
