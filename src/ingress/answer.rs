//! Refusals answer from one table: whichever check refuses a request, its status, its
//! text and the outcome the metrics count it under come from here, as does the `503`
//! (with `Retry-After`) that every kind of unavailability answers.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::http::text;
use crate::metrics::IngressOutcome;

/// What a `503` asks the sender to wait before retrying (most providers retry on
/// their own schedule anyway).
const RETRY_AFTER_SECS: &str = "5";

/// An outcome for the metrics and the response that says it.
pub(super) type Answer = (IngressOutcome, Response<Full<Bytes>>);

pub(super) fn answer(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    text(status, body)
}

pub(super) fn unavailable(why: &str) -> Answer {
    unavailable_saying(format!("not stored ({why}); retry later\n"))
}

/// `503` for a publish JetStream did not answer in time: the message may be stored
/// all the same, which a retry with the same id finds (`duplicate`); one without an
/// id is stored again.
pub(super) fn unconfirmed(why: &str) -> Answer {
    unavailable_saying(format!(
        "not confirmed as stored ({why}); retry later with the same id\n"
    ))
}

fn unavailable_saying(text: String) -> Answer {
    let mut r = answer(StatusCode::SERVICE_UNAVAILABLE, text);
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    (IngressOutcome::Unavailable, r)
}

/// Why a request is refused before it is published: the rows of the answer table
/// that need no NATS.
pub(super) enum Refusal {
    NotPost,
    TooLarge(usize),
    Unverified(String),
    BodyTimeout,
    BodyUnreadable,
    /// The bodies held at once would pass the budget with this one's bytes.
    NoRoom,
    NoSubject(String),
}

impl Refusal {
    pub(super) fn answer(self) -> Answer {
        match self {
            Refusal::NotPost => {
                let mut r = answer(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
                r.headers_mut()
                    .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
                (IngressOutcome::MethodNotAllowed, r)
            }
            Refusal::TooLarge(max) => (
                IngressOutcome::TooLarge,
                answer(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body larger than this route's max_body ({max} bytes)\n"),
                ),
            ),
            Refusal::Unverified(why) => (
                IngressOutcome::Unauthorized,
                answer(StatusCode::UNAUTHORIZED, format!("not verified: {why}\n")),
            ),
            Refusal::BodyTimeout => (
                IngressOutcome::BadRequest,
                answer(StatusCode::REQUEST_TIMEOUT, "body not received in time\n"),
            ),
            Refusal::BodyUnreadable => (
                IngressOutcome::BadRequest,
                answer(StatusCode::BAD_REQUEST, "body could not be read\n"),
            ),
            Refusal::NoRoom => unavailable("too many request bodies at once"),
            Refusal::NoSubject(why) => (
                IngressOutcome::BadRequest,
                answer(
                    StatusCode::BAD_REQUEST,
                    format!("cannot make the subject: {why}\n"),
                ),
            ),
        }
    }
}
