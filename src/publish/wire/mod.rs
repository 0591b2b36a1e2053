//! The publisher's own AMQP 0-9-1 client: one connection, driven entirely by the publishing
//! task (no I/O task, no thread), frames encoded and decoded by `amq-protocol` (the codec lapin
//! uses) except the publish path, which `encode` writes directly.
//!
//! Why not lapin (issue 20): lapin writes on an I/O thread of its own, so every publish is a
//! hand-off (futex) to that thread, frames are built in its buffers, and that thread took a
//! quarter of iemd's CPU. Here a publish is [`Connection::publish`], which only appends frames
//! to one reusable buffer; the publish loop appends every record the window lets it take and
//! then [`Connection::flush`]es once: many messages per `write`, no hand-off.
//!
//! Invariants:
//! - One channel carries publishes at a time ([`Connection::channel`]); after `confirm.select`
//!   its delivery tags count from 1, one per [`Connection::publish`], so the n-th publish since
//!   [`Connection::open_channel`] has tag n. Frames that arrive for any other channel (a channel
//!   replaced by [`Connection::open_channel`], still confirming or answering its close) are
//!   ignored.
//! - A `basic.return` reaches the caller as [`Event::Returned`] once its header and body frames
//!   are in, *before* the ack of the same message (RabbitMQ sends a mandatory message's return
//!   before its confirm). It carries the message's spool seq (its `correlation_id`), which
//!   every message has: that, not arrival order, is how the caller matches it.
//! - Reading is cancel-safe ([`Connection::next_event`] keeps partial frames in its buffer and
//!   never awaits a write); a [`Connection::flush`] that did not finish leaves the connection
//!   unusable (part of a frame may be out), so its caller drops the connection.
//! - The broker closing the channel or the connection is answered (`close-ok`, queued and sent
//!   by the next flush or by [`Connection::close`]) and reported as an error: the connection or
//!   channel is then lost.

use std::time::{Duration, Instant};

use amq_protocol::frame::{AMQPFrame, WriteContext, gen_frame, parse_frame};
use amq_protocol::protocol::{
    AMQPClass, basic, channel as chan, confirm, connection, exchange, queue,
};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub(crate) mod encode;

pub(crate) use encode::Properties;

/// A socket to the broker: TCP, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// What the broker says, for the publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// `basic.ack`: the message with `tag` (and, when `multiple`, every one before it) is in.
    Ack { tag: u64, multiple: bool },
    /// `basic.nack`: the broker refused the message with `tag` (and before, when `multiple`).
    Nack { tag: u64, multiple: bool },
    /// A mandatory message came back unroutable; its ack follows.
    Returned(Returned),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Returned {
    pub(crate) code: u16,
    pub(crate) text: String,
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    /// The returned message's spool seq, read from its `correlation_id` (`None` for a message
    /// without one, or not a number: not ours).
    pub(crate) spool_seq: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the broker closed the connection")]
    Eof,
    #[error("the broker closed the connection during the login: wrong user or password?")]
    LoginRefused,
    #[error("the broker closed the connection: {code} {text}")]
    ConnectionClosed { code: u16, text: String },
    #[error("the broker closed the channel: {code} {text}")]
    ChannelClosed { code: u16, text: String },
    #[error("AMQP protocol error: {0}")]
    Protocol(String),
    #[error("nothing from the broker for {0:?} (twice its heartbeat)")]
    Silent(Duration),
}

/// What the handshake needs.
pub(crate) struct Params<'a> {
    pub(crate) user: &'a str,
    pub(crate) password: &'a str,
    pub(crate) vhost: &'a str,
    /// The largest frame we propose (the broker may lower it).
    pub(crate) frame_max: u32,
    /// The heartbeat to use in seconds, `None` for the broker's.
    pub(crate) heartbeat: Option<u16>,
    /// The most channels we want, `None` for the broker's limit.
    pub(crate) channel_max: Option<u16>,
}

