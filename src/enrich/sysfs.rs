//! A thin reader over a sysfs root and a /dev root: block devices (disks, partitions, NVMe
//! namespaces, dm), their enclosure slots, and network interfaces.
//!
//! Every read is best effort: an unreadable or missing file leaves its field absent (`None`), it is
//! never an error. The layouts followed are the kernel's:
//! - `/sys/class/block/<name>` -> `../../devices/.../block/<disk>[/<partition>]`; a partition has a
//!   `partition` file and its parent directory is its disk;
//! - `/sys/block/<disk>/device` -> the SCSI device dir (named `H:C:T:L`: `vendor`, `model`, `rev`,
//!   `vpd_pg80`, `wwid`, `sas_address`, `enclosure_device:<slot>` -> the enclosure component) or
//!   the NVMe controller (`model`, `serial`, `firmware_rev`, `address`);
//! - `/sys/block/dm-N/dm/{name,uuid}` and `slaves/*`;
//! - `/sys/class/net/<if>`: `address`, `operstate`, `carrier`, `speed`, `mtu`, `device` (absent for
//!   virtual interfaces, which live under `/sys/devices/virtual`), `bonding/slaves`, `master`.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::enrich::scan;

/// Largest sysfs attribute read (VPD pages are at most a few hundred bytes).
const MAX_ATTR: u64 = 8192;
/// How deep dm-over-dm stacks are followed.
const MAX_DM_DEPTH: u8 = 4;

/// A block device: a whole disk, a partition (with its disk's identity), or a dm device (with
/// the devices under it).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct BlockDevice {
    /// `disk`, `partition` or `dm`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    /// The kernel name (`sdc`, `sdc2`, `nvme0n1`, `dm-0`).
    pub(crate) name: String,
    /// For a partition: the disk it is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) disk: Option<String>,
    /// For a partition: its number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) partition: Option<u32>,
    /// `sas`, `sata`, `scsi` or `nvme`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bus: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) vendor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) model: Option<String>,
    /// Firmware revision (`device/rev`, NVMe `device/firmware_rev`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) firmware: Option<String>,
    /// Unit serial number (VPD page 0x80, NVMe `device/serial`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) serial: Option<String>,
    /// World-wide id as the kernel prints it (`naa.5000c500...`, `t10.ATA ...`, `eui....`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) wwn: Option<String>,
    /// Size of this device (a partition's own size) in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) size_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rotational: Option<bool>,
    /// SCSI `H:C:T:L`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hctl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sas_address: Option<String>,
    /// NVMe controller PCI address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pci_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) enclosure: Option<Enclosure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dm_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dm_uuid: Option<String>,
    /// For a dm device: the devices it is built on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) slaves: Vec<BlockDevice>,
}

/// The enclosure slot a disk sits in.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Enclosure {
    /// The enclosure's logical id (its `id` file, e.g. `0x500605b0000272bf`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    /// The enclosure's own SCSI address (its directory name under `enclosure/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hctl: Option<String>,
    /// The slot's name (the part of `enclosure_device:<slot>` after the colon).
    pub(crate) slot: String,
    /// The slot's number (the component's `slot` file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) slot_number: Option<u32>,
}

/// A network interface.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Nic {
    /// Always `nic`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) operstate: Option<String>,
    /// Absent when the interface is administratively down (the kernel refuses the read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) carrier: Option<bool>,
    /// Absent when unknown (no link, or the driver reports -1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) speed_mbps: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) driver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pci_vendor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pci_device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pci_address: Option<String>,
    /// No backing device (bond, bridge, vlan, veth, ...).
    #[serde(rename = "virtual")]
    pub(crate) is_virtual: bool,
    /// For a bond: its member interfaces.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) bond_slaves: Vec<String>,
    /// The bond or bridge this interface is enslaved to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) master: Option<String>,
}

/// Reads devices under a sysfs root and a /dev root.
#[derive(Debug, Clone)]
pub(crate) struct Sysfs {
    sys: PathBuf,
    dev: PathBuf,
}

