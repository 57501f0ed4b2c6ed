//! A message's dead letter: the record (with the last attempt, the payload as the
//! record can hold it, the message's headers), its write, then the ack and the
//! operator event. A write that fails leaves the message to come back and the record
//! kept for then ([`crate::worker::unwritten`]).

use std::time::SystemTime;

use async_nats::jetstream::{self, message::AckKind, stream::RawMessageErrorKind};

use super::{Routed, Worker};
use crate::delivery::AttemptResult;
use crate::events::{DeadLetterEvent, EventFacts};
use crate::metrics::Outcome;
use crate::store::copy::header_pairs;
use crate::store::dead_letters::DeadLetter;
use crate::time;
use crate::worker::unwritten::Unwritten;

impl Worker {
    /// Writes the dead letter, then acks and raises the operator event; if the write
    /// fails, the message comes back after the first retry delay and is dead-lettered
    /// then with the record kept ([`crate::worker::unwritten`]). `(code, reason)`: the event's
    /// reason code and the record's reason.
    pub(super) async fn dead_letter(
        &self,
        m: &Routed<'_>,
        attempts: u32,
        last: Option<&AttemptResult>,
        (code, reason): (&'static str, &str),
    ) {
        let record = self.dead_letter_record(m, attempts, last, reason);
        let unwritten = Unwritten {
            record,
            code,
            last_result: last.map(|r| r.status.label()),
        };
        self.write_dead_letter(m, unwritten).await;
    }

    pub(super) async fn write_dead_letter(&self, m: &Routed<'_>, unwritten: Unwritten) {
        self.write_dead_letter_of(m, unwritten, &m.msg.payload)
            .await
    }

    /// [`Worker::write_dead_letter`] with the payload to keep in the record.
    async fn write_dead_letter_of(&self, m: &Routed<'_>, unwritten: Unwritten, payload: &[u8]) {
        if self
            .publish_dead_letter(m, unwritten.clone(), payload)
            .await
        {
            self.ack(m.msg, AckKind::Ack).await;
            if m.meta.unattempted > 0 {
                Box::pin(self.forget_unattempted(m.msg)).await;
            }
            return;
        }
        // Only a message out of attempts comes back past `max_attempts` to the kept
        // record; the others are dead-lettered anew by the path that refused them.
        if unwritten.code == "max_attempts" {
            let (stream, sequence) = (&m.meta.stream, m.meta.sequence);
            (self.shared.unwritten).keep(&self.endpoint.name, stream, sequence, unwritten);
        }
        self.count_delivery(m, Outcome::Retry);
        self.ack(m.msg, AckKind::Nak(Some(self.endpoint.retry_delay(1))))
            .await;
    }

    /// Dead-letters a source message the fan-out could not copy for this endpoint
    /// (the copy, with natshook's headers, would exceed the server's `max_payload`),
    /// so that it neither comes back forever nor holds up the other endpoints' copies.
    /// `attempts`: those it had before (on a former consumer of the endpoint). The
    /// fan-out settles the source message; `false` when the record could not be
    /// written (the fan-out NAKs it then).
    pub async fn dead_letter_uncopied(
        &self,
        msg: &jetstream::Message,
        attempts: u32,
        reason: &str,
    ) -> bool {
        let Ok(m) = self.route(msg) else {
            // Not one this endpoint delivers after all: nothing to dead-letter.
            return true;
        };
        let unwritten = Unwritten {
            record: DeadLetter {
                once_per_message: true,
                ..self.dead_letter_record(&m, attempts, None, reason)
            },
            code: "undeliverable",
            last_result: None,
        };
        self.publish_dead_letter(&m, unwritten, &msg.payload).await
    }

    /// Dead-letters the stand-in of a copy the fan-out could not store while this
    /// endpoint was disabled ([`crate::store::copy::uncopied_headers`]), with the source message's
    /// payload read from the source stream: a replay sends what the copy would have.
    /// One the source stream no longer holds (its limits removed it, or it is another
    /// stream now, numbering from 1 again) goes as the endpoint's other waiting copies
    /// of such messages go: acked, with a warning, since a record without its payload
    /// would replay as an empty request.
    pub(super) async fn dead_letter_stand_in(&self, m: &Routed<'_>, reason: &str) {
        let stored = async {
            let stream = (self.shared.js.get_stream_no_info(&m.meta.stream).await)
                .map_err(|e| e.to_string())?;
            match stream.get_raw_message(m.meta.sequence).await {
                Ok(source) => Ok(Some(source)),
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        };
        let source = match stored.await {
            Ok(source) => source.filter(|s| {
                s.subject.as_str() == m.meta.subject
                    && time::unix_nanos(SystemTime::from(s.time))
                        == time::unix_nanos(m.meta.published)
            }),
            Err(e) => {
                tracing::warn!(endpoint = %self.endpoint.name, id = %m.id, error = %e, "the source message of a copy that did not fit cannot be read yet; it comes back");
                self.ack(m.msg, AckKind::Nak(Some(self.endpoint.retry_delay(1))))
                    .await;
                return;
            }
        };
        let Some(source) = source else {
            tracing::warn!(endpoint = %self.endpoint.name, id = %m.id, sequence = m.meta.sequence, reason, "a message whose copy did not fit is no longer in the source stream: nothing to dead-letter");
            self.ack(m.msg, AckKind::Ack).await;
            return;
        };
        let unwritten = Unwritten {
            record: DeadLetter {
                once_per_message: true,
                ..self.dead_letter_record(m, 0, None, reason)
            },
            code: "undeliverable",
            last_result: None,
        };
        self.write_dead_letter_of(m, unwritten, &source.payload)
            .await;
    }

    /// Writes the record and, once written, counts it and raises the operator event;
    /// the caller settles the message.
    async fn publish_dead_letter(
        &self,
        m: &Routed<'_>,
        unwritten: Unwritten,
        payload: &[u8],
    ) -> bool {
        let (id, event) = (m.id.as_str(), m.event.as_str());
        let (attempts, last_status) = (unwritten.record.attempts, unwritten.record.last_status);
        let reason = unwritten.record.reason.clone();
        let reason = reason.as_str();
        let (code, unwritten_result) = (unwritten.code, unwritten.last_result);
        let once_per_message = unwritten.record.once_per_message;
        match self
            .shared
            .dead_letters
            .publish(unwritten.record, payload)
            .await
        {
            // Written already by whoever came upon the message first, who counted it.
            Ok(false) if once_per_message => {
                tracing::debug!(endpoint = %self.endpoint.name, id, reason, "dead letter already written");
                true
            }
            Ok(_) => {
                tracing::warn!(endpoint = %self.endpoint.name, id, event, reason, "dead-lettered");
                self.metrics.dead_letters.inc();
                self.count_delivery(m, Outcome::DeadLetter);
                self.shared.events.dead_letter(&DeadLetterEvent {
                    facts: EventFacts::now(&self.endpoint.name, m.tenant.as_deref(), code, reason),
                    id: m.id.clone(),
                    event: m.event.clone(),
                    subject: m.meta.subject.clone(),
                    stream_sequence: m.meta.sequence,
                    attempts,
                    last_status,
                    last_result: unwritten_result,
                });
                true
            }
            Err(e) => {
                tracing::error!(endpoint = %self.endpoint.name, id, error = %e, "dead-letter publish failed; the message comes back and is dead-lettered then");
                false
            }
        }
    }

    fn dead_letter_record(
        &self,
        m: &Routed<'_>,
        attempts: u32,
        last: Option<&AttemptResult>,
        reason: &str,
    ) -> DeadLetter {
        let mut headers = std::collections::BTreeMap::<String, Vec<String>>::new();
        for (name, value) in header_pairs(m.msg, m.meta.copy) {
            headers
                .entry(name.to_string())
                .or_default()
                .push(value.to_string());
        }
        DeadLetter {
            endpoint: self.endpoint.name.clone(),
            event: Some(m.event.clone()),
            tenant: m.tenant.clone(),
            id: m.id.clone(),
            subject: m.meta.subject.clone(),
            stream: m.meta.stream.clone(),
            stream_sequence: m.meta.sequence,
            published: time::rfc3339_millis(m.meta.published),
            attempts,
            last_status: last.and_then(|r| r.http_status),
            last_error: last.map(|r| r.describe()),
            response_body: last.map(AttemptResult::response_text).unwrap_or_default(),
            reason: reason.to_string(),
            // Filled by `publish`: inline, or a reference when the record would not fit.
            payload: String::new(),
            payload_object: None,
            headers,
            headers_truncated: false,
            dead_lettered_at: time::rfc3339_millis(SystemTime::now()),
            once_per_message: false,
        }
    }
}