/// A `basic.return` waiting for its content header and body.
struct Returning {
    returned: Returned,
    /// Body bytes still to come; `None` until the header came.
    remaining: Option<u64>,
}

/// Read buffer growth.
const READ_CHUNK: usize = 16 * 1024;
/// A buffer larger than this is given back once emptied. A full window of alerts (256 of
/// ~1.3 KB with their frames, the default) stays below it: giving that back after every flush
/// cost a `mremap` per batch; a batch of much larger alerts does not stay resident.
const KEEP: usize = 1024 * 1024;
/// A frame larger than this before the tuning (or than frame_max after) is a protocol error.
const FRAME_LIMIT_UNTUNED: usize = 1 << 20;
const HEARTBEAT_FRAME: [u8; 8] = [8, 0, 0, 0, 0, 0, 0, encode::FRAME_END];

/// One AMQP connection with (at most) one publishing channel.
pub(crate) struct Connection {
    io: Box<dyn Io>,
    /// Frames not yet written.
    out: Vec<u8>,
    /// Bytes read and not yet parsed start at `rpos`.
    rbuf: Vec<u8>,
    rpos: usize,
    frame_max: u32,
    channel_max: u16,
    heartbeat: Option<Duration>,
    /// The publishing channel (0 before the first one is open), and whether it is open (not
    /// closed by the broker): a closed channel is not closed again.
    channel: u16,
    channel_open: bool,
    next_tag: u64,
    returning: Option<Returning>,
    last_read: Instant,
    last_write: Instant,
    /// The broker closed the connection (its close-ok is queued; no close of ours is due).
    closed: bool,
}

