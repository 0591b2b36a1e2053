//! A fake sysfs tree and /dev tree on disk, laid out as the kernel does (real directories, files
//! and relative symlinks), for tests of the enricher, `iemctl parse --enrich --sysfs-root`, and
//! the enrich benchmark (which includes this file by path).
//!
//! `FakeSysfs::standard()` builds one of everything, with the values in the `std_*` constants:
//! - `sdc`: a SAS disk at 2:0:0:0 in slot `SLOT 01` of enclosure 2:0:1:0 (id 0x500605b0000272bf),
//!   with partition `sdc2`, and by-id / by-path / wwn links;
//! - `sdb`: a SATA disk at 0:0:0:0 (no enclosure), with a by-id link;
//! - `nvme0n1`: an NVMe namespace on controller nvme0 (PCI 0000:3d:00.0), with partition `nvme0n1p1`;
//! - `dm-0`: a dm device (`mpatha`, with a `/dev/mapper` link) over `sdb` and `sdc`;
//! - by-uuid / by-partuuid links to `sdc2`, by-label / by-partlabel links to `nvme0n1p1`;
//! - `eth0`, `eth1`: physical NICs (ixgbe), members of `bond0`, a virtual bond;
//! - `lo`: the loopback.

#![allow(dead_code)]

use std::fs;
use std::path::{Component, Path, PathBuf};

pub const SAS_SERIAL: &str = "ZA1B2C3D0000C9341234";
pub const SAS_WWID: &str = "naa.5000c500a1b2c3d4";
pub const SAS_WWN_LINK: &str = "wwn-0x5000c500a1b2c3d4";
pub const SAS_ADDRESS: &str = "0x5000c500a1b2c3d5";
pub const ENCLOSURE_ID: &str = "0x500605b0000272bf";
pub const SATA_SERIAL: &str = "WD-WCC4N1234567";
pub const SATA_BY_ID: &str = "ata-WDC_WD40EFRX-68N32N0_WD-WCC4N1234567";
pub const SAS_BY_PATH: &str = "pci-0000:02:00.0-sas-0x5000c500a1b2c3d5-lun-0";
pub const NVME_SERIAL: &str = "S4EWNX0N123456";
pub const NVME_WWID: &str = "eui.0025388b91b0d0a1";
pub const DM_UUID: &str = "mpath-35000c500a1b2c3d4";
pub const DM_NAME: &str = "mpatha";
/// The file system on `sdc2` (by-uuid) and its GPT partition (by-partuuid).
pub const FS_UUID: &str = "3f6e2a1c-8d4b-4e7a-9c2f-1b5d6e7f8a9b";
pub const PART_UUID: &str = "a1b2c3d4-0002-4c5d-8e9f-0a1b2c3d4e5f";
/// The label of the file system and partition on `nvme0n1p1`.
pub const FS_LABEL: &str = "motr-data1";
pub const ETH0_MAC: &str = "a0:36:9f:12:34:56";
pub const BOND_MAC: &str = "a0:36:9f:12:34:56";

const PCI_HBA: &str = "devices/pci0000:00/0000:00:02.0/0000:02:00.0";
const PCI_AHCI: &str = "devices/pci0000:00/0000:00:1f.2";
const PCI_NVME: &str = "devices/pci0000:00/0000:00:1d.0/0000:3d:00.0";

/// A fake `/sys` and `/dev` under one temporary directory (removed on drop).
pub struct FakeSysfs {
    pub dir: tempfile::TempDir,
    pub sys: PathBuf,
    pub dev: PathBuf,
}

/// One SCSI disk to add.
pub struct ScsiDisk<'a> {
    pub name: &'a str,
    /// The HBA's PCI path under `sys` (`devices/pci0000:00/...`).
    pub pci: &'a str,
    pub host: u32,
    /// The path between `host<N>` and `target...` (e.g. `port-2:0/end_device-2:0`, or `ata1`).
    pub port: &'a str,
    pub hctl: &'a str,
    pub vendor: &'a str,
    pub model: &'a str,
    pub rev: &'a str,
    pub serial: &'a str,
    pub wwid: &'a str,
    pub sectors: u64,
    pub rotational: bool,
    pub sas_address: Option<&'a str>,
}

/// One network interface to add.
pub struct NicSpec<'a> {
    pub name: &'a str,
    /// PCI function path under `sys`; `None` for a virtual interface.
    pub pci: Option<&'a str>,
    pub mac: &'a str,
    pub operstate: &'a str,
    /// `None`: reading `carrier` fails, as it does for an interface that is down.
    pub carrier: Option<u8>,
    pub speed: i64,
    pub mtu: u32,
    pub driver: Option<&'a str>,
    pub vendor: &'a str,
    pub device: &'a str,
}

