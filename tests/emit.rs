//! Integration tests: emit. The real `iemctl` binary writes to real unix datagram sockets bound
//! in a temporary directory (stand-ins for /dev/log and journald's socket), and its records are
//! read back with the project's parsers.

use std::fs::File;
use std::io::{IoSliceMut, Read, Seek, SeekFrom, Write};
use std::mem::MaybeUninit;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use iem_parsers::iem::Classified;
use iem_parsers::syslog::Format;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};

fn iemctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iemctl"))
}

/// A bound datagram socket in a fresh temporary directory.
struct Sink {
    _dir: tempfile::TempDir,
    path: PathBuf,
    socket: UnixDatagram,
}

impl Sink {
    fn new() -> Sink {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Sink {
            _dir: dir,
            path,
            socket,
        }
    }

    fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 1 << 20];
        let n = self.socket.recv(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    /// Asserts nothing more was received.
    fn assert_empty(&self) {
        self.socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        let err = self.socket.recv(&mut buf).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        self.socket.set_nonblocking(false).unwrap();
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    if !out.status.success() {
        eprintln!("stderr: {}", String::from_utf8_lossy(&out.stderr));
    }
    out
}

fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

fn syslog_cmd(sink: &Sink, format: &str) -> Command {
    let mut cmd = iemctl();
    cmd.args([
        "emit",
        "--to",
        "syslog",
        "--syslog-format",
        format,
        "--socket",
    ])
    .arg(&sink.path)
    .args(["--tag", "s3server", "--pid", "1234"]);
    cmd
}

/// Decodes the journal native protocol: `NAME=value\n` or `NAME\n<u64 LE len><value>\n`.
fn decode_journal(mut b: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut fields = Vec::new();
    while !b.is_empty() {
        let nl = b.iter().position(|&c| c == b'\n').expect("field ends");
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            let name = String::from_utf8(line[..eq].to_vec()).unwrap();
            fields.push((name, line[eq + 1..].to_vec()));
            b = &b[nl + 1..];
        } else {
            let name = String::from_utf8(line.to_vec()).unwrap();
            let len = u64::from_le_bytes(b[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let value = b[nl + 9..nl + 9 + len].to_vec();
            assert_eq!(
                b[nl + 9 + len],
                b'\n',
                "binary field {name} ends with a newline"
            );
            fields.push((name, value));
            b = &b[nl + 10 + len..];
        }
    }
    fields
}

fn field<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    let found: Vec<_> = fields.iter().filter(|(n, _)| n == name).collect();
    assert_eq!(found.len(), 1, "exactly one {name} field in {fields:?}");
    &found[0].1
}

fn field_str<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> &'a str {
    std::str::from_utf8(field(fields, name)).unwrap()
}

