//! Publishes one message to JetStream and waits for the stream's ack.
//!
//! `cargo run --example publish -- nats://127.0.0.1:4222 crm.lead.created '{"lead":1}' [msg-id]`

use async_nats::jetstream;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), async_nats::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, subject, payload, rest @ ..] = args.as_slice() else {
        eprintln!("usage: publish NATS_URL SUBJECT PAYLOAD [NATS_MSG_ID]");
        std::process::exit(2);
    };
    let js = jetstream::new(async_nats::connect(url.as_str()).await?);
    let mut headers = async_nats::HeaderMap::new();
    if let Some(id) = rest.first() {
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    }
    let ack = js
        .publish_with_headers(subject.clone(), headers, payload.clone().into())
        .await?
        .await?;
    println!("published {subject} as {}#{}", ack.stream, ack.sequence);
    Ok(())
}
