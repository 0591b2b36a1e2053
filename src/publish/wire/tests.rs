//! The connection against a scripted broker on the other end of an in-memory pipe: the
//! handshake's negotiation, login refusals, events from partial frames, returns, replaced
//! channels and channel errors. (The real broker: tests/publish.rs.)

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext, gen_frame, parse_frame};
use amq_protocol::protocol::{
    AMQPClass, BasicProperties, basic, channel as chan, confirm, connection,
};
use amq_protocol::types::{AMQPValue, FieldTable};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

/// The broker's end of the pipe.
struct Peer {
    io: DuplexStream,
    buf: Vec<u8>,
}

impl Peer {
    async fn read(&mut self) -> AMQPFrame {
        loop {
            if let Ok((rest, frame)) = parse_frame(self.buf.as_slice()) {
                let used = self.buf.len() - rest.len();
                self.buf.drain(..used);
                return frame;
            }
            let n = self.io.read_buf(&mut self.buf).await.unwrap();
            assert!(n > 0, "the client hung up");
        }
    }

    async fn method(&mut self) -> (u16, AMQPClass) {
        match self.read().await {
            AMQPFrame::Method(ch, m) => (ch, m),
            other => panic!("expected a method, got {other:?}"),
        }
    }

    fn encode(frame: &AMQPFrame) -> Vec<u8> {
        let (buf, _) = gen_frame(frame)(WriteContext::from(Vec::new()))
            .unwrap()
            .into_inner();
        buf
    }

    async fn send(&mut self, frame: AMQPFrame) {
        self.io.write_all(&Self::encode(&frame)).await.unwrap();
    }

    async fn send_method(&mut self, ch: u16, m: AMQPClass) {
        self.send(AMQPFrame::Method(ch, m)).await;
    }

    /// The server's side of the handshake up to tune-ok, with `tune` proposed; returns what
    /// the client answered (tune-ok) and the login it sent.
    async fn handshake(&mut self, tune: connection::Tune) -> (connection::TuneOk, Vec<u8>) {
        let mut header = [0u8; 8];
        self.io.read_exact(&mut header).await.unwrap();
        assert_eq!(&header, b"AMQP\x00\x00\x09\x01");
        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: FieldTable::default(),
                mechanisms: "AMQPLAIN PLAIN".into(),
                locales: "en_US".into(),
            })),
        )
        .await;
        let (_, m) = self.method().await;
        let AMQPClass::Connection(connection::AMQPMethod::StartOk(ok)) = m else {
            panic!("{m:?}")
        };
        assert_eq!(ok.mechanism.as_str(), "PLAIN");
        let caps = match ok.client_properties.inner().get("capabilities") {
            Some(AMQPValue::FieldTable(t)) => t.clone(),
            other => panic!("{other:?}"),
        };
        for cap in [
            "publisher_confirms",
            "connection.blocked",
            "authentication_failure_close",
        ] {
            assert_eq!(
                caps.inner().get(cap),
                Some(&AMQPValue::Boolean(true)),
                "{cap}"
            );
        }
        let login = ok.response.as_bytes().to_vec();
        self.send_method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(tune)))
            .await;
        let (_, m) = self.method().await;
        let AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune_ok)) = m else {
            panic!("{m:?}")
        };
        (tune_ok, login)
    }

    /// Open (vhost checked) and open-ok.
    async fn open(&mut self, vhost: &str) {
        let (_, m) = self.method().await;
        let AMQPClass::Connection(connection::AMQPMethod::Open(open)) = m else {
            panic!("{m:?}")
        };
        assert_eq!(open.virtual_host.as_str(), vhost);
        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
        )
        .await;
    }

    /// channel.open + confirm.select on the expected channel, both answered.
    async fn channel(&mut self, id: u16) {
        let (ch, m) = self.method().await;
        assert_eq!(ch, id);
        assert!(
            matches!(m, AMQPClass::Channel(chan::AMQPMethod::Open(_))),
            "{m:?}"
        );
        self.send_method(
            id,
            AMQPClass::Channel(chan::AMQPMethod::OpenOk(chan::OpenOk {})),
        )
        .await;
        let (ch, m) = self.method().await;
        assert_eq!(ch, id);
        assert!(
            matches!(m, AMQPClass::Confirm(confirm::AMQPMethod::Select(_))),
            "{m:?}"
        );
        self.send_method(
            id,
            AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
        )
        .await;
    }
}

