//! The embedded Kafka-protocol broker: librdkafka's mock cluster
//! (`rdkafka::mocking::MockCluster`) with the SPEC topics created. Real
//! wire protocol on loopback TCP, in process, no install.
//!
//! Know its limits (DESIGN.md): at most 5 MiB (and 100,000 batches) per
//! partition, older records silently dropped; transactions are protocol
//! only; no CreateTopics admin API (topics are created here); a new
//! group's first rebalance waits 3 s.

use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use super::topics;

/// A running embedded broker. Dropping it shuts the brokers down.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
    partitions: u32,
}

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot start the embedded broker: {0}")]
    Start(KafkaError),
    #[error("cannot create topic {topic}: {source}")]
    Topic { topic: String, source: KafkaError },
    #[error("partitions must be between 1 and 1024, got {0}")]
    Partitions(u32),
}

impl EmbeddedBroker {
    /// Starts `brokers` mock brokers and creates every SPEC topic, the
    /// shadow and the snapshot store's topic with `partitions` partitions
    /// (inputs, internal and outputs alike, as co-partitioning requires).
    pub fn start(brokers: u32, partitions: u32) -> Result<Self, BrokerError> {
        if !(1..=1024).contains(&partitions) {
            return Err(BrokerError::Partitions(partitions));
        }
        let cluster = MockCluster::new(brokers.max(1) as i32).map_err(BrokerError::Start)?;
        let b = EmbeddedBroker {
            cluster,
            partitions,
        };
        for t in topics::all()
            .into_iter()
            .chain([topics::SHADOW, topics::SNAPSHOTS])
        {
            b.create_topic(t, partitions)?;
        }
        Ok(b)
    }

    /// Creates one more topic.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), BrokerError> {
        self.cluster
            .create_topic(topic, partitions as i32, 1)
            .map_err(|source| BrokerError::Topic {
                topic: topic.to_string(),
                source,
            })
    }

    /// `host:port[,…]` for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The mock cluster, for fault injection in tests.
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }
}
