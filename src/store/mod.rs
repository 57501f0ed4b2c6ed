//! natshook's own JetStream streams and buckets: the dead letters, the delivery log and
//! the pause state replicas share. JetStream is the only store natshook has, so
//! everything kept beyond one delivery lives here.

pub mod bucket;
pub mod copy;
pub mod dead_letters;
pub mod delivery_log;
pub mod forgotten;
pub mod pause_state;
pub mod pull_stream;
pub mod registry;
pub mod replicas;
pub mod stream_subjects;
pub mod unattempted;
pub mod work_stream;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures_util::StreamExt;

/// Why a stream could not be read; the text is the client's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReadError(String);

fn read_error(e: impl std::fmt::Display) -> ReadError {
    ReadError(e.to_string())
}

/// Whether a stream lookup failed because there is no such stream (as against NATS
/// not answering): natshook makes its own streams and buckets again when they are
/// gone, and reads a missing one as empty.
pub fn stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref j) if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// The stream sequence `consumer` on `stream` has acked everything up to; 0 when there
/// is no such consumer (nothing acked). The error text names the consumer.
pub async fn ack_floor(
    stream: &jetstream::stream::Stream<()>,
    consumer: &str,
) -> Result<u64, String> {
    match stream.consumer_info(consumer).await {
        Ok(info) => Ok(info.ack_floor.stream_sequence),
        Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => Ok(0),
        Err(e) => Err(format!("consumer {consumer}: {e}")),
    }
}

/// Why a consumer was not reset.
#[derive(Debug)]
pub enum ResetError {
    /// The server said no (an error reply): asking again gets the same answer.
    Refused(String),
    /// No answer (a timeout, no responders): it may work next time.
    Failed(String),
}

/// Resets `consumer` of `stream` (nats-server 2.14+): it forgets what it delivered and
/// acked, and delivers again from stream sequence `from` on, keeping its name and
/// config. Acks of deliveries made before are ignored afterwards, which is what makes
/// it safe where deleting and making the consumer again would race those who make it.
/// Returns the sequence the server reset it to.
pub async fn reset_consumer(
    js: &jetstream::Context,
    stream: &str,
    consumer: &str,
    from: u64,
) -> Result<u64, ResetError> {
    #[derive(serde::Deserialize)]
    struct Reset {
        reset_seq: u64,
    }
    let reply: jetstream::response::Response<Reset> = js
        .request(
            format!("CONSUMER.RESET.{stream}.{consumer}"),
            &serde_json::json!({ "seq": from }),
        )
        .await
        .map_err(|e| ResetError::Failed(format!("resetting consumer {consumer}: {e}")))?;
    match reply {
        jetstream::response::Response::Ok(r) => Ok(r.reset_seq),
        jetstream::response::Response::Err { error } => Err(ResetError::Refused(format!(
            "resetting consumer {consumer}: {error}"
        ))),
    }
}

/// Interior deletes listed by [`held_from`]; a stream with more has them counted only
/// (the list is one reply, and megabytes of sequences are not worth reading for this).
const DELETES_LISTED: u64 = 10_000;

/// What a stream still holds of its messages from a sequence on.
#[derive(Debug, PartialEq, Eq)]
pub enum HeldFrom {
    /// Every one.
    All,
    /// Every one but some deleted from its interior (by a per-subject limit, a message
    /// TTL, a delete): these, or `None` when there are more than are listed.
    AllBut(Option<BTreeSet<u64>>),
    /// Not every one, and which are gone is unknown: some dropped at its head under
    /// its limits, or acked away under interest or work-queue retention.
    NotAll,
}

/// What `stream` still holds of its messages from sequence `from` on.
pub async fn held_from(
    js: &jetstream::Context,
    stream: &str,
    from: u64,
) -> Result<HeldFrom, String> {
    let info = |deleted_details: bool| async move {
        let reply: jetstream::response::Response<jetstream::stream::Info> = js
            .request(
                format!("STREAM.INFO.{stream}"),
                &serde_json::json!({ "deleted_details": deleted_details }),
            )
            .await
            .map_err(|e| format!("stream {stream}: {e}"))?;
        match reply {
            jetstream::response::Response::Ok(info) => Ok(info),
            jetstream::response::Response::Err { error } => {
                Err(format!("stream {stream}: {error}"))
            }
        }
    };
    let brief = info(false).await?;
    if brief.config.retention != jetstream::stream::RetentionPolicy::Limits
        || brief.state.first_sequence > from
    {
        return Ok(HeldFrom::NotAll);
    }
    match brief.state.deleted_count.unwrap_or(0) {
        0 => Ok(HeldFrom::All),
        n if n > DELETES_LISTED => Ok(HeldFrom::AllBut(None)),
        _ => {
            let detailed = info(true).await?;
            if detailed.state.first_sequence > from {
                return Ok(HeldFrom::NotAll);
            }
            let deleted: BTreeSet<u64> = (detailed.state.deleted.unwrap_or_default())
                .into_iter()
                .filter(|&d| d >= from)
                .collect();
            Ok(match deleted.is_empty() {
                true => HeldFrom::All,
                false => HeldFrom::AllBut(Some(deleted)),
            })
        }
    }
}

/// Every consumer of `stream` by name, listed in pages of full consumer info.
pub async fn consumer_infos(
    js: &jetstream::Context,
    stream: &str,
) -> Result<HashMap<String, consumer::Info>, ReadError> {
    let stream = js.get_stream_no_info(stream).await.map_err(read_error)?;
    let mut infos = HashMap::new();
    let mut list = stream.consumers();
    while let Some(info) = list.next().await {
        let info = info.map_err(read_error)?;
        infos.insert(info.name.clone(), info);
    }
    Ok(infos)
}

/// One message read from a stream.
pub struct Stored {
    pub sequence: u64,
    pub payload: Bytes,
}

/// The messages of a stream on one subject filter, oldest first, until none is
/// pending. See [`read_to_end`].
pub struct ToEnd {
    messages: consumer::pull::Ordered,
    idle: Duration,
    done: bool,
}

/// Reads `stream` on `filter_subject`, from stream sequence `from` on (`0`: from the
/// start), through an ordered (ephemeral) consumer until no message is pending, or
/// none arrives for `idle`: an empty or vanished stream ends the read after `idle`
/// instead of waiting forever. Nothing is acked or changed.
pub async fn read_to_end(
    js: &jetstream::Context,
    stream: &str,
    filter_subject: String,
    from: u64,
    idle: Duration,
) -> Result<ToEnd, ReadError> {
    let stream = js.get_stream(stream).await.map_err(read_error)?;
    let deliver_policy = match from {
        0 | 1 => consumer::DeliverPolicy::All,
        start_sequence => consumer::DeliverPolicy::ByStartSequence { start_sequence },
    };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject,
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(read_error)?;
    let messages = consumer.messages().await.map_err(read_error)?;
    Ok(ToEnd {
        messages,
        idle,
        done: false,
    })
}

impl ToEnd {
    /// The next message; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Stored>, ReadError> {
        if self.done {
            return Ok(None);
        }
        let msg = match tokio::time::timeout(self.idle, self.messages.next()).await {
            Err(_) | Ok(None) => {
                self.done = true;
                return Ok(None);
            }
            Ok(Some(Err(e))) => return Err(read_error(e)),
            Ok(Some(Ok(m))) => m,
        };
        let (sequence, pending) = {
            let info = msg.info().map_err(read_error)?;
            (info.stream_sequence, info.pending)
        };
        self.done = pending == 0;
        Ok(Some(Stored {
            sequence,
            payload: msg.message.payload,
        }))
    }
}