fn pipe() -> (Box<dyn Io>, Peer) {
    let (client, server) = tokio::io::duplex(1 << 20);
    (
        Box::new(client),
        Peer {
            io: server,
            buf: Vec::new(),
        },
    )
}

fn params(frame_max: u32, heartbeat: Option<u16>) -> Params<'static> {
    Params {
        user: "iem",
        password: "s3cret",
        vhost: "/",
        frame_max,
        heartbeat,
        channel_max: None,
    }
}

fn tune(frame_max: u32, heartbeat: u16) -> connection::Tune {
    connection::Tune {
        channel_max: 2047,
        frame_max,
        heartbeat,
    }
}

/// A connection open on channel 1, and the peer.
async fn connected() -> (Connection, Peer) {
    let (io, mut peer) = pipe();
    let server = async {
        peer.handshake(tune(131_072, 60)).await;
        peer.open("/").await;
        peer.channel(1).await;
        peer
    };
    let client = async {
        let mut c = Connection::open(io, params(4096, None)).await.unwrap();
        c.open_channel().await.unwrap();
        c
    };
    let (c, peer) = tokio::join!(client, server);
    (c, peer)
}

#[tokio::test]
async fn the_handshake_takes_the_smaller_frame_max_and_the_urls_heartbeat() {
    let (io, mut peer) = pipe();
    let server = async {
        let (ok, login) = peer.handshake(tune(131_072, 60)).await;
        peer.open("/").await;
        (ok, login)
    };
    let (conn, (ok, login)) = tokio::join!(Connection::open(io, params(4096, Some(5))), server);
    let conn = conn.unwrap();
    assert_eq!(login, b"\0iem\0s3cret");
    assert_eq!(
        (ok.frame_max, ok.heartbeat, ok.channel_max),
        (4096, 5, 2047)
    );
    assert_eq!(conn.frame_max(), 4096);
    assert_eq!(conn.heartbeat(), Some(Duration::from_secs(5)));

    // The broker's smaller frame_max wins; without a heartbeat in the URL, the broker's.
    let (io, mut peer) = pipe();
    let server = async {
        let (ok, _) = peer.handshake(tune(8192, 30)).await;
        peer.open("/").await;
        ok
    };
    let (conn, ok) = tokio::join!(Connection::open(io, params(16_384, None)), server);
    assert_eq!((ok.frame_max, ok.heartbeat), (8192, 30));
    assert_eq!(conn.unwrap().heartbeat(), Some(Duration::from_secs(30)));
}

#[tokio::test]
async fn a_refused_login_is_a_clear_error() {
    // authentication_failure_close: the broker says why.
    let (io, mut peer) = pipe();
    let server = async {
        let mut header = [0u8; 8];
        peer.io.read_exact(&mut header).await.unwrap();
        peer.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: FieldTable::default(),
                mechanisms: "PLAIN".into(),
                locales: "en_US".into(),
            })),
        )
        .await;
        peer.method().await;
        peer.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: 403,
                reply_text: "ACCESS_REFUSED - Login was refused".into(),
                class_id: 0,
                method_id: 0,
            })),
        )
        .await;
        peer
    };
    let (got, _peer) = tokio::join!(Connection::open(io, params(4096, None)), server);
    match got {
        Err(WireError::ConnectionClosed { code: 403, text }) => {
            assert!(text.contains("ACCESS_REFUSED"), "{text}")
        }
        other => panic!("{:?}", other.err()),
    }
    // An older broker just hangs up after the login.
    let (io, mut peer) = pipe();
    let server = async {
        let mut header = [0u8; 8];
        peer.io.read_exact(&mut header).await.unwrap();
        peer.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: FieldTable::default(),
                mechanisms: "PLAIN".into(),
                locales: "en_US".into(),
            })),
        )
        .await;
        peer.method().await;
        drop(peer);
    };
    let (got, ()) = tokio::join!(Connection::open(io, params(4096, None)), server);
    assert!(
        matches!(got, Err(WireError::LoginRefused)),
        "{:?}",
        got.err()
    );
}