#[test]
fn syslog_rfc5424_record_parses_back() {
    let sink = Sink::new();
    let out = run(syslog_cmd(&sink, "rfc5424").args([
        "--json-extra",
        r#"{ "host": "node1",  "rc": -110 }"#,
        "es003001000A",
        "S3 server cannot connect to auth server",
    ]));
    assert!(out.status.success());
    let line = String::from_utf8(sink.recv()).unwrap();
    sink.assert_empty();
    // user.err = 1*8+3
    assert!(line.starts_with("<11>1 "), "{line}");
    assert!(
        line.ends_with(
            r#" s3server 1234 ES003001000a - IEC:ES003001000a:S3 server cannot connect to auth server {"host":"node1","rc":-110}"#
        ),
        "{line}"
    );

    let parsed = iem_parsers::parse_syslog_line(&line);
    assert_eq!(parsed.header.format, Format::Rfc5424);
    assert_eq!(parsed.header.priority, Some(11));
    assert_eq!(parsed.header.program, Some("s3server"));
    assert_eq!(parsed.header.pid, Some("1234"));
    assert_eq!(parsed.header.msgid, Some("ES003001000a"));
    let Classified::Iem(iem) = parsed.iem else {
        panic!("not an IEM: {parsed:?}")
    };
    assert_eq!(iem.code.to_string(), "ES003001000a");
    assert_eq!(iem.description, "S3 server cannot connect to auth server");
    assert_eq!(iem.extra, Some(r#"{"host":"node1","rc":-110}"#));
}

/// Splits a syslog(3)-form datagram `<PRI>Mmm dd hh:mm:ss TAG[PID]: MSG` into PRI, TAG, PID
/// and MSG, checking the timestamp's shape.
fn split_local(datagram: &str) -> (u8, &str, &str, &str) {
    let rest = datagram.strip_prefix('<').expect("<PRI>");
    let (pri, rest) = rest.split_once('>').expect("<PRI>");
    let (stamp, rest) = rest.split_at(15);
    let b = stamp.as_bytes();
    assert!(
        b[3] == b' ' && b[6] == b' ' && b[9] == b':' && b[12] == b':',
        "timestamp {stamp:?}"
    );
    let rest = rest.strip_prefix(' ').expect("space after the timestamp");
    let (tag, rest) = rest.split_once('[').expect("TAG[");
    let (pid, msg) = rest.split_once("]: ").expect("PID]: ");
    (pri.parse().unwrap(), tag, pid, msg)
}

#[test]
fn syslog_rfc3164_is_the_syslog3_form() {
    let sink = Sink::new();
    let out = run(iemctl()
        .args(["emit", "--to", "syslog", "--socket"])
        .arg(&sink.path)
        .args([
            "--tag",
            "s3server",
            "--pid",
            "1234",
            "--facility",
            "local3",
            "WS0080010001",
            "The cluster has lost ssc-vm-1 server.",
        ]));
    assert!(out.status.success());
    let line = String::from_utf8(sink.recv()).unwrap();
    // No host name: local readers add their own (and would take ours for the tag).
    let (pri, tag, pid, msg) = split_local(&line);
    // local3.warning = 19*8+4
    assert_eq!((pri, tag, pid), (156, "s3server", "1234"));
    assert_eq!(
        msg,
        "IEC:WS0080010001:The cluster has lost ssc-vm-1 server."
    );
    let Classified::Iem(iem) = iem_parsers::iem::classify(msg) else {
        panic!("not an IEM: {msg}")
    };
    assert_eq!(iem.code.to_string(), "WS0080010001");
    assert_eq!(iem.description, "The cluster has lost ssc-vm-1 server.");
}

#[test]
fn field_flags_build_the_same_code() {
    let sink = Sink::new();
    let out = run(syslog_cmd(&sink, "rfc3164").args([
        "--severity",
        "error",
        "--source",
        "S",
        "--component",
        "003",
        "--module",
        "0x1",
        "--event",
        "0001",
        "Ldap down",
    ]));
    assert!(out.status.success());
    let line = String::from_utf8(sink.recv()).unwrap();
    assert!(
        line.ends_with("s3server[1234]: IEC:ES0030010001:Ldap down"),
        "{line}"
    );
}

#[test]
fn journald_native_protocol_fields() {
    let sink = Sink::new();
    let out = run(iemctl()
        .args(["emit", "--to", "journald", "--socket"])
        .arg(&sink.path)
        .args([
            "--tag",
            "m0d",
            "--pid",
            "77",
            "--json-extra",
            r#"{"fom":"0x7f3a"}"#,
            "AS0020020005",
            "HUNG_FOM_NOTIFY\ndiff_in_sec=13",
        ]));
    assert!(out.status.success());
    let datagram = sink.recv();
    sink.assert_empty();
    // The multi-line description travels in the binary length-prefixed form.
    let mut binary = b"\nIEM_DESCRIPTION\n".to_vec();
    binary.extend_from_slice(&30u64.to_le_bytes());
    binary.extend_from_slice(b"HUNG_FOM_NOTIFY\ndiff_in_sec=13\n");
    assert!(
        datagram.windows(binary.len()).any(|w| w == binary),
        "binary field encoding"
    );

    let fields = decode_journal(&datagram);
    assert_eq!(
        field_str(&fields, "MESSAGE"),
        r#"IEC:AS0020020005:HUNG_FOM_NOTIFY\ndiff_in_sec=13 {"fom":"0x7f3a"}"#
    );
    assert_eq!(field_str(&fields, "PRIORITY"), "1");
    assert_eq!(field_str(&fields, "SYSLOG_IDENTIFIER"), "m0d");
    assert_eq!(field_str(&fields, "SYSLOG_PID"), "77");
    let id = field_str(&fields, "MESSAGE_ID");
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(field_str(&fields, "IEM_CODE"), "AS0020020005");
    assert_eq!(field_str(&fields, "IEM_COMPONENT"), "002");
    assert_eq!(field_str(&fields, "IEM_MODULE"), "002");
    assert_eq!(field_str(&fields, "IEM_EVENT"), "0005");
    assert_eq!(
        field_str(&fields, "IEM_DESCRIPTION"),
        "HUNG_FOM_NOTIFY\ndiff_in_sec=13"
    );
    assert_eq!(field_str(&fields, "IEM_EXTRA"), r#"{"fom":"0x7f3a"}"#);

    // The same code gives the same MESSAGE_ID from another process; another code does not.
    let id = id.to_string();
    for (code, same) in [("AS0020020005", true), ("ES0020020005", false)] {
        let out = run(iemctl()
            .args(["emit", "--to", "journald", "--socket"])
            .arg(&sink.path)
            .args([code, "again"]));
        assert!(out.status.success());
        let fields = decode_journal(&sink.recv());
        assert_eq!(field_str(&fields, "MESSAGE_ID") == id, same, "{code}");
    }
}

#[test]
fn journald_large_entry_goes_through_a_sealed_memfd() {
    let sink = Sink::new();
    // Larger than any default unix datagram send buffer (212992 bytes), and than argv allows
    // for one argument, so it comes from stdin.
    let message = "x".repeat(400_000);
    let out = run_with_stdin(
        iemctl()
            .args([
                "emit",
                "--to",
                "journald",
                "--max-length",
                "1000000",
                "--socket",
            ])
            .arg(&sink.path)
            .args(["ES0030010001", "-"]),
        format!("{message}\n").as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut buf = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(
        &sink.socket,
        &mut iov,
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .unwrap();
    assert_eq!(got.bytes, 0, "the datagram carrying the fd is empty");
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    assert_eq!(fds.len(), 1);
    let fd = fds.pop().unwrap();
    let seals = rustix::fs::fcntl_get_seals(&fd).unwrap();
    use rustix::fs::SealFlags;
    assert!(
        seals.contains(SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
    );
    let mut payload = Vec::new();
    let mut file = File::from(fd);
    // The fd shares the sender's file offset, which is at the end.
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut payload).unwrap();
    let fields = decode_journal(&payload);
    assert_eq!(
        field_str(&fields, "MESSAGE"),
        format!("IEC:ES0030010001:{message}")
    );
    assert_eq!(field_str(&fields, "IEM_DESCRIPTION"), message);
    sink.assert_empty();
}

#[test]
fn injection_attempts_stay_one_record() {
    // argv cannot hold NUL; the stdin test below sends one.
    let attack = "legit\nNov 21 22:50:01 node1 evil[1]: IEC:AS0020020005:forged\r\
                  IEC:AS0020020005:cr \x1b[2J\x1b]0;title\x07 \u{9b}31m \u{2028}end\\n";
    let want = "IEC:ES0030010001:legit\\nNov 21 22:50:01 node1 evil[1]: IEC:AS0020020005:forged\\r\
                IEC:AS0020020005:cr \\x1b[2J\\x1b]0;title\\x07 \\u{009b}31m \\u{2028}end\\\\n";
    for format in ["rfc5424", "rfc3164"] {
        let sink = Sink::new();
        let out = run(syslog_cmd(&sink, format).args(["ES0030010001", attack]));
        assert!(out.status.success());
        let line = String::from_utf8(sink.recv()).unwrap();
        sink.assert_empty();
        assert!(line.ends_with(want), "{format}: {line}");
        assert!(!line.chars().any(char::is_control), "{format}: {line:?}");
        let message = if format == "rfc3164" {
            split_local(&line).3
        } else {
            iem_parsers::parse_syslog_line(&line).message
        };
        let Classified::Iem(iem) = iem_parsers::iem::classify(message) else {
            panic!("not an IEM: {message}")
        };
        assert_eq!(iem.code.to_string(), "ES0030010001", "the first code wins");
    }

    let out = run(iemctl().args([
        "emit",
        "--to",
        "stdout",
        "--tag",
        "t",
        "ES0030010001",
        attack,
    ]));
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(text.trim_end_matches('\n').ends_with(want), "{text}");

    // NUL and CR inside a stdin line.
    let sink = Sink::new();
    let out = run_with_stdin(
        syslog_cmd(&sink, "rfc3164").args(["ES0030010001", "-"]),
        b"a\0b\rc\x1b[0m\n",
    );
    assert!(out.status.success());
    let line = String::from_utf8(sink.recv()).unwrap();
    sink.assert_empty();
    assert!(
        line.ends_with(": IEC:ES0030010001:a\\x00b\\rc\\x1b[0m"),
        "{line:?}"
    );
}

/// Regression (issue 14): `--json-extra` passed raw C1 controls, DEL and U+2028/U+2029 into
/// the log line (serde_json writes them raw inside strings).
#[test]
fn json_extra_holds_no_raw_control() {
    let extra = "{\"k\":\"a\u{9b}31m b\u{7f} c\u{2028}d\u{85}\\u001b\"}";
    let out = run(iemctl().args([
        "emit",
        "--to",
        "stdout",
        "--json-extra",
        extra,
        "ES0030010001",
        "m\u{9b}",
    ]));
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.strip_suffix('\n').unwrap();
    assert!(
        line.ends_with(
            r#"IEC:ES0030010001:m\u{009b} {"k":"a\u009b31m b\u007f c\u2028d\u0085\u001b"}"#
        ),
        "{line}"
    );
    assert!(
        !line
            .chars()
            .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}'),
        "{line:?}"
    );
    // The JSON still means what was given.
    let json = &line[line.find(" {").unwrap() + 1..];
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(json).unwrap(),
        serde_json::from_str::<serde_json::Value>(extra).unwrap()
    );
}

#[test]
fn stdin_lines_are_records_each() {
    let sink = Sink::new();
    let out = run_with_stdin(
        syslog_cmd(&sink, "rfc3164").args(["IS0030010001", "-"]),
        b"first\r\n\n  \nsecond\nthird without newline",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in ["first", "second", "third without newline"] {
        let line = String::from_utf8(sink.recv()).unwrap();
        assert!(
            line.ends_with(&format!(": IEC:IS0030010001:{want}")),
            "{line}"
        );
    }
    sink.assert_empty();

    // A refused line is reported with its number; the others are still written; exit 2.
    let out = run_with_stdin(
        syslog_cmd(&sink, "rfc3164").args(["--max-length", "5", "IS0030010001", "-"]),
        b"ok\ntoo long\nfine\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2") && stderr.contains("maximum of 5"),
        "{stderr}"
    );
    assert!(String::from_utf8(sink.recv()).unwrap().ends_with(":ok"));
    assert!(String::from_utf8(sink.recv()).unwrap().ends_with(":fine"));
    sink.assert_empty();
}

#[test]
fn default_identity_is_the_parent_process() {
    let sink = Sink::new();
    let out = run(iemctl()
        .args([
            "emit",
            "--to",
            "syslog",
            "--syslog-format",
            "rfc3164",
            "--socket",
        ])
        .arg(&sink.path)
        .args(["ES0030010001", "who"]));
    assert!(out.status.success());
    let line = String::from_utf8(sink.recv()).unwrap();
    // This test process is iemctl's parent.
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    let want = format!(" {}[{}]: ", comm.trim_end(), std::process::id());
    assert!(line.contains(&want), "{line} lacks {want}");
}

#[test]
fn stdout_round_trips_through_iemctl_parse() {
    let mut emit = iemctl()
        .args([
            "emit",
            "--to",
            "stdout",
            "--tag",
            "s3server",
            "--pid",
            "1234",
            "--json-extra",
            r#"{"node": "n1"}"#,
            "ES0030010001",
            "S3 server cannot connect to auth server",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = iemctl()
        .args(["parse", "-"])
        .stdin(emit.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(emit.wait().unwrap().success());
    assert!(
        out.status.success(),
        "iemctl parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let alerts: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(alerts.len(), 1, "{text}");
    assert_eq!(alerts[0]["code"], "ES0030010001");
    assert_eq!(
        alerts[0]["message"],
        "S3 server cannot connect to auth server"
    );
    assert_eq!(alerts[0]["extra"], serde_json::json!({"node": "n1"}));
}

fn failure(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    assert!(out.stdout.is_empty(), "nothing written on failure");
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn validation_errors_exit_2_and_name_the_field() {
    let cases: &[(&[&str], &str)] = &[
        (&["ES0030000001", "m"], "ES0030000001"),
        (&["ES0030000001", "m"], "module 000 out of range"),
        (&["ES003001", "m"], "8 characters"),
        (&["QS0030010001", "m"], "unknown severity 'Q'"),
        (&["--json-extra", "[1]", "ES0030010001", "m"], "json-extra"),
        (
            &["--json-extra", "{\"a\":", "ES0030010001", "m"],
            "json-extra",
        ),
        (&["--tag", "bad tag", "ES0030010001", "m"], "tag"),
        (&["--facility", "local9", "ES0030010001", "m"], "facility"),
        (
            &["--max-length", "3", "ES0030010001", "long"],
            "maximum of 3",
        ),
        (&["ES0030010001", " "], "empty"),
        (&["--severity", "E", "ES0030010001", "m"], "all five"),
        (
            &[
                "--severity",
                "E",
                "--source",
                "S",
                "--component",
                "101",
                "--module",
                "1",
                "--event",
                "1",
                "m",
            ],
            "component",
        ),
        (&["--strict", "AS0ff0ff270f", "m"], "AS0ff0ff270f"),
        (
            &["--socket", "/tmp/x", "ES0030010001", "m"],
            "--to journald",
        ),
    ];
    for (args, needle) in cases {
        let (code, stderr) = failure(iemctl().args(["emit", "--to", "stdout"]).args(*args));
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr} lacks {needle}");
    }
    // clap's own usage errors are 2 as well.
    let (code, _) = failure(iemctl().args(["emit", "--to", "pigeon", "ES0030010001", "m"]));
    assert_eq!(code, 2);
}

#[test]
fn unknown_code_warns_without_strict() {
    let out = run(iemctl().args(["emit", "--to", "stdout", "AS0ff0ff270f", "m"]));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the catalog"));
}

#[test]
fn missing_socket_exits_3_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-socket");
    for to in ["journald", "syslog"] {
        let (code, stderr) = failure(
            iemctl()
                .args(["emit", "--to", to, "--socket"])
                .arg(&path)
                .args(["ES0030010001", "m"]),
        );
        assert_eq!(code, 3, "{to}: {stderr}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "{to}: {stderr}"
        );
    }
    // A socket file nobody listens on any more.
    let stale = dir.path().join("stale");
    drop(UnixDatagram::bind(&stale).unwrap());
    assert!(Path::new(&stale).exists());
    let (code, _) = failure(
        iemctl()
            .args(["emit", "--to", "syslog", "--socket"])
            .arg(&stale)
            .args(["ES0030010001", "m"]),
    );
    assert_eq!(code, 3);
}

#[test]
fn help_has_an_example() {
    let out = run(iemctl().args(["emit", "--help"]));
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("iemctl emit ES0030010001"), "{help}");
    assert!(help.contains("--json-extra"));
}

/// Runs `script` with `sh` after sourcing packaging/iem-emit.sh, as a wrapper script would.
fn helper_script(dir: &Path, name: &str, body: &str, opts: &str) -> Output {
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/iem-emit.sh");
    let script = dir.join(name);
    std::fs::write(&script, format!(". '{}'\n{body}\n", helper.display())).unwrap();
    let out = Command::new("sh")
        .arg(&script)
        .env("IEMCTL", env!("CARGO_BIN_EXE_iemctl"))
        .env("IEM_EMIT_OPTS", opts)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn shell_helper_tags_with_the_script_and_never_exits_it() {
    let sink = Sink::new();
    let dir = tempfile::tempdir().unwrap();
    let opts = format!(
        "--to syslog --syslog-format rfc3164 --socket {}",
        sink.path.display()
    );
    let out = helper_script(
        dir.path(),
        "m0d wrapper.sh",
        r#"set -e
iem_emit ES0020020002 "-IO error on /dev/sdb" '{"dev": "sdb"}'
echo "ok=$? pid=$$"
iem_emit ES0020020002 "extra" "[not json]" || :
echo "bad=$IEM_EMIT_STATUS"
iem_emit ES002002 "bad code" || echo "code=$?"
iem_emit only-one-arg || echo "usage=$?"
IEMCTL=/nonexistent/iemctl iem_emit ES0020020002 "m" 2>/dev/null || echo "missing=$?"
echo done"#,
        &opts,
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let pid = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ok=0 pid="))
        .unwrap_or_else(|| panic!("{stdout}"));
    let line = String::from_utf8(sink.recv()).unwrap();
    sink.assert_empty();
    assert!(
        line.ends_with(&format!(
            " m0d_wrapper.sh[{pid}]: IEC:ES0020020002:-IO error on /dev/sdb {{\"dev\":\"sdb\"}}"
        )),
        "{line}"
    );
    for want in ["bad=2", "code=2", "usage=2", "missing=127", "done"] {
        assert!(stdout.lines().any(|l| l == want), "{want} in {stdout}");
    }
}

/// A real systemd-journald in its own namespace (`systemd-journald NAMESPACE` listens on
/// /run/systemd/journal.NAMESPACE/socket), stopped and its files removed on drop.
struct Journald {
    child: std::process::Child,
    namespace: String,
    socket: PathBuf,
}

impl Journald {
    /// None (after a loud message) where journald cannot run: no binary, or not root.
    fn start(test: &str) -> Option<Journald> {
        let binary = [
            "/usr/lib/systemd/systemd-journald",
            "/lib/systemd/systemd-journald",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists());
        let is_root = rustix::process::geteuid().is_root();
        let (Some(binary), true) = (binary, is_root) else {
            eprintln!("\n!!!!!!!! SKIPPED {test}: needs root and systemd-journald !!!!!!!!\n");
            return None;
        };
        let namespace = format!("iemdemit{}", std::process::id());
        let child = Command::new(binary)
            .arg(&namespace)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let socket = PathBuf::from(format!("/run/systemd/journal.{namespace}/socket"));
        let journald = Journald {
            child,
            namespace,
            socket,
        };
        for _ in 0..100 {
            if journald.socket.exists() {
                return Some(journald);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("journald did not create {}", journald.socket.display());
    }

    /// The entries that have `field`, as `journalctl -o json --all` prints them.
    fn entries_with(&self, field: &str, want: usize) -> Vec<serde_json::Value> {
        let mut entries = Vec::new();
        for _ in 0..100 {
            let out = Command::new("journalctl")
                .args(["-o", "json", "--all", "--no-pager"])
                .arg(format!("--namespace={}", self.namespace))
                .output()
                .unwrap();
            entries = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|e| e.get(field).is_some())
                .collect();
            if entries.len() >= want {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        entries
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(format!("/run/systemd/journal.{}", self.namespace));
        if let Ok(id) = std::fs::read_to_string("/etc/machine-id") {
            for root in ["/var/log/journal", "/run/log/journal"] {
                let _ = std::fs::remove_dir_all(format!("{root}/{}.{}", id.trim(), self.namespace));
            }
        }
    }
}

#[test]
fn real_journald_stores_the_fields_and_the_memfd_entry() {
    let Some(journald) = Journald::start("real_journald_stores_the_fields_and_the_memfd_entry")
    else {
        return;
    };
    let out = run(iemctl()
        .args(["emit", "--to", "journald", "--socket"])
        .arg(&journald.socket)
        .args([
            "--tag",
            "m0d",
            "--pid",
            "4242",
            "--json-extra",
            r#"{"fom":"0x7f3a"}"#,
            "AS0020020005",
            "HUNG_FOM_NOTIFY\ndiff_in_sec=13",
        ]));
    assert!(out.status.success());
    let big = "y".repeat(300_000);
    let out = run_with_stdin(
        iemctl()
            .args([
                "emit",
                "--to",
                "journald",
                "--max-length",
                "1000000",
                "--tag",
                "big",
                "--socket",
            ])
            .arg(&journald.socket)
            .args(["ES0030010001", "-"]),
        big.as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let entries = journald.entries_with("IEM_CODE", 2);
    assert_eq!(entries.len(), 2, "{entries:?}");
    let e = &entries[0];
    assert_eq!(
        e["MESSAGE"],
        r#"IEC:AS0020020005:HUNG_FOM_NOTIFY\ndiff_in_sec=13 {"fom":"0x7f3a"}"#
    );
    assert_eq!(e["PRIORITY"], "1");
    assert_eq!(e["SYSLOG_IDENTIFIER"], "m0d");
    assert_eq!(e["SYSLOG_PID"], "4242");
    assert_eq!(e["IEM_CODE"], "AS0020020005");
    assert_eq!(e["IEM_COMPONENT"], "002");
    assert_eq!(e["IEM_MODULE"], "002");
    assert_eq!(e["IEM_EVENT"], "0005");
    assert_eq!(e["IEM_EXTRA"], r#"{"fom":"0x7f3a"}"#);
    // journalctl prints a value holding a newline as a string with --all, else as bytes.
    let description: Vec<u8> = match &e["IEM_DESCRIPTION"] {
        serde_json::Value::String(s) => s.clone().into_bytes(),
        serde_json::Value::Array(bytes) => {
            bytes.iter().map(|b| b.as_u64().unwrap() as u8).collect()
        }
        other => panic!("IEM_DESCRIPTION {other}"),
    };
    assert_eq!(description, b"HUNG_FOM_NOTIFY\ndiff_in_sec=13");
    assert_eq!(e["MESSAGE_ID"].as_str().unwrap().len(), 32, "{e}");

    let e = &entries[1];
    assert_eq!(e["SYSLOG_IDENTIFIER"], "big");
    assert_eq!(
        e["MESSAGE"].as_str().unwrap(),
        format!("IEC:ES0030010001:{big}")
    );

    // The default syslog datagram, on journald's own /dev/log socket: journald takes the tag and
    // pid from it and keeps exactly the IEM as MESSAGE.
    let dev_log = journald.socket.with_file_name("dev-log");
    let out = run(iemctl()
        .args([
            "emit", "--to", "syslog", "--tag", "s3server", "--pid", "1234", "--socket",
        ])
        .arg(&dev_log)
        .args(["ES0030010001", "via dev-log"]));
    assert!(out.status.success());
    let entries = journald.entries_with("SYSLOG_PID", 3);
    let e = entries
        .iter()
        .find(|e| e["SYSLOG_IDENTIFIER"] == "s3server")
        .unwrap_or_else(|| panic!("{entries:?}"));
    assert_eq!(e["SYSLOG_PID"], "1234");
    assert_eq!(e["PRIORITY"], "3");
    assert_eq!(e["MESSAGE"], "IEC:ES0030010001:via dev-log");
}