/// A sysfs attribute as trimmed text; `None` if unreadable or empty.
fn attr(path: &Path) -> Option<String> {
    let bytes = read_limited(path)?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!text.is_empty()).then(|| text.to_string())
}

fn read_limited(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    fs::File::open(path)
        .ok()?
        .take(MAX_ATTR)
        .read_to_end(&mut buf)
        .ok()?;
    Some(buf)
}

fn attr_num<T: std::str::FromStr>(path: &Path) -> Option<T> {
    attr(path)?.parse().ok()
}

/// The file name of a symlink's target (`device/driver` -> `e1000`).
fn link_name(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// The name of the directory a sysfs link resolves to (`device` -> `0000:04:00.0`). Canonical,
/// because a link's own text may end in `..`.
fn real_name(path: &Path) -> Option<String> {
    let target = fs::canonicalize(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// The serial in a VPD page 0x80: the page-length bytes after the 4-byte header.
fn vpd_serial(page: &[u8]) -> Option<String> {
    if page.len() < 4 || page[1] != 0x80 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([page[2], page[3]]));
    let body = page.get(4..4 + len).unwrap_or(&page[4..]);
    let text = String::from_utf8_lossy(body);
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!text.is_empty()).then(|| text.to_string())
}

impl Sysfs {
    pub(crate) fn new(sys: impl Into<PathBuf>, dev: impl Into<PathBuf>) -> Self {
        Sysfs {
            sys: sys.into(),
            dev: dev.into(),
        }
    }

    /// A block device by kernel name (`sdc`, `sdc2`, `nvme0n1p1`, `dm-3`), `/dev/` prefix allowed.
    pub(crate) fn block(&self, name: &str) -> Option<BlockDevice> {
        self.block_at_depth(name.strip_prefix("/dev/").unwrap_or(name), 0)
    }

    fn block_at_depth(&self, name: &str, depth: u8) -> Option<BlockDevice> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return None;
        }
        let class = self.sys.join("class/block").join(name);
        // Canonical: .../block/<disk> for a disk, .../block/<disk>/<part> for a partition.
        let real = fs::canonicalize(&class).ok()?;
        if let Some(number) = attr_num::<u32>(&real.join("partition")) {
            let disk_dir = real.parent()?;
            let disk_name = disk_dir.file_name()?.to_string_lossy().into_owned();
            let mut dev = self.disk(&disk_name, disk_dir);
            dev.kind = "partition";
            dev.name = name.to_string();
            dev.disk = Some(disk_name);
            dev.partition = Some(number);
            dev.size_bytes = attr_num::<u64>(&real.join("size")).map(|s| s * 512);
            return Some(dev);
        }
        if real.join("dm").is_dir() {
            let mut dev = BlockDevice {
                kind: "dm",
                name: name.to_string(),
                dm_name: attr(&real.join("dm/name")),
                dm_uuid: attr(&real.join("dm/uuid")),
                size_bytes: attr_num::<u64>(&real.join("size")).map(|s| s * 512),
                rotational: attr_num::<u8>(&real.join("queue/rotational")).map(|r| r != 0),
                ..BlockDevice::default()
            };
            if depth < MAX_DM_DEPTH {
                let mut names: Vec<String> = fs::read_dir(real.join("slaves"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                dev.slaves = names
                    .iter()
                    .filter_map(|n| self.block_at_depth(n, depth + 1))
                    .collect();
            }
            return Some(dev);
        }
        Some(self.disk(name, &real))
    }

    /// A whole disk whose sysfs dir is `dir`.
    fn disk(&self, name: &str, dir: &Path) -> BlockDevice {
        let device = dir.join("device");
        let mut dev = BlockDevice {
            kind: "disk",
            name: name.to_string(),
            size_bytes: attr_num::<u64>(&dir.join("size")).map(|s| s * 512),
            rotational: attr_num::<u8>(&dir.join("queue/rotational")).map(|r| r != 0),
            wwn: attr(&dir.join("wwid")).or_else(|| attr(&device.join("wwid"))),
            vendor: attr(&device.join("vendor")),
            model: attr(&device.join("model")),
            ..BlockDevice::default()
        };
        if name.starts_with("nvme") {
            // `device` is the controller (nvme0).
            dev.bus = Some("nvme");
            dev.serial = attr(&device.join("serial"));
            dev.firmware = attr(&device.join("firmware_rev"));
            dev.pci_address = attr(&device.join("address"));
            return dev;
        }
        dev.firmware = attr(&device.join("rev"));
        dev.serial = read_limited(&device.join("vpd_pg80"))
            .and_then(|p| vpd_serial(&p))
            .or_else(|| attr(&device.join("serial")));
        dev.sas_address = attr(&device.join("sas_address"));
        dev.hctl = real_name(&device).filter(|n| scan::is_hctl(n));
        dev.bus = if dev.sas_address.is_some() {
            Some("sas")
        } else if dev.vendor.as_deref() == Some("ATA") {
            Some("sata")
        } else if dev.hctl.is_some() {
            Some("scsi")
        } else {
            None
        };
        dev.enclosure = self.enclosure(&device);
        dev
    }

    /// The `enclosure_device:<slot>` link of a SCSI device, followed to the enclosure component.
    fn enclosure(&self, device: &Path) -> Option<Enclosure> {
        let entry = fs::read_dir(device).ok()?.flatten().find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("enclosure_device:")
        })?;
        let link_name = entry.file_name().to_string_lossy().into_owned();
        let slot = link_name.split_once(':')?.1.to_string();
        let component = fs::canonicalize(entry.path()).ok();
        let enclosure_dir = component.as_deref().and_then(Path::parent);
        Some(Enclosure {
            id: enclosure_dir.and_then(|d| attr(&d.join("id"))),
            hctl: enclosure_dir
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned()),
            slot_number: component.and_then(|c| attr_num(&c.join("slot"))),
            slot,
        })
    }

    /// The kernel name a `/dev/disk/by-*/` link points at (`/dev/disk/by-id/wwn-0x..` -> `sdc`).
    pub(crate) fn dev_link(&self, reference: &str) -> Option<String> {
        let rel = reference.strip_prefix("/dev/")?;
        link_name(&self.dev.join(rel)).filter(|n| !n.is_empty() && n != "..")
    }

    /// The block device with world-wide name `hex` (from `wwn-0x<hex>` or `naa.<hex>`): through the
    /// by-id link when present, else the disk whose `wwid` is `naa.<hex>`.
    pub(crate) fn by_wwn(&self, hex: &str) -> Option<String> {
        if let Some(name) = self.dev_link(&format!("/dev/disk/by-id/wwn-0x{hex}")) {
            return Some(name);
        }
        let want = format!("naa.{hex}");
        fs::read_dir(self.sys.join("block"))
            .ok()?
            .flatten()
            .find(|e| {
                let dir = e.path();
                attr(&dir.join("device/wwid"))
                    .or_else(|| attr(&dir.join("wwid")))
                    .is_some_and(|w| w.eq_ignore_ascii_case(&want))
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
    }

    /// The dm device (`dm-0`) whose device-mapper name is `name` (`/sys/block/dm-N/dm/name`),
    /// for a `/dev/mapper/NAME` whose link is not in the dev root.
    pub(crate) fn by_dm_name(&self, name: &str) -> Option<String> {
        fs::read_dir(self.sys.join("block"))
            .ok()?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("dm-"))
            .find(|e| attr(&e.path().join("dm/name")).as_deref() == Some(name))
            .map(|e| e.file_name().to_string_lossy().into_owned())
    }

    /// The disk at SCSI address `hctl`.
    pub(crate) fn by_hctl(&self, hctl: &str) -> Option<String> {
        let dir = self.sys.join("bus/scsi/devices").join(hctl).join("block");
        let mut names = fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned());
        names.next()
    }

    /// The names in `/sys/class/net`.
    pub(crate) fn nic_names(&self) -> Vec<String> {
        fs::read_dir(self.sys.join("class/net"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// A network interface by name.
    pub(crate) fn nic(&self, name: &str) -> Option<Nic> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return None;
        }
        let dir = self.sys.join("class/net").join(name);
        let real = fs::canonicalize(&dir).ok()?;
        let device = dir.join("device");
        let has_device = fs::symlink_metadata(&device).is_ok();
        let is_virtual = !has_device || real.components().any(|c| c.as_os_str() == "virtual");
        let mut bond_slaves: Vec<String> = attr(&dir.join("bonding/slaves"))
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        bond_slaves.sort();
        Some(Nic {
            kind: "nic",
            name: name.to_string(),
            mac: attr(&dir.join("address")),
            operstate: attr(&dir.join("operstate")),
            carrier: attr_num::<u8>(&dir.join("carrier")).map(|c| c != 0),
            speed_mbps: attr_num::<i64>(&dir.join("speed")).and_then(|s| u32::try_from(s).ok()),
            mtu: attr_num(&dir.join("mtu")),
            driver: has_device
                .then(|| real_name(&device.join("driver")))
                .flatten(),
            pci_vendor: has_device.then(|| attr(&device.join("vendor"))).flatten(),
            pci_device: has_device.then(|| attr(&device.join("device"))).flatten(),
            pci_address: has_device.then(|| real_name(&device)).flatten(),
            is_virtual,
            bond_slaves,
            master: real_name(&dir.join("master")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpd_serial_takes_the_page_length_after_the_header() {
        let mut page = vec![0x00, 0x80, 0x00, 0x0a];
        page.extend_from_slice(b"  ZA1B2C3D");
        page.extend_from_slice(b"garbage");
        assert_eq!(vpd_serial(&page).as_deref(), Some("ZA1B2C3D"));
        assert_eq!(vpd_serial(&[0x00, 0x83, 0x00, 0x01, b'x']), None);
        assert_eq!(vpd_serial(&[0x00, 0x80]), None);
        // A length longer than the page: take what is there.
        assert_eq!(
            vpd_serial(&[0, 0x80, 0, 200, b'A', b'B']).as_deref(),
            Some("AB")
        );
    }

    #[test]
    fn a_partition_resolves_to_its_disk() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path();
        let disk = sys.join("devices/pci0/host0/target0:0:0/0:0:0:0/block/sda");
        fs::create_dir_all(disk.join("sda1")).unwrap();
        fs::create_dir_all(disk.join("queue")).unwrap();
        fs::write(disk.join("size"), "2000\n").unwrap();
        fs::write(disk.join("queue/rotational"), "1\n").unwrap();
        fs::write(disk.join("sda1/partition"), "1\n").unwrap();
        fs::write(disk.join("sda1/size"), "1000\n").unwrap();
        std::os::unix::fs::symlink("../../../0:0:0:0", disk.join("device")).unwrap();
        let scsi = sys.join("devices/pci0/host0/target0:0:0/0:0:0:0");
        fs::write(scsi.join("vendor"), "ATA     \n").unwrap();
        fs::create_dir_all(sys.join("class/block")).unwrap();
        std::os::unix::fs::symlink(
            "../../devices/pci0/host0/target0:0:0/0:0:0:0/block/sda/sda1",
            sys.join("class/block/sda1"),
        )
        .unwrap();
        let dev = Sysfs::new(sys, "/nonexistent").block("/dev/sda1").unwrap();
        assert_eq!(dev.kind, "partition");
        assert_eq!(dev.disk.as_deref(), Some("sda"));
        assert_eq!(dev.partition, Some(1));
        assert_eq!(dev.size_bytes, Some(512_000));
        assert_eq!(dev.rotational, Some(true));
        assert_eq!(dev.hctl.as_deref(), Some("0:0:0:0"));
        assert_eq!(dev.bus, Some("sata"));
        assert_eq!(dev.vendor.as_deref(), Some("ATA"));
        assert_eq!(dev.serial, None);
    }
}
