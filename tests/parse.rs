//! Integration tests: `iemctl parse` and `iemctl catalog` over real files.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

fn iemctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iemctl"))
}

/// Every real producer shape of the domain notes, in the three header shapes and journald JSON.
const LINES: &str = r#"Nov 21 22:50:01 node1 s3server[1234]: IEC:ES0030010001:S3 server cannot connect to auth server. For more information, refer Troubleshooting Guide.
Nov 21 22:50:02 node1 kernel: [  12.345678] sd 2:0:0:1: [sdc] no IEM here
2026-11-21T22:50:03.123456+00:00 node1 m0d[77]: IEC: ES0020020004: RPC_ITEM_FAILED item=0x7f3a2c01a2b0 opcode=41 rc=-110
2026-11-21T22:50:04.5+01:00 node1 m0d[77]: IEC: ES0020020006: Event count: 2a, Observed data accessibility issue.
<131>1 2026-11-21T22:50:05Z node1 ha 4242 - [meta x="a\]b"] IEC:WS0080010001:The cluster has lost ssc-vm-1 server. System is running in degraded mode. Extra Info: host=ssc-vm-1; status=lost;"
Nov 21 22:50:06 node1 s3server[1234]: IEC: ES0030050001: Fatal handler triggered: { "time": "t", "node": "n", "pid": 42, "file": "s3.cc", "line": 9, "signal_number": 11 }
Nov 21 22:50:07 node1 motr[1]: IEC: 020001002: Drive removed
Nov 21 22:50:08 node1 m0d[77]: IEC: TS0020010001: Motr test IEM
Nov 21 22:50:09 node1 iec-host-1 sshd[5]: Accepted publickey for IEC 60870 user
{"MESSAGE":"IEC:WS0060010001:SSL certificate is expiring","SYSLOG_IDENTIFIER":"csm_agent","_PID":"99","PRIORITY":"4","_HOSTNAME":"node2","__REALTIME_TIMESTAMP":"1763765410000000","__CURSOR":"s=abc;i=1"}
"#;

