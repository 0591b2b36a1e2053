//! The native journald protocol (systemd's JOURNAL_NATIVE_PROTOCOL), for one record.
//!
//! One datagram per entry on an `AF_UNIX` `SOCK_DGRAM` socket. Each field is `NAME=value\n`, or,
//! when the value holds a newline, `NAME\n` + the value's length as a little-endian u64 + the
//! value + `\n`. An entry too large for one datagram (larger than the socket's send buffer, or
//! refused with `EMSGSIZE`/`ENOBUFS`) is written to a memfd, sealed against any change, and its fd
//! is sent with `SCM_RIGHTS` in an empty datagram; journald reads the entry from the fd.
//!
//! No crate offers this with a socket path override (`libsystemd` and `systemd-journal-logger`
//! hard-code `/run/systemd/journal/socket`), which tests and containers need; `rustix` gives safe
//! `memfd_create`, `fcntl_add_seals` and `sendmsg` with ancillary data.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, memfd_create};
use rustix::io::Errno;
use rustix::net::{
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, sendmsg_addr,
};

use super::{Identity, Record, message_id, priority};

/// The journal fields of one record, in the order they are written. `MESSAGE` is the escaped
/// one-line text (as in syslog); the `IEM_*` fields are exact, `IEM_DESCRIPTION` unescaped.
pub(crate) fn fields(record: &Record, identity: &Identity) -> Vec<(&'static str, Vec<u8>)> {
    let code = &record.code;
    let mut fields: Vec<(&'static str, Vec<u8>)> = vec![
        ("MESSAGE", record.text().into_bytes()),
        ("PRIORITY", priority(code.severity).to_string().into_bytes()),
        ("SYSLOG_IDENTIFIER", identity.tag.clone().into_bytes()),
        ("SYSLOG_PID", identity.pid.to_string().into_bytes()),
        ("MESSAGE_ID", message_id(code).into_bytes()),
        ("IEM_CODE", code.to_string().into_bytes()),
        (
            "IEM_SEVERITY",
            code.severity.letter().to_string().into_bytes(),
        ),
        ("IEM_SOURCE", code.source.letter().to_string().into_bytes()),
        (
            "IEM_COMPONENT",
            format!("{:03x}", code.component).into_bytes(),
        ),
        ("IEM_MODULE", format!("{:03x}", code.module).into_bytes()),
        ("IEM_EVENT", format!("{:04x}", code.event).into_bytes()),
        ("IEM_DESCRIPTION", record.raw_message.clone().into_bytes()),
    ];
    if let Some(extra) = &record.extra {
        fields.push(("IEM_EXTRA", extra.clone().into_bytes()));
    }
    fields
}

/// Serializes fields in the native protocol.
pub(crate) fn encode(fields: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend_from_slice(name.as_bytes());
        if value.contains(&b'\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            out.push(b'=');
        }
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// Sends one encoded entry to the journal socket at `path`, through a memfd when it does not
/// fit in one datagram.
pub(crate) fn send(socket: &UnixDatagram, path: &Path, payload: &[u8]) -> io::Result<()> {
    let limit = rustix::net::sockopt::socket_send_buffer_size(socket).unwrap_or(usize::MAX);
    if payload.len() < limit {
        match socket.send_to(payload, path) {
            Ok(_) => return Ok(()),
            Err(e)
                if e.raw_os_error() == Some(Errno::MSGSIZE.raw_os_error())
                    || e.raw_os_error() == Some(Errno::NOBUFS.raw_os_error()) => {}
            Err(e) => return Err(e),
        }
    }
    send_memfd(socket, path, payload)
}

/// Writes the entry to a sealed memfd and passes the fd to journald in an empty datagram.
pub(crate) fn send_memfd(socket: &UnixDatagram, path: &Path, payload: &[u8]) -> io::Result<()> {
    let fd = memfd_create(
        "iemctl-emit",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut file = File::from(fd);
    file.write_all(payload)?;
    // journald refuses an unsealed memfd: the sender must not be able to change it afterwards.
    fcntl_add_seals(
        &file,
        SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL,
    )?;
    let fds = [file.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("ancillary buffer too small for one fd"));
    }
    let addr = SocketAddrUnix::new(path)?;
    let empty: [IoSlice<'_>; 0] = [];
    sendmsg_addr(socket, &addr, &empty, &mut control, SendFlags::empty())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emit::parse_code;

    #[test]
    fn encode_plain_and_binary_values() {
        let out = encode(&[
            ("MESSAGE", b"one line".to_vec()),
            ("IEM_DESCRIPTION", b"two\nlines".to_vec()),
        ]);
        let mut want = b"MESSAGE=one line\nIEM_DESCRIPTION\n".to_vec();
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines\n");
        assert_eq!(out, want);
    }

    #[test]
    fn fields_of_a_record() {
        let code = parse_code("WS0080010001").unwrap();
        let record = Record::new(code, "lost\nnode", Some(r#"{"h":1}"#.into()), 100).unwrap();
        let identity = Identity::new("ha", 42).unwrap();
        let f = fields(&record, &identity);
        let get = |n: &str| {
            f.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        };
        assert_eq!(
            get("MESSAGE").as_deref(),
            Some(r#"IEC:WS0080010001:lost\nnode {"h":1}"#)
        );
        assert_eq!(get("PRIORITY").as_deref(), Some("4"));
        assert_eq!(get("SYSLOG_IDENTIFIER").as_deref(), Some("ha"));
        assert_eq!(get("SYSLOG_PID").as_deref(), Some("42"));
        assert_eq!(get("IEM_CODE").as_deref(), Some("WS0080010001"));
        assert_eq!(get("IEM_COMPONENT").as_deref(), Some("008"));
        assert_eq!(get("IEM_MODULE").as_deref(), Some("001"));
        assert_eq!(get("IEM_EVENT").as_deref(), Some("0001"));
        assert_eq!(get("IEM_DESCRIPTION").as_deref(), Some("lost\nnode"));
        assert_eq!(get("IEM_EXTRA").as_deref(), Some(r#"{"h":1}"#));
        assert_eq!(get("MESSAGE_ID"), Some(message_id(&code)));
    }
}