fn return_frames(ch: u16, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Peer::encode(&AMQPFrame::Method(
        ch,
        AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
            exchange: "iem".into(),
            routing_key: "iem.error.s3".into(),
        })),
    ));
    out.extend(Peer::encode(&AMQPFrame::Header(
        ch,
        AMQPContentHeader {
            class_id: 60,
            body_size: body.len() as u64,
            properties: BasicProperties::default().with_correlation_id(seq.to_string().into()),
        },
    )));
    let (a, b) = body.split_at(body.len() / 2);
    out.extend(Peer::encode(&AMQPFrame::Body(ch, a.to_vec())));
    out.extend(Peer::encode(&AMQPFrame::Body(ch, b.to_vec())));
    out
}

fn ack(ch: u16, tag: u64, multiple: bool) -> Vec<u8> {
    Peer::encode(&AMQPFrame::Method(
        ch,
        AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: tag,
            multiple,
        })),
    ))
}

fn props(seq: u64) -> Properties<'static> {
    Properties {
        message_id: Some("id"),
        spool_seq: seq,
    }
}

#[tokio::test]
async fn publishes_go_out_in_one_write_and_events_come_from_partial_frames() {
    let (mut c, mut peer) = connected().await;
    let tags: Vec<u64> = (1..=3)
        .map(|seq| c.publish("iem", "iem.error.s3", &props(seq), &[b'x'; 5000]))
        .collect();
    assert_eq!(tags, [1, 2, 3]);
    c.flush().await.unwrap();
    // 3 x (method + header + 2 body frames at frame_max 4096).
    for _ in 0..3 {
        assert!(matches!(
            peer.method().await,
            (1, AMQPClass::Basic(basic::AMQPMethod::Publish(_)))
        ));
        assert!(matches!(peer.read().await, AMQPFrame::Header(1, _)));
        let mut body = Vec::new();
        while body.len() < 5000 {
            let AMQPFrame::Body(1, part) = peer.read().await else {
                panic!("a body frame")
            };
            assert!(part.len() <= 4088);
            body.extend(part);
        }
    }
    // A return for seq 2 then one multiple ack, delivered a few bytes at a time, with a
    // heartbeat and a late ack of another channel in between.
    let mut bytes = return_frames(1, 2, b"returned body");
    bytes.extend(HEARTBEAT_FRAME);
    bytes.extend(ack(9, 1, false));
    bytes.extend(ack(1, 3, true));
    let writer = async {
        for part in bytes.chunks(5) {
            peer.io.write_all(part).await.unwrap();
            tokio::task::yield_now().await;
        }
        peer
    };
    let reader = async {
        let a = c.next_event().await.unwrap();
        let b = c.next_event().await.unwrap();
        (a, b)
    };
    let ((a, b), _peer) = tokio::join!(reader, writer);
    assert_eq!(
        a,
        Event::Returned(Returned {
            code: 312,
            text: "NO_ROUTE".into(),
            exchange: "iem".into(),
            routing_key: "iem.error.s3".into(),
            spool_seq: Some(2),
        })
    );
    assert_eq!(
        b,
        Event::Ack {
            tag: 3,
            multiple: true
        }
    );
}

