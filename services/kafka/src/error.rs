//! How librdkafka's errors become the event log's [`LogError`]: a failure
//! to reach or use the brokers is `Unavailable` and names the broker list,
//! so an operator sees which cluster failed; and the commit errors that
//! only mean a rebalance took the partitions away are told apart from real
//! failures, because the stage answers them differently.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tern_core::log::LogError;

pub(crate) fn unavailable(brokers: &str) -> impl Fn(KafkaError) -> LogError + '_ {
    move |e| LogError::Unavailable(format!("Kafka at {brokers}: {e}"))
}

/// Commit errors that only mean "this consumer no longer owns the partition".
pub(crate) fn lost_ownership(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::FencedMemberEpoch
                | RDKafkaErrorCode::StaleMemberEpoch
        )
    )
}
