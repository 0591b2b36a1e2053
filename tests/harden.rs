//! Hardening (issue 14), checked on the real `iemd` binary: links planted in the state
//! directories, state directories others control, the password in a child's environment, the
//! systemd credential, and the password file rule. The tests run as root; "another user" is
//! `nobody` (uid 65534), by `lchown` of planted links or by `setpriv`.

// Each test has its own runtime; holding the std broker lock across awaits only blocks it.
#![allow(clippy::await_holding_lock)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::amqp::unique;
use crate::util::daemon::{Daemon, append, collect, config, iem_line};
use crate::util::hostile::run_for;
use crate::util::{self, broker_lock};

const NOBODY: u32 = 65534;

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Regression (issue 14 item 1): running as root, links planted at `checkpoints.json.tmp` and
/// `spool/ack.tmp` were followed and the root-owned file they pointed to was overwritten. Now
/// both writes are refused with an error naming the link, and the target is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_planted_in_the_state_directory_are_refused_and_their_target_untouched() {
    if !util::broker_available("links_planted_in_the_state_directory_are_refused") {
        return;
    }
    let _broker = broker_lock::shared();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    fs::create_dir_all(state.join("spool")).unwrap();
    let target = dir.path().join("root-owned");
    fs::write(&target, "root's file\n").unwrap();
    for planted in [
        state.join("checkpoints.json.tmp"),
        state.join("spool/ack.tmp"),
    ] {
        symlink(&target, &planted).unwrap();
        lchown(&planted, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let log = dir.path().join("messages");
    append(&log, &[iem_line("n=0")]);
    let name = unique("harden-links");
    let mut daemon = Daemon::start(dir.path(), &config(dir.path(), &name, &[&log], ""));
    for planted in ["checkpoints.json.tmp", "spool/ack.tmp"] {
        let shown = format!(
            "{} is a symbolic link (owner uid {NOBODY}), which iemd never leaves there",
            state.join(planted).display()
        );
        daemon.wait_log(&shown, Duration::from_secs(30));
    }
    // The alert itself still went through: only the state writes are refused.
    let got = collect(&name, 1, Duration::from_secs(20)).await;
    daemon.kill9();
    assert_eq!(got.ids.len(), 1, "{}", daemon.log_text());
    assert_eq!(fs::read_to_string(&target).unwrap(), "root's file\n");
    assert!(state.join("checkpoints.json.tmp").is_symlink());
    assert!(state.join("spool/ack.tmp").is_symlink());
    assert!(!state.join("checkpoints.json").exists());
}

/// Issue 14 item 1: iemd refuses to start on a state or spool directory that another user owns
/// or that group or others can write, and says which and why.
#[test]
fn state_directories_others_control_are_refused_at_start() {
    type Spoil = fn(&Path);
    let cases: [(&str, Spoil); 3] = [
        ("writable by group or others (mode 777)", |state| {
            chmod(state, 0o777)
        }),
        (
            "owned by uid 65534, not by this user (uid 0) or root",
            |state| lchown(state, Some(NOBODY), Some(NOBODY)).unwrap(),
        ),
        ("writable by group or others (mode 770)", |state| {
            chmod(&state.join("spool"), 0o770)
        }),
    ];
    for (want, spoil) in cases {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        fs::create_dir_all(state.join("spool")).unwrap();
        spoil(&state);
        let log = dir.path().join("messages");
        append(&log, &[iem_line("n=0")]);
        let path = dir.path().join("iemd.toml");
        fs::write(&path, config(dir.path(), "unused", &[&log], "")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_iemd"));
        cmd.arg("--config").arg(&path);
        let out = run_for(cmd, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{want}: {stderr}");
        assert!(
            stderr.contains("state directory") && stderr.contains(want),
            "{want}: {stderr}"
        );
        assert!(!state.join("checkpoints.json").exists());
    }
}

/// The pid of `parent`'s child named `comm`, waiting for it to appear.
fn child_named(parent: u32, comm: &str, within: Duration) -> u32 {
    let start = Instant::now();
    loop {
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let ppid = stat[close + 1..].split_whitespace().nth(1);
            if &stat[open + 1..close] == comm && ppid == Some(&parent.to_string()) {
                return pid;
            }
        }
        assert!(start.elapsed() < within, "no {comm} child of {parent}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The variable names of an environment block (`/proc/<pid>/environ`).
fn names(environ: &str) -> Vec<&str> {
    environ
        .split('\0')
        .filter_map(|kv| kv.split('=').next())
        .collect()
}

/// Starts iemd on `config` in `dir` with `env` added to the test's environment.
fn start_with_env(dir: &Path, config: &str, env: &[(&str, &Path)]) -> (Child, std::path::PathBuf) {
    let path = dir.join("iemd.toml");
    fs::write(&path, config).unwrap();
    let log = dir.join("iemd.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iemd"));
    cmd.arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info,lapin=warn")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    (cmd.spawn().unwrap(), log)
}

fn wait_for(log: &Path, text: &str, within: Duration) -> String {
    let start = Instant::now();
    loop {
        let got = fs::read_to_string(log).unwrap_or_default();
        if got.contains(text) {
            return got;
        }
        assert!(start.elapsed() < within, "no {text:?} in:\n{got}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn journald_config(dir: &Path, name: &str, extra: &str) -> String {
    let journal = dir.join("journal");
    fs::create_dir(&journal).unwrap();
    util::journal::write_journal(&journal, &[b"IEC:ES0030010001:auth failed n=0"]);
    let sources = format!(
        "[sources.journald]\nenabled = true\ndirectory = \"{}\"\nstart_at = \"beginning\"\n{extra}",
        journal.display()
    );
    config(dir, name, &[], &sources)
}

/// Regression (issue 14 item 2): `/proc/<journalctl pid>/environ` held `IEMD_AMQP_PASSWORD`.
/// Now journalctl gets a clean environment, while the daemon still uses the password it took
/// out of its own (a wrong one here, so the broker's refusal shows it was used).
#[test]
fn journalctl_inherits_no_password() {
    if !util::broker_available("journalctl_inherits_no_password") {
        return;
    }
    let _broker = broker_lock::shared();
    let dir = tempfile::tempdir().unwrap();
    let canary = format!("canary-{}", std::process::id());
    let config = journald_config(dir.path(), &unique("harden-env"), "");
    let (mut child, log) = start_with_env(
        dir.path(),
        &config,
        &[
            ("IEMD_AMQP_USER", Path::new("guest")),
            ("IEMD_AMQP_PASSWORD", Path::new(&canary)),
        ],
    );
    let journalctl = child_named(child.id(), "journalctl", Duration::from_secs(20));
    let environ = fs::read(format!("/proc/{journalctl}/environ")).unwrap();
    let text = wait_for(&log, "no broker reachable", Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains("IEMD_AMQP") && !environ.contains(&canary),
        "journalctl's environment: {:?}",
        names(&environ)
    );
    assert!(!text.contains(&canary), "password in the log:\n{text}");
}

/// Issue 14 item 2: the password comes from the systemd credential `amqp-password` in
/// `$CREDENTIALS_DIRECTORY`, with `broker.user` and no password file; journalctl does not see
/// the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_credential_supplies_the_password() {
    if !util::broker_available("systemd_credential_supplies_the_password") {
        return;
    }
    let _broker = broker_lock::shared();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    fs::create_dir(&creds).unwrap();
    fs::write(creds.join("amqp-password"), "guest\n").unwrap();
    chmod(&creds.join("amqp-password"), 0o400);
    let name = unique("harden-cred");
    let config = journald_config(dir.path(), &name, "")
        .replace("[broker]\n", "[broker]\nuser = \"guest\"\n");
    let (mut child, log) =
        start_with_env(dir.path(), &config, &[("CREDENTIALS_DIRECTORY", &creds)]);
    let journalctl = child_named(child.id(), "journalctl", Duration::from_secs(20));
    let environ = fs::read(format!("/proc/{journalctl}/environ")).unwrap();
    let got = collect(&name, 1, Duration::from_secs(20)).await;
    let _ = child.kill();
    let _ = child.wait();
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(got.ids.len(), 1, "{text}");
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains("CREDENTIALS_DIRECTORY"),
        "journalctl's environment: {:?}",
        names(&environ)
    );
}

/// `iemd --check-config` on a config whose broker password is `password`, run as `nobody`
/// (setpriv, group nogroup only) or as root.
fn check_as(dir: &Path, password: &Path, as_nobody: bool, credentials: Option<&Path>) -> Output {
    let path = dir.join("iemd.toml");
    let log = dir.join("messages");
    fs::write(&log, "").unwrap();
    let password_file = if password.as_os_str().is_empty() {
        String::new()
    } else {
        format!("password_file = \"{}\"\n", password.display())
    };
    fs::write(
        &path,
        format!(
            "state_dir = \"{}\"\n[broker]\nuser = \"iem\"\n{password_file}\
             [[sources.files]]\npaths = [\"{}\"]\n",
            dir.join("state").display(),
            log.display()
        ),
    )
    .unwrap();
    chmod(&path, 0o644);
    let mut cmd = if as_nobody {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_iemd"),
        ]);
        cmd
    } else {
        Command::new(env!("CARGO_BIN_EXE_iemd"))
    };
    cmd.args(["--check-config", "--config"]).arg(&path);
    cmd.env_remove("IEMD_AMQP_PASSWORD")
        .env_remove("IEMD_AMQP_USER")
        .env_remove("CREDENTIALS_DIRECTORY");
    if let Some(creds) = credentials {
        cmd.env("CREDENTIALS_DIRECTORY", creds);
    }
    cmd.output().unwrap()
}

/// Regression (issue 14 item 3): a `root:iemd 0640` password file, what the package's /etc/iemd
/// layout suggests, was refused by `--check-config`. Now a file owned by root or the daemon's
/// user, readable by nobody but that owner and the daemon's group, passes; anything wider fails
/// with the file and the reason.
#[test]
fn password_file_rule_follows_the_package_layout() {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let pw = dir.path().join("amqp-password");
    fs::write(&pw, "s3cret\n").unwrap();
    // (owner, group, mode, run as nobody, expected problem or "" for none)
    let cases: &[(u32, u32, u32, bool, &str)] = &[
        (0, NOBODY, 0o640, true, ""),
        (NOBODY, NOBODY, 0o600, true, ""),
        (0, NOBODY, 0o640, false, ""),
        (0, 0, 0o600, false, ""),
        (
            0,
            NOBODY,
            0o644,
            true,
            "is readable by group or others (mode 644)",
        ),
        (
            0,
            NOBODY,
            0o660,
            true,
            "is writable by its group (mode 660)",
        ),
        (0, NOBODY, 0o642, true, "is writable by others (mode 642)"),
        (
            0,
            0,
            0o640,
            true,
            "is readable by group 0 (mode 640), which is not the daemon's group (gid 65534)",
        ),
        (
            1,
            NOBODY,
            0o640,
            true,
            "is owned by uid 1, not by root or this user (uid 65534)",
        ),
    ];
    for &(uid, gid, mode, as_nobody, want) in cases {
        lchown(&pw, Some(uid), Some(gid)).unwrap();
        chmod(&pw, mode);
        let out = check_as(dir.path(), &pw, as_nobody, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let case = format!(
            "{uid}:{gid} {mode:o} as {}",
            if as_nobody { "nobody" } else { "root" }
        );
        if want.is_empty() {
            assert!(out.status.success(), "{case}: {stderr}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{case}: {stderr}");
            let line = format!("broker.password_file: {} {want}", pw.display());
            assert!(
                stderr.contains(&line),
                "{case}: want {line:?} in:\n{stderr}"
            );
            assert!(!stderr.contains("s3cret"));
        }
    }

    // No password file: the systemd credential gives the password, or the user has none.
    let out = check_as(dir.path(), Path::new(""), false, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("broker.user: has no password"), "{stderr}");
    let creds = dir.path().join("credentials");
    fs::create_dir(&creds).unwrap();
    fs::write(creds.join("amqp-password"), "s3cret\n").unwrap();
    let out = check_as(dir.path(), Path::new(""), false, Some(&creds));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 13: a catalog component name too long for the alerts' AMQP routing key was found only
/// when the pipeline started. `iemd --check-config` and `iemctl check-config` now load the
/// catalog the config points at and name its file and line; the daemon refuses it at start.
#[test]
fn check_config_refuses_a_catalog_name_past_amqp_limits() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    fs::create_dir(&catalog).unwrap();
    let component = |name: &str| {
        let file = format!("# a site's own component\nid = \"0f0\"\nname = \"{name}\"\n");
        fs::write(catalog.join("site.toml"), file).unwrap();
    };
    let path = dir.path().join("iemd.toml");
    let log = dir.path().join("messages");
    fs::write(&log, "").unwrap();
    fs::write(
        &path,
        format!(
            "state_dir = \"{}\"\ncatalog_dirs = [\"{}\"]\n[[sources.files]]\npaths = [\"{}\"]\n",
            dir.path().join("state").display(),
            catalog.display(),
            log.display()
        ),
    )
    .unwrap();
    let iemd = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_iemd"))
            .args(args)
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap()
    };
    let iemctl = || {
        Command::new(env!("CARGO_BIN_EXE_iemctl"))
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap()
    };
    component(&"n".repeat(300));
    let site = catalog.join("site.toml");
    for out in [iemd(&["--check-config"]), iemctl(), iemd(&[])] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(&format!("{}:2: ", site.display())), "{err}");
        assert!(err.contains("300 characters long; at most 200"), "{err}");
        assert!(err.contains("routing key"), "{err}");
    }
    // The longest name that fits passes.
    component(&"n".repeat(200));
    for out in [iemd(&["--check-config"]), iemctl()] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
    }
}
