//! Finding device references in alert text, without regexes.
//!
//! A hand-written scanner: the text is cut into tokens (maximal runs of ASCII letters, digits and
//! `_ - . : /`), trailing `. : - /` are trimmed, and each token is classified by its first byte
//! and a few fixed shapes. One pass, no allocation, no per-alert regex; this is what keeps the
//! enrich stage near the cost of a JSON encode (see `benches/enrich.rs`).
//!
//! False positives are kept down by requiring whole tokens ("ethernet" is not `eth*`; "sdc2" inside
//! "xsdc2" is not found) and strict shapes:
//! - block names: `sd[a-z]{1,3}N?`, `vd[a-z]{1,3}N?`, `nvmeXnY(pZ)?`, `dm-N` (and the same after `/dev/`);
//! - `/dev/disk/by-id/NAME`, `/dev/disk/by-path/NAME`, `/dev/disk/by-uuid/NAME`,
//!   `/dev/disk/by-label/NAME`, `/dev/disk/by-partuuid/NAME`, `/dev/disk/by-partlabel/NAME`,
//!   `/dev/mapper/NAME`, `wwn-0xHEX`, `naa.HEX` (8..32 hex digits);
//! - SCSI `H:C:T:L`: exactly four groups of 1..5 digits. A time such as `12:30:45:1` has this shape
//!   too, so an H:C:T:L is only *reported* when it resolves (the enricher drops unresolved ones);
//! - NICs: the kernel and systemd naming schemes (`ethN`, `ibN`, `bondN`, `wlanN`, `enoN`, `ensN`,
//!   `enpNsN`, `enxMAC`, ... with an optional `.VLAN`), or any name the caller knows exists
//!   (`/sys/class/net` snapshot) other than `lo`.
//!
//! The references of one alert are collected in a [`Found`]: distinct texts only (a set), and the
//! scan stops once its budget is spent, so a hostile line (60 KB of made-up device names) costs one
//! linear pass and a bounded number of look-ups, not one per token.

use std::collections::HashSet;

/// The syntactic kind of a reference (the alert's `hardware[].ref_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RefKind {
    /// A kernel block device name: disk, partition, NVMe namespace, dm (`sdc`, `/dev/nvme0n1p2`).
    Block,
    /// `/dev/disk/by-id/...`.
    ById,
    /// `/dev/disk/by-path/...`.
    ByPath,
    /// `/dev/disk/by-uuid/...` (a file system UUID).
    ByUuid,
    /// `/dev/disk/by-label/...` (a file system label).
    ByLabel,
    /// `/dev/disk/by-partuuid/...` (a GPT partition UUID).
    ByPartuuid,
    /// `/dev/disk/by-partlabel/...` (a GPT partition name).
    ByPartlabel,
    /// `/dev/mapper/...` (a device-mapper name).
    Mapper,
    /// `wwn-0x...` (the by-id link name).
    Wwn,
    /// `naa....` (the SCSI wwid form).
    Naa,
    /// SCSI `host:channel:target:lun`.
    Hctl,
    /// A network interface.
    Nic,
}

impl RefKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RefKind::Block => "block",
            RefKind::ById => "by-id",
            RefKind::ByPath => "by-path",
            RefKind::ByUuid => "by-uuid",
            RefKind::ByLabel => "by-label",
            RefKind::ByPartuuid => "by-partuuid",
            RefKind::ByPartlabel => "by-partlabel",
            RefKind::Mapper => "mapper",
            RefKind::Wwn => "wwn",
            RefKind::Naa => "naa",
            RefKind::Hctl => "hctl",
            RefKind::Nic => "nic",
        }
    }
}

/// The references of one alert: a handful, kept on the stack.
pub(crate) type Refs<'a> = smallvec::SmallVec<[Ref<'a>; 8]>;

/// The distinct references of one alert, in order of appearance, up to a budget: `max` that are
/// not H:C:T:L-shaped, and `max` that are. The two budgets are apart because an H:C:T:L is only
/// reported when it resolves (a time has the same shape), so times cannot crowd out a disk named
/// later in the same line. A reference whose budget is spent is not even looked up in the set.
#[derive(Debug)]
pub(crate) struct Found<'a> {
    refs: Refs<'a>,
    seen: HashSet<&'a str>,
    left: usize,
    hctl_left: usize,
}

impl<'a> Found<'a> {
    pub(crate) fn new(max: usize) -> Self {
        Found {
            refs: Refs::new(),
            seen: HashSet::new(),
            left: max,
            hctl_left: max,
        }
    }

