//! One message as frames: `basic.publish` (mandatory), its content header and its body frames,
//! appended to the connection's write buffer. Hand-written for our fixed property set rather
//! than built through amq-protocol's `AMQPProperties` + `gen_frame`, which allocate a property
//! table, two flag names and a body copy per message; the tests pin the bytes to what
//! amq-protocol's parser reads back.

/// The properties every message carries besides persistent JSON: the alert id and the spool
/// seq. Kept this few on purpose: RabbitMQ takes a fifth to a third fewer messages a second on
/// one channel once a message's property block (flags included) is over 64 bytes (measured:
/// docs/PERFORMANCE.md, "The property block"), and `content_type`, `delivery_mode` and a
/// 32-digit `message_id` come to 60 with a `correlation_id` of up to 6 digits, 64 up to 10. The spool time
/// and the schema, sent before as `timestamp` and a header table, are in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Properties<'a> {
    /// The alert id; `None` for a record whose id could not be read. At most 255 bytes.
    pub(crate) message_id: Option<&'a str>,
    /// The spool record's seq, in decimal as the `correlation_id` property: how a consumer
    /// tells a repeated publish from a line spooled twice, and how a return is matched to its
    /// message.
    pub(crate) spool_seq: u64,
}

pub(crate) const CONTENT_TYPE: &str = "application/json";

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
pub(super) const FRAME_END: u8 = 0xCE;
/// Type, channel and size before a frame's payload, and the end octet after it.
pub(super) const FRAME_OVERHEAD: usize = 8;
const CLASS_BASIC: u16 = 60;
const METHOD_PUBLISH: u16 = 40;

// Property flags (AMQP 0-9-1, basic class, most significant bit first).
const FLAG_CONTENT_TYPE: u16 = 1 << 15;
const FLAG_DELIVERY_MODE: u16 = 1 << 12;
const FLAG_CORRELATION_ID: u16 = 1 << 10;
const FLAG_MESSAGE_ID: u16 = 1 << 7;