fn parse(input: &[u8], extra_args: &[&str]) -> (Vec<Value>, String, bool) {
    let mut child = iemctl()
        .arg("parse")
        .args(["--year", "2026", "--tz", "UTC"])
        .args(extra_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    let alerts = String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        alerts,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

fn schema(name: &str) -> jsonschema::Validator {
    let path = format!("{}/schema/{name}", env!("CARGO_MANIFEST_DIR"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

#[test]
fn every_producer_shape_becomes_a_valid_alert() {
    let (alerts, stderr, ok) = parse(LINES.as_bytes(), &[]);
    assert!(ok, "{stderr}");
    assert_eq!(stderr.trim(), "-: 10 lines, 6 IEMs, 2 malformed");
    let validator = schema("iem.alert.v1.json");
    for alert in &alerts {
        let errors: Vec<String> = validator
            .iter_errors(alert)
            .map(|e| format!("{e} at {}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{alert}: {errors:?}");
    }
    let field = |i: usize, f: &str| alerts[i].pointer(f).cloned().unwrap_or(Value::Null);
    // s3server, RFC 3164
    assert_eq!(field(0, "/code"), "ES0030010001");
    assert_eq!(field(0, "/alert_type"), "fault");
    assert_eq!(field(0, "/event/name"), "Auth server connection failed");
    assert_eq!(field(0, "/component/name"), "s3");
    assert_eq!(field(0, "/origin/program"), "s3server");
    assert_eq!(field(0, "/origin/pid"), "1234");
    assert_eq!(field(0, "/time"), "2026-11-21T22:50:01+00:00");
    assert_eq!(field(0, "/in_catalog"), true);
    // Motr, RFC 3339, running count in hex
    assert_eq!(
        field(1, "/message"),
        "RPC_ITEM_FAILED item=0x7f3a2c01a2b0 opcode=41 rc=-110"
    );
    assert_eq!(field(2, "/count"), 42);
    assert_eq!(field(2, "/message"), "Observed data accessibility issue.");
    assert_eq!(field(2, "/time"), "2026-11-21T22:50:04.500+01:00");
    // HA over RFC 5424: the stray quote is gone
    assert_eq!(field(3, "/severity/name"), "warning");
    assert_eq!(field(3, "/origin/priority"), 131);
    assert!(
        field(3, "/message")
            .as_str()
            .unwrap()
            .ends_with("status=lost;")
    );
    // trailing JSON goes to extra
    assert_eq!(field(4, "/extra/signal_number"), 11);
    assert_eq!(field(4, "/message"), "Fatal handler triggered");
    // legacy 9-digit code and severity T are malformed, with reasons
    assert_eq!(field(5, "/kind"), "malformed");
    assert_eq!(field(5, "/reason"), "code has 9 characters, expected 12");
    assert_eq!(field(6, "/reason"), "unknown severity 'T'");
    // journald JSON
    assert_eq!(field(7, "/origin/kind"), "journald");
    assert_eq!(field(7, "/origin/cursor"), "s=abc;i=1");
    assert_eq!(field(7, "/origin/program"), "csm_agent");
    assert_eq!(field(7, "/event/name"), "SSL certificate is expiring");
    assert_eq!(field(7, "/time"), "2025-11-21T22:50:10+00:00");
}

#[test]
fn ids_are_stable_across_runs_and_differ_by_position() {
    let (first, _, _) = parse(LINES.as_bytes(), &[]);
    let (second, _, _) = parse(LINES.as_bytes(), &[]);
    let ids = |a: &[Value]| {
        a.iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), ids(&second));
    // The same line twice at two offsets: two ids.
    let line = "Nov 21 22:50:01 node1 s3server[1]: IEC:ES0030010001:x\n";
    let (twice, _, _) = parse(format!("{line}{line}").as_bytes(), &[]);
    assert_eq!(twice.len(), 2);
    assert_ne!(twice[0]["id"], twice[1]["id"]);
}

/// Regression (issue 21 item 11): ES1000010001 and ES0010012710 were published as malformed
/// ("component 100 out of range"); the old sensor accepted both ends of every range.
#[test]
fn codes_at_both_ends_of_each_range_are_iems() {
    let input = "Nov 21 22:50:01 n p[1]: IEC:ES1000010001:top component\n\
                 Nov 21 22:50:02 n p[1]: IEC:ES0010012710:top event\n\
                 Nov 21 22:50:03 n p[1]: IEC:ES0011000001:top module\n\
                 Nov 21 22:50:04 n p[1]: IEC:ES1010010001:past the top\n";
    let (alerts, stderr, ok) = parse(input.as_bytes(), &[]);
    assert!(ok, "{stderr}");
    let got: Vec<(&str, &str, &str)> = alerts
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap(),
                a["code"].as_str().unwrap_or(""),
                a["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("iem", "ES1000010001", ""),
            ("iem", "ES0010012710", ""),
            ("iem", "ES0011000001", ""),
            ("malformed", "", "component 101 out of range"),
        ]
    );
}

#[test]
fn hostile_input_never_stops_the_parser() {
    let mut input = Vec::new();
    input.extend_from_slice(b"Nov 21 22:50:01 n p[1]: IEC:ES0030010001:before\n");
    input.extend_from_slice(b"\xff\xfe\x00garbage\x00 IEC:ES0030010001:\xc3\x28 bad utf8\r\n");
    input.extend(std::iter::repeat_n(b'x', 200_000));
    input.extend_from_slice(b" IEC:ES0030010001:long\n");
    input.extend_from_slice(&b"IEC:".repeat(10_000));
    input.push(b'\n');
    input.extend_from_slice(b"Nov 21 22:50:02 n p[1]: IEC:ES0030010001:after");
    let (alerts, stderr, ok) = parse(&input, &["--max-line-bytes", "1024"]);
    assert!(ok, "{stderr}");
    assert_eq!(stderr.trim(), "-: 5 lines, 4 IEMs, 1 malformed");
    // Below the daemon's bound a cut line could not hold the marker: refused, not half-scanned.
    let small = iemctl()
        .args(["parse", "--max-line-bytes", "8", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&small.stderr);
    assert!(!small.status.success(), "{err}");
    assert!(
        err.contains("--max-line-bytes must be at least 16"),
        "{err}"
    );
    assert_eq!(alerts[0]["message"], "before");
    assert_eq!(alerts[1]["message"], "\u{fffd}( bad utf8");
    // The 200 kB line was cut before its marker: the IEM past the cut is still found (issue 21
    // item 6). The 10,000 markers: one malformed alert.
    assert_eq!(
        (
            &alerts[2]["kind"],
            &alerts[2]["message"],
            &alerts[2]["truncated"]
        ),
        (&"iem".into(), &"long".into(), &true.into())
    );
    assert_eq!(alerts[3]["kind"], "malformed");
    assert_eq!(alerts[3]["truncated"], true);
    assert_eq!(alerts[4]["message"], "after");
}

/// Lines without a literal `IEC:` that still give alerts (journald JSON naming the code in
/// `IEM_CODE` or escaping the marker), lone-CR and CR LF line ends, and lines read across many
/// 64 KiB reads: `iemctl parse` cuts out only the lines that may hold an IEM and counts the rest,
/// and must report what it reported when it cut every line.
#[test]
fn lines_without_the_marker_are_counted_and_json_still_decoded() {
    let mut input = String::new();
    let mut expected_lines = 0;
    for i in 0..5_000 {
        match i % 1_000 {
            10 => input.push_str("Nov 21 22:50:01 n p[1]: IEC:ES0030010001:plain"),
            20 => {
                input.push_str(r#"  {"MESSAGE":"disk gone","IEM_CODE":"ES0030010001","_PID":"9"}"#)
            }
            30 => input.push_str(r#"{"MESSAGE":"IEC\u003aES0030010001:escaped"}"#),
            40 => input.push_str("Nov 21 22:50:01 n p[1]: IEC:ES0030010001:crlf"),
            _ => input.push_str("Nov 21 22:50:01 n sshd[1]: Accepted publickey for root"),
        }
        expected_lines += 1;
        input.push_str(match i % 3 {
            0 => "\n",
            1 => "\r\n",
            _ => "\r",
        });
    }
    input.push_str("Nov 21 22:50:01 n p[1]: IEC:ES0030010001:no line end");
    expected_lines += 1;
    let (alerts, stderr, ok) = parse(input.as_bytes(), &[]);
    assert!(ok, "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!("-: {expected_lines} lines, 21 IEMs, 0 malformed")
    );
    let messages: Vec<&str> = alerts[..4]
        .iter()
        .map(|a| a["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["plain", "disk gone", "escaped", "crlf"]);
    assert_eq!(alerts[20]["message"], "no line end");
    // Offsets are the lines' own: the alert of line 11 starts right after ten noise lines.
    assert_eq!(
        alerts[0]["origin"]["offset"],
        input.find("Nov 21 22:50:01 n p[1]: IEC").unwrap()
    );
}

#[test]
fn text_format_and_io_errors() {
    let out = iemctl()
        .args(["parse", "--format", "text", "/nonexistent/messages"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot open /nonexistent/messages"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages");
    std::fs::write(&path, LINES).unwrap();
    let out = iemctl()
        .args(["parse", "--format", "text", "--year", "2026", "--tz", "UTC"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 8);
    assert!(
        text.starts_with("2026-11-21T22:50:01+00:00 ES0030010001 error"),
        "{text}"
    );
}

#[test]
fn catalog_explains_a_code() {
    let out = iemctl().args(["catalog", "ES0030010001"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("event:          0001 Auth server connection failed"),
        "{text}"
    );
    // Issue 17: the lifecycle rules of the HA pair.
    let out = iemctl().args(["catalog", "0080010002"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("resolves:       0080010001\n"), "{text}");
    assert!(text.contains("resource:       field:host\n"), "{text}");
    let out = iemctl().args(["catalog", "WS0080010001"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("escalate_after: 900 s\n"), "{text}");
    let out = iemctl().args(["catalog", "XS00300100"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = iemctl().arg("catalog").output().unwrap();
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(listing.contains("0080010002  ha"), "{listing}");
}

#[test]
fn enrich_resolves_devices_from_a_sysfs_tree_and_sspl_validates() {
    let fake = crate::util::fake_sysfs::FakeSysfs::standard();
    let line =
        b"Nov 21 22:50:01 node1 m0d[77]: IEC: ES0020020002: IO error on sdc2 and eth0, sdz gone\n";
    let root = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let (sys, dev) = (root(&fake.sys), root(&fake.dev));
    let (alerts, stderr, ok) = parse(
        line,
        &["--enrich", "--sysfs-root", &sys, "--dev-root", &dev],
    );
    assert!(ok, "{stderr}");
    let validator = schema("iem.alert.v1.json");
    assert!(validator.is_valid(&alerts[0]), "{}", alerts[0]);
    let hardware = alerts[0]["hardware"].as_array().unwrap();
    let found: Vec<(&str, bool)> = hardware
        .iter()
        .map(|h| {
            (
                h["reference"].as_str().unwrap(),
                h["found"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(found, [("sdc2", true), ("eth0", true), ("sdz", false)]);
    assert!(
        hardware[0]["device"]["serial"].is_string(),
        "{}",
        hardware[0]
    );
    assert!(alerts[0]["host"]["hostname"].is_string());

    let (bodies, stderr, ok) = parse(line, &["--format", "sspl"]);
    assert!(ok, "{stderr}");
    let sspl = schema("sspl-sensor-response.json");
    assert!(sspl.is_valid(&bodies[0]), "{}", bodies[0]);
    let specific = &bodies[0]["message"]["sensor_response_type"]["specific_info"];
    assert_eq!(specific["IEC"], "ES0020020002");
    assert_eq!(specific["component"], "motr");
    assert_eq!(
        bodies[0]["message"]["sensor_response_type"]["alert_type"],
        "fault"
    );
}

/// The `shared/` directory CI keeps beside the clone (`../shared` from the repository root), or
/// `IEMD_SHARED_DIR` when the tests run from a checkout that has none beside it.
fn shared_dir() -> std::path::PathBuf {
    std::env::var_os("IEMD_SHARED_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
        Into::into,
    )
}

/// One mismatch per line at most, as `dataset #n: what`.
fn check_loghub_case(name: &str, expected: &Value, alert: &Value, mismatches: &mut Vec<String>) {
    let n = expected["n"].as_u64().unwrap();
    let mut bad = |what: String| mismatches.push(format!("{name} #{n}: {what}"));
    if alert["kind"] != "iem" || alert["code"] != "ES0030010001" {
        return bad(format!("kind {} code {}", alert["kind"], alert["code"]));
    }
    let origin = &alert["origin"];
    if origin["host"] != expected["host"] {
        return bad(format!("host {} != {}", origin["host"], expected["host"]));
    }
    // "" counts as no program; a pid may be an integer or a digit string.
    let program = match &origin["program"] {
        Value::String(p) if p.is_empty() => Value::Null,
        p => p.clone(),
    };
    let pid = match &origin["pid"] {
        Value::String(p) => p
            .parse::<u64>()
            .map_or(Value::String(p.clone()), Value::from),
        p => p.clone(),
    };
    let primary = std::iter::once((&expected["program"], &expected["pid"]));
    let accepted = expected["accept"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| (&a["program"], &a["pid"]));
    if !primary
        .chain(accepted)
        .any(|(p, i)| *p == program && *i == pid)
    {
        return bad(format!(
            "program/pid {program}/{pid}, expected {}/{}",
            expected["program"], expected["pid"]
        ));
    }
    let time = alert["time"].as_str().unwrap_or_default();
    let want = format!(
        "{:04}-{:02}-{:02}T{}",
        expected["year"].as_u64().unwrap(),
        expected["month"].as_u64().unwrap(),
        expected["day"].as_u64().unwrap(),
        expected["time"].as_str().unwrap()
    );
    match chrono::DateTime::parse_from_rfc3339(time) {
        Ok(t) if t.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string() == want => {}
        _ => return bad(format!("time {time:?}, expected {want} UTC")),
    }
    let message = alert["message"].as_str().unwrap_or_default();
    if !message.ends_with(&format!("probe {n}")) {
        bad(format!("message {message:?}"));
    }
}

/// Regression (issue 21 item 12): on real /var/log/messages and macOS system.log excerpts
/// (`shared/corpora/loghub`: 6,000 lines from three machines), program and pid came out null on
/// 139 lines whose TAG ends with a blank (`sandboxd[129] ([31376]): ...`,
/// `syslogd 1.4.1: restart.`). Every line must give the origin its README says rsyslog reports.
#[test]
fn loghub_real_headers_give_the_origin_rsyslog_gives() {
    let corpus = shared_dir().join("corpora/loghub");
    assert!(
        corpus.join("make_cases.py").is_file(),
        "the loghub corpus is missing at {}: CI keeps a copy of shared/ beside the clone \
         (../shared from the repository root); elsewhere set IEMD_SHARED_DIR to that directory",
        corpus.display()
    );
    let cases = tempfile::tempdir().unwrap();
    let made = Command::new("python3")
        .arg(corpus.join("make_cases.py"))
        .arg(cases.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 (needed to build the loghub cases): {e}"));
    assert!(
        made.status.success(),
        "make_cases.py failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let datasets = std::fs::read_to_string(cases.path().join("datasets.tsv")).unwrap();
    let mut total = 0;
    let mut mismatches = Vec::new();
    for row in datasets.lines() {
        let [name, year, lines] = row.split('\t').collect::<Vec<_>>()[..] else {
            panic!("datasets.tsv: bad row {row:?}");
        };
        let out = iemctl()
            .args(["parse", "--format", "json", "--year", year, "--tz", "UTC"])
            .arg(cases.path().join(format!("{name}.log")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Every alert keyed by the `probe N` that ends its raw line (else its message).
        let mut alerts = std::collections::BTreeMap::new();
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let Ok(alert) = serde_json::from_str::<Value>(line) else {
                mismatches.push(format!("{name}: not JSON: {line:.100}"));
                continue;
            };
            let key = [&alert["raw"], &alert["message"]]
                .into_iter()
                .filter_map(|v| v.as_str()?.rsplit_once("probe ")?.1.parse::<u64>().ok())
                .next();
            match key {
                Some(n) if alerts.contains_key(&n) => {
                    mismatches.push(format!("{name} #{n}: two alerts"))
                }
                Some(n) => {
                    alerts.insert(n, alert);
                }
                None => mismatches.push(format!("{name}: alert without a probe: {line:.100}")),
            }
        }
        let expected =
            std::fs::read_to_string(cases.path().join(format!("{name}.expected.jsonl"))).unwrap();
        let expected: Vec<Value> = expected
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(expected.len().to_string(), lines, "{name}: datasets.tsv");
        total += expected.len();
        for e in &expected {
            match alerts.get(&e["n"].as_u64().unwrap()) {
                Some(alert) => check_loghub_case(name, e, alert, &mut mismatches),
                None => mismatches.push(format!("{name} #{}: no alert", e["n"])),
            }
        }
        if alerts.len() != expected.len() {
            mismatches.push(format!(
                "{name}: {} alerts for {} lines",
                alerts.len(),
                expected.len()
            ));
        }
    }
    assert_eq!(total, 6000, "the corpus has three datasets of 2,000 lines");
    assert!(
        mismatches.is_empty(),
        "{} of {total} lines differ from the loghub README's reading, first ones:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(20)].join("\n")
    );
}