    /// Keeps `r` unless its text was found before or its budget is spent.
    pub(crate) fn push(&mut self, r: Ref<'a>) {
        let left = if r.kind == RefKind::Hctl {
            &mut self.hctl_left
        } else {
            &mut self.left
        };
        if *left > 0 && self.seen.insert(r.text) {
            *left -= 1;
            self.refs.push(r);
        }
    }

    /// Both budgets are spent: scanning further cannot add anything.
    pub(crate) fn is_full(&self) -> bool {
        self.left == 0 && self.hctl_left == 0
    }

    /// The references kept, in order of appearance.
    pub(crate) fn refs(&self) -> &[Ref<'a>] {
        &self.refs
    }
}

/// One candidate reference: the token as found and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ref<'a> {
    pub(crate) text: &'a str,
    pub(crate) kind: RefKind,
}

/// `TOKEN[b]`: byte `b` can be part of a token (ASCII letters, digits, `_ - . : /`).
static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':' | b'/');
        b += 1;
    }
    t
};

fn is_token_byte(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

/// Links under `/dev/disk/` that name a block device, and their kinds.
const DISK_LINK_DIRS: [(&str, RefKind); 6] = [
    ("by-id/", RefKind::ById),
    ("by-path/", RefKind::ByPath),
    ("by-uuid/", RefKind::ByUuid),
    ("by-label/", RefKind::ByLabel),
    ("by-partuuid/", RefKind::ByPartuuid),
    ("by-partlabel/", RefKind::ByPartlabel),
];

/// Adds the references in `text` to `out`, in order of appearance, until `out` is full.
/// `known_nic` says whether a name is a network interface that exists on this node.
pub(crate) fn scan<'a>(text: &'a str, known_nic: &dyn Fn(&str) -> bool, out: &mut Found<'a>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() && !out.is_full() {
        if !is_token_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_token_byte(bytes[i]) {
            i += 1;
        }
        // Token boundaries are ASCII bytes, so the slice is on char boundaries.
        let token = text[start..i].trim_end_matches(['.', ':', '-', '/']);
        if let Some(kind) = classify(token, known_nic) {
            out.push(Ref { text: token, kind });
        }
    }
}

/// The kind of reference `token` is, if any.
pub(crate) fn classify(token: &str, known_nic: &dyn Fn(&str) -> bool) -> Option<RefKind> {
    let first = *token.as_bytes().first()?;
    match first {
        b'/' => {
            let rest = token.strip_prefix("/dev/")?;
            if let Some(link) = rest.strip_prefix("disk/") {
                let (name, kind) = DISK_LINK_DIRS
                    .iter()
                    .find_map(|(dir, kind)| link.strip_prefix(dir).map(|name| (name, *kind)))?;
                return is_link_name(name).then_some(kind);
            }
            if let Some(name) = rest.strip_prefix("mapper/") {
                return (is_link_name(name) && name != "control").then_some(RefKind::Mapper);
            }
            is_block_name(rest).then_some(RefKind::Block)
        }
        b'0'..=b'9' => is_hctl(token).then_some(RefKind::Hctl),
        // Most words of a message start with a letter no fixed shape starts with: only the
        // interfaces this node has are left to check.
        b's' | b'v' | b'n' | b'd' if is_block_name(token) => Some(RefKind::Block),
        b'w' if token.starts_with("wwn-0x") => {
            let hex = &token["wwn-0x".len()..];
            let hex = hex.split_once("-part").map_or(hex, |(h, _)| h);
            is_wwn_hex(hex).then_some(RefKind::Wwn)
        }
        b'n' if token.starts_with("naa.") => {
            is_wwn_hex(&token["naa.".len()..]).then_some(RefKind::Naa)
        }
        _ if (matches!(first, b'e' | b'i' | b'b' | b'w' | b't') && is_nic_name(token))
            || (token != "lo" && known_nic(token)) =>
        {
            Some(RefKind::Nic)
        }
        _ => None,
    }
}

/// A by-id / by-path link name: non-empty, no further path components.
fn is_link_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && name != "." && name != ".."
}