impl Connection {
    /// The AMQP handshake on `io`: protocol header, start/start-ok (PLAIN), tune/tune-ok, open.
    /// The caller bounds it in time.
    pub(crate) async fn open(io: Box<dyn Io>, params: Params<'_>) -> Result<Self, WireError> {
        let now = Instant::now();
        let mut c = Connection {
            io,
            out: Vec::with_capacity(READ_CHUNK),
            rbuf: Vec::with_capacity(READ_CHUNK),
            rpos: 0,
            frame_max: 0,
            channel_max: 0,
            heartbeat: None,
            channel: 0,
            channel_open: false,
            next_tag: 1,
            returning: None,
            last_read: now,
            last_write: now,
            closed: false,
        };
        c.out.extend_from_slice(b"AMQP\x00\x00\x09\x01");
        c.flush().await?;
        let start = match c.control_reply().await? {
            connection::AMQPMethod::Start(start) => start,
            other => return Err(unexpected("connection.start", &other)),
        };
        let mechanisms = String::from_utf8_lossy(start.mechanisms.as_bytes()).into_owned();
        if !mechanisms.split(' ').any(|m| m == "PLAIN") {
            return Err(WireError::Protocol(format!(
                "the broker offers no PLAIN login (only {mechanisms:?})"
            )));
        }
        let response = format!("\0{}\0{}", params.user, params.password);
        c.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: client_properties(),
                mechanism: "PLAIN".into(),
                response: response.into(),
                locale: "en_US".into(),
            })),
        )?;
        c.flush().await?;
        // With authentication_failure_close the broker answers a bad login with a close (403);
        // brokers without it just hang up.
        let tune = match c.control_reply().await {
            Ok(connection::AMQPMethod::Tune(tune)) => tune,
            Ok(other) => return Err(unexpected("connection.tune", &other)),
            Err(WireError::Eof) => return Err(WireError::LoginRefused),
            Err(e) => return Err(e),
        };
        let frame_max = match tune.frame_max {
            0 => params.frame_max,
            theirs => theirs.min(params.frame_max),
        };
        let channel_max = match (tune.channel_max, params.channel_max) {
            (0, None) => u16::MAX,
            (0, Some(ours)) => ours,
            (theirs, None) => theirs,
            (theirs, Some(ours)) => theirs.min(ours),
        };
        let heartbeat = params.heartbeat.unwrap_or(tune.heartbeat);
        c.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max,
                frame_max,
                heartbeat,
            })),
        )?;
        c.frame_max = frame_max;
        c.channel_max = channel_max.max(1);
        c.heartbeat = (heartbeat > 0).then(|| Duration::from_secs(heartbeat.into()));
        let vhost = ShortString::try_new(params.vhost)
            .map_err(|e| WireError::Protocol(format!("virtual host {:?}: {e}", params.vhost)))?;
        c.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: vhost,
            })),
        )?;
        c.flush().await?;
        match c.control_reply().await? {
            connection::AMQPMethod::OpenOk(_) => Ok(c),
            other => Err(unexpected("connection.open-ok", &other)),
        }
    }

    /// The negotiated frame size (bytes, the whole frame).
    pub(crate) fn frame_max(&self) -> u32 {
        self.frame_max
    }

    /// The negotiated heartbeat, `None` when off.
    pub(crate) fn heartbeat(&self) -> Option<Duration> {
        self.heartbeat
    }

    /// The channel publishes go to.
    #[cfg(test)]
    pub(crate) fn channel(&self) -> u16 {
        self.channel
    }

    /// Opens the next channel in publisher-confirm mode and makes it the publishing channel;
    /// the previous one, if any, is closed without waiting (what it still sends is ignored).
    /// Delivery tags start again at 1.
    pub(crate) async fn open_channel(&mut self) -> Result<(), WireError> {
        let old = self.channel;
        let id = if old >= self.channel_max { 1 } else { old + 1 };
        self.channel = id;
        self.returning = None;
        if std::mem::replace(&mut self.channel_open, false) {
            self.send(
                old,
                AMQPClass::Channel(chan::AMQPMethod::Close(chan::Close {
                    reply_code: 200,
                    reply_text: "replaced".into(),
                    class_id: 0,
                    method_id: 0,
                })),
            )?;
        }
        match self
            .call(AMQPClass::Channel(chan::AMQPMethod::Open(chan::Open {})))
            .await?
        {
            AMQPClass::Channel(chan::AMQPMethod::OpenOk(_)) => self.channel_open = true,
            other => return Err(unexpected("channel.open-ok", &other)),
        }
        match self
            .call(AMQPClass::Confirm(confirm::AMQPMethod::Select(
                confirm::Select { nowait: false },
            )))
            .await?
        {
            AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)) => {}
            other => return Err(unexpected("confirm.select-ok", &other)),
        }
        self.next_tag = 1;
        Ok(())
    }

    /// `exchange.declare` of a durable exchange of `kind` on the publishing channel.
    pub(crate) async fn declare_exchange(
        &mut self,
        name: ShortString,
        kind: &str,
    ) -> Result<(), WireError> {
        let method = exchange::Declare {
            exchange: name,
            kind: kind.into(),
            passive: false,
            durable: true,
            auto_delete: false,
            internal: false,
            nowait: false,
            arguments: FieldTable::default(),
        };
        match self
            .call(AMQPClass::Exchange(exchange::AMQPMethod::Declare(method)))
            .await?
        {
            AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(_)) => Ok(()),
            other => Err(unexpected("exchange.declare-ok", &other)),
        }
    }

    /// `queue.declare` of a durable queue with `arguments` on the publishing channel.
    pub(crate) async fn declare_queue(
        &mut self,
        name: ShortString,
        arguments: FieldTable,
    ) -> Result<(), WireError> {
        let method = queue::Declare {
            queue: name,
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments,
        };
        match self
            .call(AMQPClass::Queue(queue::AMQPMethod::Declare(method)))
            .await?
        {
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_)) => Ok(()),
            other => Err(unexpected("queue.declare-ok", &other)),
        }
    }

    /// `queue.bind` on the publishing channel.
    pub(crate) async fn bind_queue(
        &mut self,
        queue: ShortString,
        exchange: ShortString,
        routing_key: ShortString,
    ) -> Result<(), WireError> {
        let method = queue::Bind {
            queue,
            exchange,
            routing_key,
            nowait: false,
            arguments: FieldTable::default(),
        };
        match self
            .call(AMQPClass::Queue(queue::AMQPMethod::Bind(method)))
            .await?
        {
            AMQPClass::Queue(queue::AMQPMethod::BindOk(_)) => Ok(()),
            other => Err(unexpected("queue.bind-ok", &other)),
        }
    }

    /// Appends one message (mandatory, on the publishing channel) to the write buffer; nothing
    /// is written until [`flush`](Self::flush). Returns its delivery tag.
    pub(crate) fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        props: &Properties<'_>,
        body: &[u8],
    ) -> u64 {
        encode::publish(
            &mut self.out,
            self.channel,
            self.frame_max,
            exchange,
            routing_key,
            props,
            body,
        );
        let tag = self.next_tag;
        self.next_tag += 1;
        tag
    }

    /// Writes everything appended since the last flush, in one write.
    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.io.write_all(&self.out).await?;
        self.io.flush().await?;
        self.out.clear();
        if self.out.capacity() > KEEP {
            self.out.shrink_to(READ_CHUNK);
        }
        self.last_write = Instant::now();
        Ok(())
    }

    /// The next acknowledgement or return on the publishing channel, answering heartbeats and
    /// skipping what concerns other channels. An error means the connection or the channel is
    /// lost. Cancel-safe.
    pub(crate) async fn next_event(&mut self) -> Result<Event, WireError> {
        loop {
            let frame = self.read_frame().await?;
            if let Some(event) = self.on_frame(frame)? {
                return Ok(event);
            }
        }
    }

    /// Keeps the connection alive: a heartbeat when nothing was written for half the
    /// heartbeat; an error when nothing was read for two. Call it about every second.
    pub(crate) async fn keep_alive(&mut self) -> Result<(), WireError> {
        let Some(beat) = self.heartbeat else {
            return Ok(());
        };
        if self.last_read.elapsed() > 2 * beat {
            return Err(WireError::Silent(2 * beat));
        }
        if self.last_write.elapsed() >= beat / 2 {
            self.out.extend_from_slice(&HEARTBEAT_FRAME);
            self.flush().await?;
        }
        Ok(())
    }

    /// Closes the connection: `connection.close`, then its `close-ok` awaited for at most
    /// `wait` (a connection that went silent never answers). After the broker closed it, only
    /// our `close-ok` is sent.
    pub(crate) async fn close(mut self, text: &str, wait: Duration) {
        let closing = async {
            if !self.closed {
                self.send(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                        reply_code: 200,
                        reply_text: ShortString::try_new(text).unwrap_or_default(),
                        class_id: 0,
                        method_id: 0,
                    })),
                )?;
            }
            self.flush().await?;
            while !self.closed {
                if let AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(
                        connection::AMQPMethod::CloseOk(_) | connection::AMQPMethod::Close(_),
                    ),
                ) = self.read_frame().await?
                {
                    break;
                }
            }
            Ok::<_, WireError>(())
        };
        if let Ok(Err(error)) | Err(error) = tokio::time::timeout(wait, closing)
            .await
            .map_err(|_| WireError::Silent(wait))
        {
            // Being given up anyway: nothing the caller could do about it.
            tracing::debug!(%error, "closing the broker connection");
        }
    }

    /// Queues one method frame on `channel`.
    fn send(&mut self, channel: u16, method: AMQPClass) -> Result<(), WireError> {
        let frame = AMQPFrame::Method(channel, method);
        let buf = std::mem::take(&mut self.out);
        let (buf, _) = gen_frame(&frame)(WriteContext::from(buf))
            .map_err(|e| WireError::Protocol(format!("encoding {frame}: {e}")))?
            .into_inner();
        self.out = buf;
        Ok(())
    }

    /// Sends `method` on the publishing channel and returns the broker's reply on it. A
    /// `channel.close` instead is [`WireError::ChannelClosed`] (e.g. 406 PRECONDITION_FAILED
    /// for a queue declared with other arguments).
    async fn call(&mut self, method: AMQPClass) -> Result<AMQPClass, WireError> {
        self.send(self.channel, method)?;
        self.flush().await?;
        loop {
            match self.read_frame().await? {
                AMQPFrame::Method(ch, AMQPClass::Channel(chan::AMQPMethod::Close(close)))
                    if ch == self.channel =>
                {
                    return Err(self.channel_closed(close));
                }
                AMQPFrame::Method(ch, reply) if ch == self.channel => return Ok(reply),
                other => {
                    // A late frame of a replaced channel, a heartbeat, or a connection close.
                    self.on_frame(other)?;
                }
            }
        }
    }

    /// The next method on channel 0 during the handshake.
    async fn control_reply(&mut self) -> Result<connection::AMQPMethod, WireError> {
        loop {
            match self.read_frame().await? {
                AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c))) => {
                    return Err(self.connection_closed(c));
                }
                AMQPFrame::Method(0, AMQPClass::Connection(m)) => return Ok(m),
                AMQPFrame::Heartbeat => {}
                AMQPFrame::ProtocolHeader(v) => {
                    return Err(WireError::Protocol(format!(
                        "the broker speaks AMQP {v}, not 0-9-1"
                    )));
                }
                other => return Err(WireError::Protocol(format!("unexpected {other}"))),
            }
        }
    }

    /// Handles one frame outside a call: an event for the caller, nothing, or the end.
    fn on_frame(&mut self, frame: AMQPFrame) -> Result<Option<Event>, WireError> {
        let current = self.channel;
        match frame {
            AMQPFrame::Heartbeat => {}
            AMQPFrame::Method(0, AMQPClass::Connection(m)) => match m {
                connection::AMQPMethod::Close(c) => return Err(self.connection_closed(c)),
                connection::AMQPMethod::Blocked(b) => {
                    tracing::warn!(reason = %b.reason,
                        "the broker blocks publishing (a resource alarm); alerts wait in the spool");
                }
                connection::AMQPMethod::Unblocked(_) => {
                    tracing::info!("the broker accepts publishing again");
                }
                other => tracing::debug!(?other, "ignored connection method"),
            },
            AMQPFrame::Method(ch, AMQPClass::Channel(chan::AMQPMethod::Close(close))) => {
                if ch == current {
                    return Err(self.channel_closed(close));
                }
                // A replaced channel closed by the broker: answer, so that its id is free.
                self.send(
                    ch,
                    AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
                )?;
            }
            AMQPFrame::Method(ch, _) | AMQPFrame::Header(ch, _) | AMQPFrame::Body(ch, _)
                if ch != current => {}
            AMQPFrame::Method(_, AMQPClass::Basic(m)) => match m {
                basic::AMQPMethod::Ack(a) => {
                    return Ok(Some(Event::Ack {
                        tag: a.delivery_tag,
                        multiple: a.multiple,
                    }));
                }
                basic::AMQPMethod::Nack(n) => {
                    return Ok(Some(Event::Nack {
                        tag: n.delivery_tag,
                        multiple: n.multiple,
                    }));
                }
                basic::AMQPMethod::Return(r) => {
                    self.returning = Some(Returning {
                        returned: Returned {
                            code: r.reply_code,
                            text: r.reply_text.to_string(),
                            exchange: r.exchange.to_string(),
                            routing_key: r.routing_key.to_string(),
                            spool_seq: None,
                        },
                        remaining: None,
                    });
                }
                other => tracing::debug!(?other, "ignored basic method"),
            },
            AMQPFrame::Header(_, header) => {
                if let Some(r) = &mut self.returning {
                    r.returned.spool_seq = header
                        .properties
                        .correlation_id()
                        .as_ref()
                        .and_then(|id| id.as_str().parse().ok());
                    r.remaining = Some(header.body_size);
                    return Ok(self.returned_if_complete());
                }
            }
            AMQPFrame::Body(_, body) => {
                if let Some(Returning {
                    remaining: Some(left),
                    ..
                }) = &mut self.returning
                {
                    *left = left.saturating_sub(body.len() as u64);
                    return Ok(self.returned_if_complete());
                }
            }
            other => tracing::debug!(%other, "ignored frame"),
        }
        Ok(None)
    }

    fn returned_if_complete(&mut self) -> Option<Event> {
        match &self.returning {
            Some(Returning {
                remaining: Some(0), ..
            }) => self.returning.take().map(|r| Event::Returned(r.returned)),
            _ => None,
        }
    }

    /// The broker closed the connection: its close-ok is queued, the error returned.
    fn connection_closed(&mut self, close: connection::Close) -> WireError {
        self.closed = true;
        let _queued = self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
        );
        WireError::ConnectionClosed {
            code: close.reply_code,
            text: close.reply_text.to_string(),
        }
    }

    /// The broker closed the publishing channel: its close-ok is queued, the error returned.
    fn channel_closed(&mut self, close: chan::Close) -> WireError {
        self.channel_open = false;
        let _queued = self.send(
            self.channel,
            AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
        );
        WireError::ChannelClosed {
            code: close.reply_code,
            text: close.reply_text.to_string(),
        }
    }

    /// The next whole frame, reading as needed; partial frames stay in the buffer.
    async fn read_frame(&mut self) -> Result<AMQPFrame, WireError> {
        loop {
            if let Some(frame) = self.parse_buffered()? {
                return Ok(frame);
            }
            if self.rpos == self.rbuf.len() {
                self.rbuf.clear();
                self.rpos = 0;
                if self.rbuf.capacity() > KEEP {
                    self.rbuf.shrink_to(READ_CHUNK);
                }
            } else if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            self.rbuf.reserve(READ_CHUNK);
            if self.io.read_buf(&mut self.rbuf).await? == 0 {
                return Err(WireError::Eof);
            }
            self.last_read = Instant::now();
        }
    }

    /// One frame from the buffer, if a whole one is there.
    fn parse_buffered(&mut self) -> Result<Option<AMQPFrame>, WireError> {
        let avail = &self.rbuf[self.rpos..];
        let len = if avail.first() == Some(&b'A') {
            8 // a protocol header: the broker refuses our version
        } else {
            let Some(size) = avail.get(3..7) else {
                return Ok(None);
            };
            let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
            let limit = match self.frame_max {
                0 => FRAME_LIMIT_UNTUNED,
                max => max as usize,
            };
            if size + encode::FRAME_OVERHEAD > limit {
                return Err(WireError::Protocol(format!(
                    "a frame of {size} bytes, over the {limit} agreed"
                )));
            }
            size + encode::FRAME_OVERHEAD
        };
        if avail.len() < len {
            return Ok(None);
        }
        let frame = match parse_frame(&avail[..len]) {
            Ok((_, frame)) => frame,
            Err(e) => return Err(WireError::Protocol(format!("unreadable frame: {e}"))),
        };
        self.rpos += len;
        Ok(Some(frame))
    }
}

/// What the broker is told about us: the name, the version and what we understand.
fn client_properties() -> FieldTable {
    let mut capabilities = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "connection.blocked",
        "authentication_failure_close",
    ] {
        capabilities.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    props.insert(
        "product".into(),
        AMQPValue::LongString(LongString::from("iemd")),
    );
    props.insert(
        "version".into(),
        AMQPValue::LongString(LongString::from(env!("CARGO_PKG_VERSION"))),
    );
    props.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
    props
}

fn unexpected(wanted: &str, got: &impl std::fmt::Debug) -> WireError {
    WireError::Protocol(format!("expected {wanted}, got {got:?}"))
}

#[cfg(test)]
mod tests;
