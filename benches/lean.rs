//! CPU per message of publishing alone (issue 20): iemd's own AMQP client (`publish::wire`,
//! through `publish::send_records`, the loop the daemon runs) beside lapin with the window of
//! publishes in flight (what iemd did before), same broker, same messages: confirms,
//! persistent, mandatory, window 256, 1,164-byte bodies. Each publisher runs in a process of
//! its own, so its CPU (utime + stime of the whole process, every thread) is its own.
//!
//! Run (RabbitMQ on 127.0.0.1:5672, guest/guest): `cargo bench --bench lean`; one publisher
//! alone: `cargo bench --bench lean -- lean` (or `lapin`, `lean-json`), with `IEMD_LEAN_N`
//! messages (default 100,000), e.g. under `strace -f -c`.
//!
//! - `lapin`: lapin 4, each publish polled once as it is made, its write and confirm awaited
//!   together in order (iemd's publisher before its own client), with `delivery_mode` and
//!   `content_type` only, as the plain publisher of the e2e bench.
//! - `lapin-props`: the same with iemd's property set (`message_id` of 32 digits, the spool seq
//!   as `correlation_id`): beside `lapin`, what those properties cost the broker (the msg/s
//!   column) on one channel.
//! - `lapin-before`: the same with the property set iemd sent until issue 20 (`message_id`,
//!   `timestamp`, a header table with `schema` and `spool_seq`: 108 bytes of properties).
//! - `lapin-custom` (not in the default run): the properties named in `IEMD_LEAN_PROPS`, a comma
//!   list of `mid` (a `message_id` of `IEMD_LEAN_MIDLEN` digits, default 32), `cid`, `ts`,
//!   `type` and `headers`: how the broker's rate moves with the size of the property block.
//! - `lean`: `send_records` with opaque bodies (not JSON: the message is built without parsing
//!   the alert), so the figure is the publishing path alone.
//! - `lean-json`: `send_records` with alert JSON bodies: the daemon's whole publish path,
//!   reading each alert's id, severity and component for the message included.

#[path = "common/topology.rs"]
mod topology;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use iemd::spool::Record;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const WINDOW: usize = 256;
const BODY: usize = 1_164;
const MODES: [&str; 5] = ["lapin", "lapin-props", "lapin-before", "lean", "lean-json"];

fn n() -> usize {
    std::env::var("IEMD_LEAN_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// An alert of `BODY` bytes of JSON with id `i`, or as many opaque bytes.
fn body(i: usize, json: bool) -> Vec<u8> {
    if !json {
        return vec![b'x'; BODY];
    }
    let mut p = format!(
        r#"{{"schema":"iem.alert/v1","id":"{i:032x}","kind":"iem","severity":{{"code":"E","name":"error"}},"component":{{"id":"003","name":"s3"}},"message":"S3 server cannot connect to auth server.","time":"2026-11-21T22:50:01+00:00","pad":""}}"#
    )
    .into_bytes();
    // Pad inside the last string, so the body stays JSON.
    let pad = BODY.saturating_sub(p.len());
    let at = p.len() - 2;
    p.splice(at..at, std::iter::repeat_n(b'p', pad));
    p
}

/// utime + stime of this process (all its threads), seconds.
fn cpu_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let rest = text.rsplit_once(')').expect("stat").1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / rustix::param::clock_ticks_per_second().max(1) as f64
}

async fn topology(name: &str) -> (lapin::Connection, lapin::Channel) {
    let conn = lapin::Connection::connect(URL, Default::default())
        .await
        .expect("RabbitMQ on 127.0.0.1:5672");
    let ch = conn.create_channel().await.expect("channel");
    topology::declare(&ch, name, true).await;
    (conn, ch)
}

type Confirming<'s> =
    Pin<Box<dyn Future<Output = Result<lapin::Confirmation, lapin::Error>> + Send + 's>>;

/// The properties a lapin publisher sends besides `delivery_mode` and `content_type`: any of
/// `mid`, `cid`, `ts`, `type`, `headers` (see the module documentation).
fn properties(names: &str, i: usize) -> lapin::BasicProperties {
    let mut properties = lapin::BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    for name in names.split(',').map(str::trim) {
        properties = match name {
            "mid" => {
                let width: usize = std::env::var("IEMD_LEAN_MIDLEN")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(32);
                properties.with_message_id(format!("{i:0width$x}").into())
            }
            "cid" => properties.with_correlation_id((i + 1).to_string().into()),
            "ts" => properties.with_timestamp(1_764_000_000),
            "type" => properties.with_type("iem.alert/v1".into()),
            "headers" => {
                let mut headers = FieldTable::default();
                headers.insert(
                    "schema".into(),
                    AMQPValue::LongString("iem.alert/v1".into()),
                );
                headers.insert("spool_seq".into(), AMQPValue::LongLongInt(i as i64 + 1));
                properties.with_headers(headers)
            }
            "" => properties,
            other => panic!("IEMD_LEAN_PROPS: unknown property {other:?}"),
        };
    }
    properties
}

/// lapin with the window in flight: each publish polled once (its frames queued), then its
/// write and confirm awaited together, in order.
/// Each message carries `props` (see `properties`).
async fn lapin_pipelined(exchange: &str, bodies: &[Vec<u8>], props: &str) {
    let conn = lapin::Connection::connect(URL, Default::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let mut inflight = FuturesOrdered::new();
    for (i, body) in bodies.iter().enumerate() {
        if inflight.len() >= WINDOW {
            let c: lapin::Result<lapin::Confirmation> = inflight.next().await.expect("confirm");
            assert!(matches!(
                c.expect("confirm"),
                lapin::Confirmation::Ack(None)
            ));
        }
        let ch = &ch;
        let mut publish: Confirming<'_> = Box::pin(async move {
            let properties = properties(props, i);
            ch.basic_publish(
                exchange.into(),
                "iem.error.s3".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                properties,
            )
            .await?
            .await
        });
        let first = std::future::poll_fn(|cx| Poll::Ready(publish.as_mut().poll(cx))).await;
        inflight.push_back(async move {
            match first {
                Poll::Ready(res) => res,
                Poll::Pending => publish.await,
            }
        });
    }
    while let Some(c) = inflight.next().await {
        assert!(matches!(
            c.expect("confirm"),
            lapin::Confirmation::Ack(None)
        ));
    }
    let _ = conn.close(200, "done".into()).await;
}

