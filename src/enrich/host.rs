//! Host identity: hostname, FQDN, machine id, boot id and the configured site/rack/node/cluster.
//!
//! Read once when the enricher is built: none of these change while the daemon runs (the boot id
//! only changes across a reboot, which restarts the daemon).
//!
//! The FQDN is derived without DNS, so that start-up never blocks on a resolver: the configured
//! `fqdn`; else the hostname if it already has a dot; else the first name starting with
//! `<hostname>.` on an `/etc/hosts` line that names the host; else `<hostname>.<domainname>`
//! from the kernel's NIS domain name when set; else the hostname.

use std::fs;
use std::path::Path;

use crate::alert::Host;
use crate::config::enrich::EnrichConfig;
use crate::enrich::EnrichError;

fn read_trimmed(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// The kernel's hostname, `None` when unset.
fn kernel_hostname() -> Option<String> {
    Some(crate::alert::host_name()).filter(|name| !name.is_empty())
}

/// The FQDN for `hostname` from an `/etc/hosts` text (see the module doc).
pub(crate) fn fqdn_from_hosts(hosts: &str, hostname: &str) -> Option<String> {
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        if fields.next().is_none() {
            continue;
        }
        let names: Vec<&str> = fields.collect();
        let short = hostname.split('.').next().unwrap_or(hostname);
        let names_host = names
            .iter()
            .any(|n| *n == hostname || n.split('.').next() == Some(short));
        if !names_host {
            continue;
        }
        if let Some(fqdn) = names.iter().find(|n| {
            n.len() > short.len() + 1 && n.starts_with(short) && n.as_bytes()[short.len()] == b'.'
        }) {
            return Some((*fqdn).to_string());
        }
    }
    None
}

/// The host identity, from the config and the files under `etc_root` and `proc_root`.
pub(crate) fn identity(cfg: &EnrichConfig) -> Result<Host, EnrichError> {
    let hostname = cfg
        .hostname
        .clone()
        .or_else(|| read_trimmed(&cfg.proc_root.join("sys/kernel/hostname")))
        .or_else(kernel_hostname)
        .ok_or(EnrichError::NoHostname)?;
    let fqdn = cfg
        .fqdn
        .clone()
        .or_else(|| hostname.contains('.').then(|| hostname.clone()))
        .or_else(|| {
            let hosts = fs::read_to_string(cfg.etc_root.join("hosts")).ok()?;
            fqdn_from_hosts(&hosts, &hostname)
        })
        .or_else(|| {
            read_trimmed(&cfg.proc_root.join("sys/kernel/domainname"))
                .filter(|d| d != "(none)")
                .map(|d| format!("{hostname}.{d}"))
        })
        .unwrap_or_else(|| hostname.clone());
    Ok(Host {
        hostname,
        fqdn,
        machine_id: read_trimmed(&cfg.etc_root.join("machine-id")),
        boot_id: read_trimmed(&cfg.proc_root.join("sys/kernel/random/boot_id")),
        site_id: cfg.site_id.clone(),
        rack_id: cfg.rack_id.clone(),
        node_id: cfg.node_id.clone(),
        cluster_id: cfg.cluster_id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdn_comes_from_the_hosts_line_naming_the_host() {
        let hosts = "127.0.0.1 localhost localhost.localdomain\n\
                     # 10.0.0.5 node1.wrong.example node1\n\
                     10.0.0.5 node1 node1.lab.example # comment\n\
                     10.0.0.6 node10.lab.example node10\n";
        assert_eq!(
            fqdn_from_hosts(hosts, "node1").as_deref(),
            Some("node1.lab.example")
        );
        assert_eq!(
            fqdn_from_hosts(hosts, "node10").as_deref(),
            Some("node10.lab.example")
        );
        assert_eq!(fqdn_from_hosts(hosts, "node2"), None);
        assert_eq!(fqdn_from_hosts("10.0.0.5 node1\n", "node1"), None);
    }

    #[test]
    fn identity_reads_the_roots_and_falls_back_to_the_domainname() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        let proc_ = dir.path().join("proc");
        fs::create_dir_all(&etc).unwrap();
        fs::create_dir_all(proc_.join("sys/kernel/random")).unwrap();
        fs::write(etc.join("machine-id"), "0123456789abcdef0123456789abcdef\n").unwrap();
        fs::write(etc.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        fs::write(proc_.join("sys/kernel/hostname"), "srv7\n").unwrap();
        fs::write(proc_.join("sys/kernel/domainname"), "corp.example\n").unwrap();
        fs::write(
            proc_.join("sys/kernel/random/boot_id"),
            "7d3f0f5e-2c5b-4d8e-9d3a-1b2c3d4e5f60\n",
        )
        .unwrap();
        let cfg = EnrichConfig {
            etc_root: etc,
            proc_root: proc_,
            site_id: Some("s1".into()),
            cluster_id: Some("c1".into()),
            ..EnrichConfig::default()
        };
        let host = identity(&cfg).unwrap();
        assert_eq!(
            host,
            Host {
                hostname: "srv7".into(),
                fqdn: "srv7.corp.example".into(),
                machine_id: Some("0123456789abcdef0123456789abcdef".into()),
                boot_id: Some("7d3f0f5e-2c5b-4d8e-9d3a-1b2c3d4e5f60".into()),
                site_id: Some("s1".into()),
                rack_id: None,
                node_id: None,
                cluster_id: Some("c1".into()),
            }
        );
    }

    #[test]
    fn missing_proc_falls_back_to_the_kernel_hostname() {
        let cfg = EnrichConfig {
            etc_root: "/nonexistent/etc".into(),
            proc_root: "/nonexistent/proc".into(),
            ..EnrichConfig::default()
        };
        let host = identity(&cfg).unwrap();
        assert_eq!(Some(host.hostname.clone()), kernel_hostname());
        assert_eq!(host.machine_id, None);
    }
}