fn is_wwn_hex(hex: &str) -> bool {
    (8..=32).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Splits off a run of ASCII digits at the start: (digits, rest).
fn digits(s: &str) -> (&str, &str) {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    s.split_at(n)
}

/// `sd[a-z]{1,3}N?`, `vd[a-z]{1,3}N?`, `nvmeXnY(pZ)?`, `dm-N`.
pub(crate) fn is_block_name(s: &str) -> bool {
    if let Some(rest) = s.strip_prefix("sd").or_else(|| s.strip_prefix("vd")) {
        let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        let (num, tail) = digits(&rest[letters..]);
        return (1..=3).contains(&letters) && num.len() <= 3 && tail.is_empty();
    }
    if let Some(rest) = s.strip_prefix("nvme") {
        let (ctrl, rest) = digits(rest);
        let Some(rest) = rest.strip_prefix('n') else {
            return false;
        };
        let (ns, rest) = digits(rest);
        if ctrl.is_empty() || ns.is_empty() {
            return false;
        }
        if rest.is_empty() {
            return true;
        }
        let Some(rest) = rest.strip_prefix('p') else {
            return false;
        };
        let (part, rest) = digits(rest);
        return !part.is_empty() && rest.is_empty();
    }
    if let Some(rest) = s.strip_prefix("dm-") {
        let (num, rest) = digits(rest);
        return !num.is_empty() && num.len() <= 5 && rest.is_empty();
    }
    false
}

/// Exactly four groups of 1..5 digits separated by `:`.
pub(crate) fn is_hctl(s: &str) -> bool {
    let mut groups = 0;
    for part in s.split(':') {
        groups += 1;
        if part.is_empty() || part.len() > 5 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    groups == 4
}

/// The kernel and systemd predictable naming schemes, with an optional `.VLAN` suffix.
pub(crate) fn is_nic_name(s: &str) -> bool {
    let base = match s.split_once('.') {
        Some((base, vlan)) => {
            let (num, rest) = digits(vlan);
            if num.is_empty() || !rest.is_empty() {
                return false;
            }
            base
        }
        None => s,
    };
    for prefix in ["eth", "ib", "bond", "wlan", "team"] {
        if let Some(rest) = base.strip_prefix(prefix) {
            let (num, rest) = digits(rest);
            return !num.is_empty() && num.len() <= 4 && rest.is_empty();
        }
    }
    if let Some(mac) = base
        .strip_prefix("enx")
        .or_else(|| base.strip_prefix("wlx"))
    {
        return mac.len() == 12 && mac.bytes().all(|b| b.is_ascii_hexdigit());
    }
    let Some(rest) = base.strip_prefix("en").or_else(|| base.strip_prefix("wl")) else {
        return false;
    };
    predictable_suffix(rest)
}

/// systemd's predictable-name tail after `en`/`wl`: one or more groups of a one- or two-letter tag
/// (`o s p f d n u c i v P`, e.g. `np`) and a number: `o1`, `s1f0`, `p3s0f1np0`, `P1p3s0`.
fn predictable_suffix(mut rest: &str) -> bool {
    let mut groups = 0;
    // A PCI bus number (`p3`) is always followed by a slot (`s0`): `enp3` is not a name.
    let mut need_slot = false;
    while !rest.is_empty() {
        let tag = rest
            .bytes()
            .take_while(|b| {
                matches!(
                    b,
                    b'o' | b's' | b'p' | b'f' | b'd' | b'n' | b'u' | b'c' | b'i' | b'v' | b'P'
                )
            })
            .count();
        if tag == 0 || tag > 2 {
            return false;
        }
        if need_slot && &rest[..tag] != "s" {
            return false;
        }
        need_slot = &rest[..tag] == "p";
        let (num, tail) = digits(&rest[tag..]);
        if num.is_empty() {
            return false;
        }
        rest = tail;
        groups += 1;
    }
    groups > 0 && !need_slot
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(text: &str) -> Vec<(&str, &'static str)> {
        refs_max(text, 64)
    }

    fn refs_max(text: &str, max: usize) -> Vec<(&str, &'static str)> {
        let mut out = Found::new(max);
        scan(text, &|n| n == "mgmt0" || n == "lo", &mut out);
        out.refs()
            .iter()
            .map(|r| (r.text, r.kind.as_str()))
            .collect()
    }

    #[test]
    fn each_reference_once_in_order_of_first_appearance() {
        assert_eq!(
            refs("sdc eth0 sdc 1:0:0:0 eth0 1:0:0:0 sdd"),
            [
                ("sdc", "block"),
                ("eth0", "nic"),
                ("1:0:0:0", "hctl"),
                ("sdd", "block")
            ]
        );
    }

    /// Regression (issue 21 item 10): a line with 10,000 device-like tokens had every one of them
    /// collected (and then resolved) before `max_refs` applied.
    #[test]
    fn the_scan_stops_at_the_budget_and_times_do_not_crowd_out_devices() {
        let hostile: String = (0..10_000).map(|i| format!("sd{} ", name(i))).collect();
        assert_eq!(
            refs_max(&hostile, 3),
            [("sdaaa", "block"), ("sdaab", "block"), ("sdaac", "block")]
        );
        assert_eq!(
            refs_max("at 12:30:45:1 12:30:46:1 12:30:47:1 on sdc, sdd", 2),
            [
                ("12:30:45:1", "hctl"),
                ("12:30:46:1", "hctl"),
                ("sdc", "block"),
                ("sdd", "block")
            ]
        );
        let mut full = Found::new(1);
        scan("sdc 1:0:0:0", &|_| false, &mut full);
        assert!(full.is_full());
    }

    /// Three lowercase letters for `i` (a distinct block name per `i` below 17,576).
    fn name(i: usize) -> String {
        let letter = |n: usize| char::from(b'a' + (n % 26) as u8);
        [letter(i / 676), letter(i / 26), letter(i)]
            .iter()
            .collect()
    }

    #[test]
    fn finds_every_kind_in_order() {
        assert_eq!(
            refs(
                "IO error on sdc2 (dev=/dev/sdd, nvme0n1p3, dm-12) at 2:0:0:1; \
                 /dev/disk/by-id/wwn-0x5000c500a1b2c3d4-part1 /dev/disk/by-path/pci-0000:00:1f.2-ata-3, \
                 naa.5000c500a1b2c3d4 wwn-0x5000c500a1b2c3d4. link eth0: down, ens1f0 enp3s0f1np0 bond0.100 ib0 mgmt0"
            ),
            [
                ("sdc2", "block"),
                ("/dev/sdd", "block"),
                ("nvme0n1p3", "block"),
                ("dm-12", "block"),
                ("2:0:0:1", "hctl"),
                ("/dev/disk/by-id/wwn-0x5000c500a1b2c3d4-part1", "by-id"),
                ("/dev/disk/by-path/pci-0000:00:1f.2-ata-3", "by-path"),
                ("naa.5000c500a1b2c3d4", "naa"),
                ("wwn-0x5000c500a1b2c3d4", "wwn"),
                ("eth0", "nic"),
                ("ens1f0", "nic"),
                ("enp3s0f1np0", "nic"),
                ("bond0.100", "nic"),
                ("ib0", "nic"),
                ("mgmt0", "nic"),
            ]
        );
    }

    #[test]
    fn rejects_lookalikes() {
        assert_eq!(
            refs(
                "ethernet eth sda_1 xsdc nvme0 nvme0n dm- dm-x 1:2:3 1:2:3:4:5 123456:0:0:0 \
                 ensure enable enp3 en0 wwn-0x12 naa.xyz /var/sdc /dev/disk/by-id/ lo md5 \
                 bonding eth0x sdabcd"
            ),
            []
        );
    }

    #[test]
    fn a_time_has_hctl_shape_and_is_left_to_the_resolver() {
        assert_eq!(refs("at 12:30:45:1 UTC"), [("12:30:45:1", "hctl")]);
    }

    #[test]
    fn trailing_punctuation_and_non_ascii_neighbours_are_not_part_of_the_name() {
        assert_eq!(
            refs("disk sdc: failed; «sdd» eth1. end"),
            [("sdc", "block"), ("sdd", "block"), ("eth1", "nic")]
        );
    }

    #[test]
    fn block_names() {
        for ok in [
            "sda",
            "sdaa",
            "sdzzz",
            "sdc2",
            "vdb1",
            "nvme10n2",
            "nvme0n1p15",
            "dm-0",
        ] {
            assert!(is_block_name(ok), "{ok}");
        }
        for bad in [
            "sd", "sdaaaa", "sdA", "sdc1234", "nvmen1", "nvme0n1p", "dm-", "dm-1a",
        ] {
            assert!(!is_block_name(bad), "{bad}");
        }
    }

    #[test]
    fn nic_names() {
        for ok in [
            "eth0",
            "eno1",
            "ens1f0",
            "enp3s0f1",
            "enP2p1s0",
            "enx001122aabbcc",
            "wlp2s0",
            "bond1",
            "ib0.8001",
        ] {
            assert!(is_nic_name(ok), "{ok}");
        }
        for bad in [
            "ethernet", "en", "ens", "enable", "entry1", "eth0.", "eth0.x", "enx0011",
        ] {
            assert!(!is_nic_name(bad), "{bad}");
        }
    }
}
