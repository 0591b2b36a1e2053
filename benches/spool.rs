//! Spool append throughput with group commit, beside the ceiling of writing the same framed
//! bytes with one `write_all` per record to a buffered file and one fsync at the end.
//!
//! Run: `cargo bench --bench spool`

use std::io::Write;
use std::time::Instant;

use iemd::config::spool::SpoolConfig;

const N: u64 = 400_000;
const BATCH: usize = 64;

fn payload(i: u64) -> Vec<u8> {
    let mut p = format!(
        r#"{{"schema":"iem.alert/v1","id":"{i:032x}","kind":"iem","code":"ES0030010001","severity":{{"code":"E","name":"error"}},"alert_type":"fault","source_type":{{"code":"S","name":"software"}},"component":{{"id":"003","name":"s3"}},"module":{{"id":"001","name":"Connection"}},"event":{{"id":"0001","name":"Auth server connection failed"}},"in_catalog":true,"message":"S3 server cannot connect to auth server.","time":"2026-11-21T22:50:01.123456+00:00","origin":{{"kind":"file","path":"/var/log/messages","offset":{i},"program":"s3server","pid":"1234","host":"node1","priority":3}},"raw":"Nov 21 22:50:01 node1 s3server[1234]: IEC:ES0030010001:S3 server cannot connect to auth server."}}"#
    )
    .into_bytes();
    p.resize(600, b' ');
    p
}

fn main() {
    let payloads: Vec<Vec<u8>> = (0..1024).map(payload).collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    // Ceiling: the same bytes, buffered writes, one fsync.
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    {
        let f = std::fs::File::create(tmp.path().join("plain")).expect("create");
        let mut w = std::io::BufWriter::with_capacity(256 << 10, f);
        let mut hdr = [0u8; 24];
        for i in 0..N {
            let p = &payloads[(i % 1024) as usize];
            hdr[8..16].copy_from_slice(&i.to_le_bytes());
            hdr[4..8].copy_from_slice(&crc32c::crc32c(p).to_le_bytes());
            w.write_all(&hdr).expect("write");
            w.write_all(p).expect("write");
        }
        w.flush().expect("flush");
        w.get_ref().sync_data().expect("sync");
    }
    let ceiling = N as f64 / t.elapsed().as_secs_f64();

    let report = |label: &str, cfg: SpoolConfig, batch: usize| {
        let (w, _r, _) = iemd::spool::open(&cfg).expect("open");
        let t = Instant::now();
        rt.block_on(async {
            let mut i = 0u64;
            while i < N {
                let chunk: Vec<&[u8]> = (0..batch as u64)
                    .map(|k| payloads[((i + k) % 1024) as usize].as_slice())
                    .collect();
                i += batch as u64;
                w.append_batch(&chunk).await.expect("append");
            }
            w.wait_durable(N).await;
        });
        let rate = N as f64 / t.elapsed().as_secs_f64();
        println!(
            "spool {label}: {rate:>10.0} alerts/s ({:.1} MB/s), {:.0}% of ceiling",
            rate * 624.0 / 1e6,
            100.0 * rate / ceiling
        );
    };
    println!("ceiling (buffered write + 1 fsync): {ceiling:>10.0} alerts/s of 600 B");
    // The default (sync as soon as records are appended), then the 20 ms timer it replaced.
    let default_sync = SpoolConfig::default().sync_interval_ms;
    for sync in [default_sync, 20] {
        for (what, batch) in [("append", 1), ("append_batch(64)", BATCH)] {
            let tmp = tempfile::tempdir().expect("tempdir");
            let cfg = SpoolConfig {
                dir: tmp.path().join("spool"),
                max_bytes: 4 << 30,
                sync_interval_ms: sync,
                ..SpoolConfig::default()
            };
            report(&format!("{what}, sync_interval_ms={sync}"), cfg, batch);
        }
    }
}