/// iemd's publisher over a list (`iemctl replay --publish`'s loop, the daemon's).
async fn lean(name: &str, records: &[Record]) {
    let config = topology::broker_config(name, WINDOW);
    let report = iemd::publish::send_records(&config, records, |_, _| {})
        .await
        .expect("send");
    assert_eq!(report.delivered as usize, records.len());
}

/// One publisher in this process: prints `mode n cpu_s wall_s`.
async fn one(mode: &str) {
    let n = n();
    let name = format!("bench-lean-{}-{}", mode, std::process::id());
    let (_conn, admin) = topology(&name).await;
    let json = mode == "lean-json";
    let bodies: Vec<Vec<u8>> = (0..n).map(|i| body(i, json)).collect();
    let records: Vec<Record> = match mode {
        "lapin" | "lapin-props" | "lapin-before" | "lapin-custom" => Vec::new(),
        _ => bodies
            .iter()
            .enumerate()
            .map(|(i, b)| Record {
                seq: i as u64 + 1,
                time_ms: 0,
                payload: b.clone(),
            })
            .collect(),
    };
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    match mode {
        "lapin" => lapin_pipelined(&name, &bodies, "").await,
        "lapin-props" => lapin_pipelined(&name, &bodies, "mid,cid").await,
        "lapin-before" => lapin_pipelined(&name, &bodies, "mid,ts,headers").await,
        "lapin-custom" => {
            let props = std::env::var("IEMD_LEAN_PROPS").unwrap_or_default();
            lapin_pipelined(&name, &bodies, &props).await
        }
        _ => lean(&name, &records).await,
    }
    let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
    let _ = admin
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = admin
        .exchange_delete(name.as_str().into(), Default::default())
        .await;
    println!("{mode} {n} {cpu:.3} {wall:.3}");
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(mode) = args
        .iter()
        .find(|a| MODES.contains(&a.as_str()) || *a == "lapin-custom")
    {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(one(mode));
        return;
    }
    println!(
        "CPU per message, publishing alone: {} messages of {BODY} bytes, window {WINDOW}, \
         confirms, persistent, mandatory; load average {}",
        n(),
        load_average()
    );
    let exe = std::env::current_exe().expect("exe");
    for round in 1..=2 {
        for mode in MODES {
            let out = std::process::Command::new(&exe)
                .arg(mode)
                .output()
                .expect("run a publisher");
            assert!(
                out.status.success(),
                "{mode}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line = String::from_utf8_lossy(&out.stdout);
            let f: Vec<&str> = line.split_whitespace().collect();
            let (n, cpu, wall): (f64, f64, f64) = (
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            );
            println!(
                "round {round} {mode:>12}: {:>7.2} us CPU/message, {:>8.0} msg/s",
                cpu / n * 1e6,
                n / wall
            );
        }
    }
    println!("load average after: {}", load_average());
}