/// `target` relative to the directory holding `link` (both absolute, no `..`).
fn relative(target: &Path, link: &Path) -> PathBuf {
    let from: Vec<Component> = link
        .parent()
        .expect("link has a parent")
        .components()
        .collect();
    let to: Vec<Component> = target.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    for c in &to[common..] {
        rel.push(c);
    }
    rel
}

fn write(path: &Path, contents: impl AsRef<[u8]>) {
    fs::create_dir_all(path.parent().expect("file has a parent")).expect("mkdir");
    fs::write(path, contents).expect("write");
}

impl FakeSysfs {
    /// An empty tree: `sys/` (with `block`, `class/block`, `class/net`, `bus/scsi/devices`) and `dev/`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // Canonical, so that relative links computed from it match `fs::canonicalize` results.
        let root = fs::canonicalize(dir.path()).expect("canonical tempdir");
        let sys = root.join("sys");
        let dev = root.join("dev");
        for d in [
            "block",
            "class/block",
            "class/net",
            "class/enclosure",
            "bus/scsi/devices",
        ] {
            fs::create_dir_all(sys.join(d)).expect("mkdir");
        }
        fs::create_dir_all(dev.join("disk/by-id")).expect("mkdir");
        fs::create_dir_all(dev.join("disk/by-path")).expect("mkdir");
        FakeSysfs { dir, sys, dev }
    }

    /// Makes `link` (absolute) a relative symlink to `target` (absolute), creating parents.
    pub fn symlink(&self, target: &Path, link: &Path) {
        fs::create_dir_all(link.parent().expect("link has a parent")).expect("mkdir");
        std::os::unix::fs::symlink(relative(target, link), link).expect("symlink");
    }

    /// Writes a sysfs attribute (path relative to `sys`).
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) {
        write(&self.sys.join(rel), contents);
    }

    /// Registers a block device dir (absolute) in `/sys/block` (if whole disk) and `/sys/class/block`.
    fn register_block(&self, name: &str, dir: &Path, whole: bool) {
        if whole {
            self.symlink(dir, &self.sys.join("block").join(name));
        }
        self.symlink(dir, &self.sys.join("class/block").join(name));
    }

    /// Adds a SCSI disk; returns its scsi_device dir.
    pub fn scsi_disk(&self, d: &ScsiDisk) -> PathBuf {
        let (h, rest) = d.hctl.split_once(':').expect("hctl");
        let (c, rest) = rest.split_once(':').expect("hctl");
        let (t, _) = rest.split_once(':').expect("hctl");
        let scsi = self
            .sys
            .join(d.pci)
            .join(format!("host{}", d.host))
            .join(d.port)
            .join(format!("target{h}:{c}:{t}"))
            .join(d.hctl);
        write(&scsi.join("vendor"), format!("{:<8}\n", d.vendor));
        write(&scsi.join("model"), format!("{:<16}\n", d.model));
        write(&scsi.join("rev"), format!("{}\n", d.rev));
        write(&scsi.join("wwid"), format!("{}\n", d.wwid));
        // VPD page 0x80: header (peripheral, page code, big-endian length), then the serial.
        let mut vpd = vec![0x00, 0x80, 0x00, d.serial.len() as u8];
        vpd.extend_from_slice(d.serial.as_bytes());
        write(&scsi.join("vpd_pg80"), vpd);
        if let Some(sas) = d.sas_address {
            write(&scsi.join("sas_address"), format!("{sas}\n"));
        }
        let block = scsi.join("block").join(d.name);
        write(&block.join("size"), format!("{}\n", d.sectors));
        write(
            &block.join("queue/rotational"),
            if d.rotational { "1\n" } else { "0\n" },
        );
        self.symlink(&scsi, &block.join("device"));
        self.register_block(d.name, &block, true);
        self.symlink(&scsi, &self.sys.join("bus/scsi/devices").join(d.hctl));
        scsi
    }

    /// Puts the SCSI device `scsi` into slot `slot` (number `number`) of an enclosure at
    /// `enc_hctl` (created on first use) on the same HBA port tree.
    pub fn enclose(
        &self,
        scsi: &Path,
        pci_host: &Path,
        enc_hctl: &str,
        enc_id: &str,
        slot: &str,
        number: u32,
    ) {
        let (h, rest) = enc_hctl.split_once(':').expect("hctl");
        let (c, rest) = rest.split_once(':').expect("hctl");
        let (t, _) = rest.split_once(':').expect("hctl");
        let enc_dev = pci_host
            .join("port-2:1/expander-2:0/port-2:0:9/end_device-2:0:9")
            .join(format!("target{h}:{c}:{t}"))
            .join(enc_hctl);
        let enclosure = enc_dev.join("enclosure").join(enc_hctl);
        write(&enclosure.join("id"), format!("{enc_id}\n"));
        write(&enclosure.join("components"), "12\n");
        let component = enclosure.join(slot);
        write(&component.join("slot"), format!("{number}\n"));
        write(&component.join("status"), "OK\n");
        self.symlink(scsi, &component.join("device"));
        self.symlink(&component, &scsi.join(format!("enclosure_device:{slot}")));
        let class = self.sys.join("class/enclosure").join(enc_hctl);
        if fs::symlink_metadata(&class).is_err() {
            self.symlink(&enclosure, &class);
        }
    }

    /// Adds partition `part` (number `number`) of disk `disk`.
    pub fn partition(&self, disk: &str, part: &str, number: u32, sectors: u64) {
        let disk_dir =
            fs::canonicalize(self.sys.join("class/block").join(disk)).expect("disk exists");
        let dir = disk_dir.join(part);
        write(&dir.join("partition"), format!("{number}\n"));
        write(&dir.join("size"), format!("{sectors}\n"));
        write(&dir.join("start"), "2048\n");
        self.register_block(part, &dir, false);
    }

    /// Adds NVMe controller `ctrl` (`nvme0`) with namespace `ns` (`nvme0n1`).
    #[allow(clippy::too_many_arguments)]
    pub fn nvme(
        &self,
        pci: &str,
        ctrl: &str,
        ns: &str,
        model: &str,
        serial: &str,
        fw: &str,
        wwid: &str,
        sectors: u64,
    ) {
        let ctrl_dir = self.sys.join(pci).join("nvme").join(ctrl);
        write(&ctrl_dir.join("model"), format!("{model:<40}\n"));
        write(&ctrl_dir.join("serial"), format!("{serial:<20}\n"));
        write(&ctrl_dir.join("firmware_rev"), format!("{fw:<8}\n"));
        write(&ctrl_dir.join("transport"), "pcie\n");
        let pci_name = Path::new(pci)
            .file_name()
            .expect("pci name")
            .to_string_lossy()
            .into_owned();
        write(&ctrl_dir.join("address"), format!("{pci_name}\n"));
        let ns_dir = ctrl_dir.join(ns);
        write(&ns_dir.join("size"), format!("{sectors}\n"));
        write(&ns_dir.join("wwid"), format!("{wwid}\n"));
        write(&ns_dir.join("nsid"), "1\n");
        write(&ns_dir.join("queue/rotational"), "0\n");
        self.symlink(&ctrl_dir, &ns_dir.join("device"));
        self.register_block(ns, &ns_dir, true);
    }

    /// Adds device-mapper device `name` (`dm-0`) over `slaves` (kernel names).
    pub fn dm(&self, name: &str, dm_name: &str, uuid: &str, slaves: &[&str], sectors: u64) {
        let dir = self.sys.join("devices/virtual/block").join(name);
        write(&dir.join("dm/name"), format!("{dm_name}\n"));
        write(&dir.join("dm/uuid"), format!("{uuid}\n"));
        write(&dir.join("size"), format!("{sectors}\n"));
        write(&dir.join("queue/rotational"), "1\n");
        fs::create_dir_all(dir.join("slaves")).expect("mkdir");
        for s in slaves {
            let target =
                fs::canonicalize(self.sys.join("class/block").join(s)).expect("slave exists");
            self.symlink(&target, &dir.join("slaves").join(s));
            self.symlink(&dir, &target.join("holders").join(name));
        }
        self.register_block(name, &dir, true);
    }

    /// Adds a network interface.
    pub fn nic(&self, n: &NicSpec) {
        let dir = match n.pci {
            Some(pci) => {
                let pci_dir = self.sys.join(pci);
                write(&pci_dir.join("vendor"), format!("{}\n", n.vendor));
                write(&pci_dir.join("device"), format!("{}\n", n.device));
                if let Some(driver) = n.driver {
                    let drv = self.sys.join("bus/pci/drivers").join(driver);
                    fs::create_dir_all(&drv).expect("mkdir");
                    self.symlink(&drv, &pci_dir.join("driver"));
                }
                let dir = pci_dir.join("net").join(n.name);
                self.symlink(&pci_dir, &dir.join("device"));
                dir
            }
            None => self.sys.join("devices/virtual/net").join(n.name),
        };
        write(&dir.join("address"), format!("{}\n", n.mac));
        write(&dir.join("operstate"), format!("{}\n", n.operstate));
        write(&dir.join("mtu"), format!("{}\n", n.mtu));
        write(&dir.join("speed"), format!("{}\n", n.speed));
        if let Some(c) = n.carrier {
            write(&dir.join("carrier"), format!("{c}\n"));
        }
        self.symlink(&dir, &self.sys.join("class/net").join(n.name));
    }

    /// Makes `bond` (virtual) the master of `slaves`.
    pub fn bond(&self, bond: &str, mac: &str, slaves: &[&str]) {
        self.nic(&NicSpec {
            name: bond,
            pci: None,
            mac,
            operstate: "up",
            carrier: Some(1),
            speed: 20000,
            mtu: 9000,
            driver: None,
            vendor: "",
            device: "",
        });
        let dir = self.sys.join("devices/virtual/net").join(bond);
        write(
            &dir.join("bonding/slaves"),
            format!("{}\n", slaves.join(" ")),
        );
        write(&dir.join("bonding/mode"), "802.3ad 4\n");
        for s in slaves {
            let slave = fs::canonicalize(self.sys.join("class/net").join(s)).expect("slave exists");
            self.symlink(&dir, &slave.join("master"));
        }
    }

    /// Makes `<dev>/<rel>` (e.g. `disk/by-id/wwn-0x...`) a symlink to `<dev>/<name>`, as udev does.
    pub fn dev_link(&self, rel: &str, name: &str) {
        let link = self.dev.join(rel);
        self.symlink(&self.dev.join(name), &link);
    }

    /// The tree described in the module doc.
    pub fn standard() -> Self {
        let f = FakeSysfs::new();
        let sas = f.scsi_disk(&ScsiDisk {
            name: "sdc",
            pci: PCI_HBA,
            host: 2,
            port: "port-2:0/end_device-2:0",
            hctl: "2:0:0:0",
            vendor: "SEAGATE",
            model: "ST4000NM0025",
            rev: "E004",
            serial: SAS_SERIAL,
            wwid: SAS_WWID,
            sectors: 7_814_037_168,
            rotational: true,
            sas_address: Some(SAS_ADDRESS),
        });
        f.enclose(
            &sas,
            &f.sys.join(PCI_HBA).join("host2"),
            "2:0:1:0",
            ENCLOSURE_ID,
            "SLOT 01",
            1,
        );
        f.partition("sdc", "sdc2", 2, 2_097_152);
        f.scsi_disk(&ScsiDisk {
            name: "sdb",
            pci: PCI_AHCI,
            host: 0,
            port: "ata1",
            hctl: "0:0:0:0",
            vendor: "ATA",
            model: "WDC WD40EFRX-68N",
            rev: "0A82",
            serial: SATA_SERIAL,
            wwid: "t10.ATA     WDC WD40EFRX-68N32N0                    WD-WCC4N1234567",
            sectors: 7_814_037_168,
            rotational: true,
            sas_address: None,
        });
        f.nvme(
            PCI_NVME,
            "nvme0",
            "nvme0n1",
            "Samsung SSD 970 EVO Plus 1TB",
            NVME_SERIAL,
            "2B2QEXM7",
            NVME_WWID,
            1_953_525_168,
        );
        f.partition("nvme0n1", "nvme0n1p1", 1, 1_048_576);
        f.dm("dm-0", DM_NAME, DM_UUID, &["sdb", "sdc"], 7_814_037_168);
        for (name, func, mac) in [("eth0", "0", ETH0_MAC), ("eth1", "1", "a0:36:9f:12:34:57")] {
            f.nic(&NicSpec {
                name,
                pci: Some(&format!(
                    "devices/pci0000:00/0000:00:03.0/0000:04:00.{func}"
                )),
                mac,
                operstate: "up",
                carrier: Some(1),
                speed: 10000,
                mtu: 9000,
                driver: Some("ixgbe"),
                vendor: "0x8086",
                device: "0x10fb",
            });
        }
        f.bond("bond0", BOND_MAC, &["eth0", "eth1"]);
        f.nic(&NicSpec {
            name: "lo",
            pci: None,
            mac: "00:00:00:00:00:00",
            operstate: "unknown",
            carrier: Some(1),
            speed: -1,
            mtu: 65536,
            driver: None,
            vendor: "",
            device: "",
        });
        f.dev_link(&format!("disk/by-id/{SAS_WWN_LINK}"), "sdc");
        f.dev_link(&format!("disk/by-id/{SAS_WWN_LINK}-part2"), "sdc2");
        f.dev_link("disk/by-id/scsi-35000c500a1b2c3d4", "sdc");
        f.dev_link(&format!("disk/by-id/{SATA_BY_ID}"), "sdb");
        f.dev_link(&format!("disk/by-path/{SAS_BY_PATH}"), "sdc");
        f.dev_link("disk/by-id/nvme-eui.0025388b91b0d0a1", "nvme0n1");
        f.dev_link(&format!("disk/by-uuid/{FS_UUID}"), "sdc2");
        f.dev_link(&format!("disk/by-partuuid/{PART_UUID}"), "sdc2");
        f.dev_link(&format!("disk/by-label/{FS_LABEL}"), "nvme0n1p1");
        f.dev_link(&format!("disk/by-partlabel/{FS_LABEL}"), "nvme0n1p1");
        f.dev_link(&format!("mapper/{DM_NAME}"), "dm-0");
        f
    }
}