/// Appends `basic.publish` of `body` to `exchange` with `routing_key` (mandatory, not
/// immediate), its content header and its body, cut into frames of at most `frame_max` bytes,
/// on `channel`. The names are at most 255 bytes each (the caller's short strings).
pub(crate) fn publish(
    out: &mut Vec<u8>,
    channel: u16,
    frame_max: u32,
    exchange: &str,
    routing_key: &str,
    props: &Properties<'_>,
    body: &[u8],
) {
    let at = begin(out, FRAME_METHOD, channel);
    out.extend_from_slice(&CLASS_BASIC.to_be_bytes());
    out.extend_from_slice(&METHOD_PUBLISH.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // reserved (ticket)
    short_string(out, exchange);
    short_string(out, routing_key);
    out.push(0b01); // mandatory, not immediate
    end(out, at);

    let at = begin(out, FRAME_HEADER, channel);
    out.extend_from_slice(&CLASS_BASIC.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // weight
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    let mut flags = FLAG_CONTENT_TYPE | FLAG_DELIVERY_MODE | FLAG_CORRELATION_ID;
    if props.message_id.is_some() {
        flags |= FLAG_MESSAGE_ID;
    }
    out.extend_from_slice(&flags.to_be_bytes());
    // The properties present, in the order of their flags.
    short_string(out, CONTENT_TYPE);
    out.push(2); // delivery mode: persistent
    short_string(out, itoa::Buffer::new().format(props.spool_seq));
    if let Some(id) = props.message_id {
        short_string(out, id);
    }
    end(out, at);

    // frame_max counts the whole frame; it is at least 4096 (the broker refuses less).
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    for part in body.chunks(chunk) {
        let at = begin(out, FRAME_BODY, channel);
        out.extend_from_slice(part);
        end(out, at);
    }
}

/// Starts a frame; returns where its size goes.
fn begin(out: &mut Vec<u8>, kind: u8, channel: u16) -> usize {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.len() - 4
}

/// Ends the frame begun at `at`: its size, then the end octet.
fn end(out: &mut Vec<u8>, at: usize) {
    let size = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
    out.push(FRAME_END);
}

fn short_string(out: &mut Vec<u8>, s: &str) {
    debug_assert!(s.len() <= 255, "short string of {} bytes", s.len());
    let s = &s.as_bytes()[..s.len().min(255)];
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

#[cfg(test)]
mod tests {
    use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, parse_frame};
    use amq_protocol::protocol::{AMQPClass, BasicProperties, basic};

    use super::*;

    /// Every frame in `bytes`, through amq-protocol's parser; all bytes must be used.
    fn frames(mut bytes: &[u8]) -> Vec<AMQPFrame> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (rest, frame) = parse_frame(bytes).expect("a frame");
            out.push(frame);
            bytes = rest;
        }
        out
    }

    fn props(id: Option<&str>) -> Properties<'_> {
        Properties {
            message_id: id,
            spool_seq: 42,
        }
    }

    #[test]
    fn publish_reads_back_through_amq_protocol() {
        let mut out = Vec::new();
        publish(
            &mut out,
            3,
            4096,
            "iem",
            "iem.error.s3",
            &props(Some("id-1")),
            b"{}",
        );
        let expected = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_delivery_mode(2)
            .with_correlation_id("42".into())
            .with_message_id("id-1".into());
        assert_eq!(
            frames(&out),
            [
                AMQPFrame::Method(
                    3,
                    AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                        exchange: "iem".into(),
                        routing_key: "iem.error.s3".into(),
                        mandatory: true,
                        immediate: false,
                    }))
                ),
                AMQPFrame::Header(
                    3,
                    AMQPContentHeader {
                        class_id: 60,
                        body_size: 2,
                        properties: expected,
                    }
                ),
                AMQPFrame::Body(3, b"{}".to_vec()),
            ]
        );
    }

    /// The whole property block, flags included, of an alert with a 32-digit id and a
    /// 10-digit seq stays within 64 bytes (see `Properties`).
    #[test]
    fn the_property_block_of_an_alert_fits_64_bytes() {
        let mut out = Vec::new();
        let id = "0123456789abcdef0123456789abcdef";
        let p = Properties {
            message_id: Some(id),
            spool_seq: 9_999_999_999,
        };
        publish(&mut out, 1, 4096, "iem", "iem.error.s3", &p, b"{}");
        let AMQPFrame::Header(1, header) = &frames(&out)[1] else {
            panic!("a header frame")
        };
        assert_eq!(
            header.properties.correlation_id(),
            &Some("9999999999".into())
        );
        // The header frame: 7 bytes of frame header, class, weight and body size (12), the
        // property block, the end octet.
        let method = out.iter().position(|&b| b == FRAME_END).unwrap() + 1;
        let size = u32::from_be_bytes(out[method + 3..method + 7].try_into().unwrap()) as usize;
        assert_eq!(size - 12, 64, "{size}");
    }

    #[test]
    fn a_message_without_an_id_has_no_message_id_and_an_empty_body_no_body_frame() {
        let mut out = Vec::new();
        publish(&mut out, 1, 4096, "", "k", &props(None), b"");
        let got = frames(&out);
        assert_eq!(got.len(), 2, "{got:?}");
        let AMQPFrame::Header(1, header) = &got[1] else {
            panic!("{got:?}")
        };
        assert_eq!(header.body_size, 0);
        assert_eq!(header.properties.message_id(), &None);
        assert_eq!(header.properties.delivery_mode(), &Some(2));
        assert_eq!(header.properties.correlation_id(), &Some("42".into()));
        assert_eq!(header.properties.headers(), &None, "no header table");
    }

    #[test]
    fn bodies_are_cut_at_frame_max() {
        let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        for frame_max in [4096u32, 4104, 10_008, 131_072] {
            let mut out = Vec::new();
            publish(&mut out, 7, frame_max, "x", "y", &props(Some("a")), &body);
            let got = frames(&out);
            let parts: Vec<Vec<u8>> = got[2..]
                .iter()
                .map(|f| match f {
                    AMQPFrame::Body(7, part) => part.clone(),
                    other => panic!("{other:?}"),
                })
                .collect();
            let chunk = frame_max as usize - 8;
            assert_eq!(parts.len(), body.len().div_ceil(chunk), "{frame_max}");
            assert!(parts.iter().all(|p| p.len() <= chunk), "{frame_max}");
            assert_eq!(parts.concat(), body, "{frame_max}");
        }
        // The frame as a whole (8 bytes around the payload) is what frame_max bounds.
        let mut out = Vec::new();
        publish(&mut out, 1, 4096, "x", "y", &props(None), &[0; 4088]);
        assert_eq!(frames(&out).len(), 3);
        out.clear();
        publish(&mut out, 1, 4096, "x", "y", &props(None), &[0; 4089]);
        assert_eq!(frames(&out).len(), 4);
    }

    #[test]
    fn messages_follow_each_other_in_the_buffer() {
        let mut out = Vec::new();
        for seq in 1..=3 {
            let p = Properties {
                spool_seq: seq,
                ..props(Some("id"))
            };
            publish(&mut out, 1, 4096, "iem", "k", &p, b"body");
        }
        let seqs: Vec<String> = frames(&out)
            .iter()
            .filter_map(|f| match f {
                AMQPFrame::Header(_, h) => {
                    Some(h.properties.correlation_id().as_ref()?.to_string())
                }
                _ => None,
            })
            .collect();
        assert_eq!(seqs, ["1", "2", "3"], "three messages in order");
    }
}