#[tokio::test]
async fn a_replaced_channel_is_closed_and_its_late_frames_ignored() {
    let (mut c, mut peer) = connected().await;
    assert_eq!(c.publish("iem", "k", &props(1), b"a"), 1);
    c.flush().await.unwrap();
    for _ in 0..3 {
        peer.read().await;
    }
    let server = async {
        // The old channel's close comes first, then the new one opens.
        let (ch, m) = peer.method().await;
        assert_eq!(ch, 1);
        assert!(
            matches!(m, AMQPClass::Channel(chan::AMQPMethod::Close(_))),
            "{m:?}"
        );
        // A late ack of the old channel, while the new one opens.
        peer.io.write_all(&ack(1, 1, false)).await.unwrap();
        peer.channel(2).await;
        peer
    };
    let (opened, mut peer) = tokio::join!(c.open_channel(), server);
    opened.unwrap();
    assert_eq!(c.channel(), 2);
    assert_eq!(
        c.publish("iem", "k", &props(2), b"b"),
        1,
        "tags start again"
    );
    c.flush().await.unwrap();
    for _ in 0..3 {
        assert_eq!(peer.read().await.channel_id(), 2);
    }
    peer.io.write_all(&ack(1, 1, false)).await.unwrap();
    peer.io.write_all(&ack(2, 1, false)).await.unwrap();
    assert_eq!(
        c.next_event().await.unwrap(),
        Event::Ack {
            tag: 1,
            multiple: false
        }
    );
}

#[tokio::test]
async fn a_channel_error_is_reported_with_its_code_and_answered() {
    let (mut c, mut peer) = connected().await;
    let server = async {
        let (ch, m) = peer.method().await;
        assert_eq!(ch, 1);
        assert!(matches!(m, AMQPClass::Queue(_)), "{m:?}");
        peer.send_method(
            1,
            AMQPClass::Channel(chan::AMQPMethod::Close(chan::Close {
                reply_code: 406,
                reply_text: "PRECONDITION_FAILED - inequivalent arg 'x-queue-type'".into(),
                class_id: 50,
                method_id: 10,
            })),
        )
        .await;
        peer
    };
    let (got, mut peer) = tokio::join!(c.declare_queue("q".into(), FieldTable::default()), server);
    match got {
        Err(WireError::ChannelClosed { code: 406, text }) => {
            assert!(text.contains("x-queue-type"), "{text}")
        }
        other => panic!("{other:?}"),
    }
    // Its close-ok goes out with the next write (here: the next channel's open).
    let server = async {
        let (ch, m) = peer.method().await;
        assert_eq!(ch, 1);
        assert!(
            matches!(m, AMQPClass::Channel(chan::AMQPMethod::CloseOk(_))),
            "{m:?}"
        );
        // The broker closed channel 1 itself: the client does not close it again (a method on
        // a closed channel is a connection error), it opens the next.
        peer.channel(2).await;
    };
    let (opened, ()) = tokio::join!(c.open_channel(), server);
    opened.unwrap();
}

#[tokio::test]
async fn a_connection_close_ends_the_events_and_is_answered_at_close() {
    let (mut c, mut peer) = connected().await;
    peer.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 320,
            reply_text: "CONNECTION_FORCED - broker forced connection closure".into(),
            class_id: 0,
            method_id: 0,
        })),
    )
    .await;
    let got = c.next_event().await;
    assert!(
        matches!(got, Err(WireError::ConnectionClosed { code: 320, .. })),
        "{got:?}"
    );
    c.close("bye", Duration::from_secs(5)).await;
    assert!(matches!(
        peer.method().await,
        (0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)))
    ));
}

#[tokio::test]
async fn a_silent_broker_is_noticed_and_heartbeats_are_sent() {
    let (io, mut peer) = pipe();
    let server = async {
        peer.handshake(tune(4096, 1)).await;
        peer.open("/").await;
        peer
    };
    let (c, mut peer) = tokio::join!(Connection::open(io, params(4096, None)), server);
    let mut c = c.unwrap();
    c.last_write = Instant::now() - Duration::from_millis(600);
    c.keep_alive().await.unwrap();
    assert_eq!(peer.read().await, AMQPFrame::Heartbeat);
    c.last_read = Instant::now() - Duration::from_millis(2100);
    assert!(matches!(c.keep_alive().await, Err(WireError::Silent(_))));
}
