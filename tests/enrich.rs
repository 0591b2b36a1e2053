//! The enricher over a fake sysfs tree on disk, the hardware and SSPL schemas.

use std::fs;
use std::path::Path;
use std::time::Duration;

use iemd::alert::{Alert, Coded, Encoded, Hardware, Host, Kind, Named, Origin, OriginKind};
use iemd::config::enrich::EnrichConfig;
use iemd::enrich::{EnrichError, Enricher};
use serde_json::{Value, json};

use crate::util::fake_sysfs::{self, FakeSysfs};

fn config(f: &FakeSysfs) -> EnrichConfig {
    let etc = f.dir.path().join("etc");
    let proc_ = f.dir.path().join("proc");
    fs::create_dir_all(&etc).unwrap();
    fs::create_dir_all(proc_.join("sys/kernel/random")).unwrap();
    fs::write(etc.join("machine-id"), "4c4c4544004a3510804cb4c04f4e3232\n").unwrap();
    fs::write(
        etc.join("hosts"),
        "127.0.0.1 localhost\n10.1.2.3 srvnode-1.data.lab srvnode-1\n",
    )
    .unwrap();
    fs::write(proc_.join("sys/kernel/hostname"), "srvnode-1\n").unwrap();
    fs::write(
        proc_.join("sys/kernel/random/boot_id"),
        "5e1f0c7a-9b52-4c1e-8f0e-3d2a1b0c9d8e\n",
    )
    .unwrap();
    EnrichConfig {
        site_id: Some("site-1".into()),
        rack_id: Some("rack-7".into()),
        node_id: Some("srvnode-1".into()),
        cluster_id: Some("cluster-a".into()),
        sysfs_root: f.sys.clone(),
        dev_root: f.dev.clone(),
        etc_root: etc,
        proc_root: proc_,
        ..EnrichConfig::default()
    }
}

pub fn alert(message: &str) -> Alert {
    Alert {
        schema: iemd::alert::SCHEMA.into(),
        id: blake3::hash(message.as_bytes()).to_hex()[..32].to_string(),
        kind: Kind::Iem,
        code: Some("EH0020020002".into()),
        severity: Some(Coded {
            code: "E".into(),
            name: "error".into(),
        }),
        alert_type: Some("fault".into()),
        source_type: Some(Coded {
            code: "H".into(),
            name: "hardware".into(),
        }),
        component: Some(Named {
            id: "002".into(),
            name: Some("motr".into()),
        }),
        module: Some(Named {
            id: "002".into(),
            name: Some("STOBIOQ".into()),
        }),
        event: Some(Named {
            id: "0002".into(),
            name: Some("Motr IO error".into()),
        }),
        in_catalog: true,
        message: message.into(),
        impact: Some("Data on the disk may be unavailable".into()),
        recommendation: Some("Replace the disk".into()),
        count: None,
        extra: None,
        reason: None,
        time: "2026-11-21T22:50:01+00:00".into(),
        origin: Origin {
            kind: OriginKind::File,
            path: Some("/var/log/messages".into()),
            cursor: None,
            offset: Some(4096),
            program: Some("m0d".into()),
            pid: Some("4242".into()),
            host: Some("srvnode-1".into()),
            priority: Some(3),
        },
        raw: format!("Nov 21 22:50:01 srvnode-1 m0d[4242]: IEC: EH0020020002: {message}"),
        truncated: false,
        host: None,
        hardware: Vec::new(),
        resource: None,
        resolves: None,
        fault: None,
    }
}

fn by_ref<'a>(hw: &'a [Encoded<Hardware>], reference: &str) -> &'a Hardware {
    hw.iter()
        .find(|h| h.reference == reference)
        .map(|h| &**h)
        .unwrap_or_else(|| panic!("no hardware entry for {reference}: {hw:#?}"))
}

fn device(hw: &[Encoded<Hardware>], reference: &str) -> Value {
    let h = by_ref(hw, reference);
    assert!(h.found, "{reference} not found");
    h.device.clone().unwrap()
}

fn sas_disk() -> Value {
    json!({
        "type": "disk", "name": "sdc", "bus": "sas", "vendor": "SEAGATE", "model": "ST4000NM0025",
        "firmware": "E004", "serial": fake_sysfs::SAS_SERIAL, "wwn": fake_sysfs::SAS_WWID,
        "size_bytes": 7_814_037_168u64 * 512, "rotational": true, "hctl": "2:0:0:0",
        "sas_address": fake_sysfs::SAS_ADDRESS,
        "enclosure": {"id": fake_sysfs::ENCLOSURE_ID, "hctl": "2:0:1:0", "slot": "SLOT 01", "slot_number": 1}
    })
}

fn sata_disk() -> Value {
    json!({
        "type": "disk", "name": "sdb", "bus": "sata", "vendor": "ATA", "model": "WDC WD40EFRX-68N",
        "firmware": "0A82", "serial": fake_sysfs::SATA_SERIAL,
        "wwn": "t10.ATA     WDC WD40EFRX-68N32N0                    WD-WCC4N1234567",
        "size_bytes": 7_814_037_168u64 * 512, "rotational": true, "hctl": "0:0:0:0"
    })
}

#[test]
fn every_field_of_every_device_kind() {
    let f = FakeSysfs::standard();
    let enricher = Enricher::new(&config(&f)).unwrap();
    let mut a = alert(
        "IO error on sdc2 (sdb), nvme0n1p1 and nvme0n1 slow; dm-0 degraded; \
         link eth0: down, bond0 degraded; sdz gone at 12:30:45:1",
    );
    enricher.enrich(&mut a);

    let refs: Vec<(&str, &str, bool)> = a
        .hardware
        .iter()
        .map(|h| (h.reference.as_str(), h.ref_kind.as_str(), h.found))
        .collect();
    assert_eq!(
        refs,
        [
            ("sdc2", "block", true),
            ("sdb", "block", true),
            ("nvme0n1p1", "block", true),
            ("nvme0n1", "block", true),
            ("dm-0", "block", true),
            ("eth0", "nic", true),
            ("bond0", "nic", true),
            ("sdz", "block", false),
            // 12:30:45:1 has the H:C:T:L shape but does not resolve: dropped, not reported.
        ]
    );
    assert_eq!(by_ref(&a.hardware, "sdz").device, None);

    let mut sdc2 = sas_disk();
    sdc2["type"] = json!("partition");
    sdc2["name"] = json!("sdc2");
    sdc2["disk"] = json!("sdc");
    sdc2["partition"] = json!(2);
    sdc2["size_bytes"] = json!(2_097_152u64 * 512);
    assert_eq!(device(&a.hardware, "sdc2"), sdc2);
    assert_eq!(device(&a.hardware, "sdb"), sata_disk());

    let nvme = json!({
        "type": "disk", "name": "nvme0n1", "bus": "nvme", "model": "Samsung SSD 970 EVO Plus 1TB",
        "firmware": "2B2QEXM7", "serial": fake_sysfs::NVME_SERIAL, "wwn": fake_sysfs::NVME_WWID,
        "size_bytes": 1_953_525_168u64 * 512, "rotational": false, "pci_address": "0000:3d:00.0"
    });
    assert_eq!(device(&a.hardware, "nvme0n1"), nvme);
    let mut p1 = nvme.clone();
    p1["type"] = json!("partition");
    p1["name"] = json!("nvme0n1p1");
    p1["disk"] = json!("nvme0n1");
    p1["partition"] = json!(1);
    p1["size_bytes"] = json!(1_048_576u64 * 512);
    assert_eq!(device(&a.hardware, "nvme0n1p1"), p1);

    assert_eq!(
        device(&a.hardware, "dm-0"),
        json!({
            "type": "dm", "name": "dm-0", "dm_name": "mpatha", "dm_uuid": fake_sysfs::DM_UUID,
            "size_bytes": 7_814_037_168u64 * 512, "rotational": true,
            "slaves": [sata_disk(), sas_disk()]
        })
    );
    assert_eq!(
        device(&a.hardware, "eth0"),
        json!({
            "type": "nic", "name": "eth0", "mac": fake_sysfs::ETH0_MAC, "operstate": "up",
            "carrier": true, "speed_mbps": 10000, "mtu": 9000, "driver": "ixgbe",
            "pci_vendor": "0x8086", "pci_device": "0x10fb", "pci_address": "0000:04:00.0",
            "virtual": false, "master": "bond0"
        })
    );
    assert_eq!(
        device(&a.hardware, "bond0"),
        json!({
            "type": "nic", "name": "bond0", "mac": fake_sysfs::BOND_MAC, "operstate": "up",
            "carrier": true, "speed_mbps": 20000, "mtu": 9000, "virtual": true,
            "bond_slaves": ["eth0", "eth1"]
        })
    );
}

#[test]
fn links_wwns_hctl_extra_json_and_dedup() {
    let f = FakeSysfs::standard();
    let enricher = Enricher::new(&config(&f)).unwrap();
    let mut a = alert(&format!(
        "errors on /dev/disk/by-id/{wwn} and /dev/disk/by-path/{path}; naa.5000c500a1b2c3d4 \
         {wwn}-part2 at 2:0:0:0, /dev/sdc again, sdc2 twice sdc2",
        wwn = fake_sysfs::SAS_WWN_LINK,
        path = fake_sysfs::SAS_BY_PATH,
    ));
    a.extra = Some(
        json!({"drive": format!("/dev/disk/by-id/{}", fake_sysfs::SATA_BY_ID), "n": 3,
                          "nested": [{"if": "ethernet eth1"}], "sdq": "key is not scanned"}),
    );
    enricher.enrich(&mut a);
    let refs: Vec<(&str, &str)> = a
        .hardware
        .iter()
        .map(|h| (h.reference.as_str(), h.ref_kind.as_str()))
        .collect();
    let by_id = format!("/dev/disk/by-id/{}", fake_sysfs::SAS_WWN_LINK);
    let by_path = format!("/dev/disk/by-path/{}", fake_sysfs::SAS_BY_PATH);
    let part = format!("{}-part2", fake_sysfs::SAS_WWN_LINK);
    let sata = format!("/dev/disk/by-id/{}", fake_sysfs::SATA_BY_ID);
    assert_eq!(
        refs,
        [
            (by_id.as_str(), "by-id"),
            (by_path.as_str(), "by-path"),
            ("naa.5000c500a1b2c3d4", "naa"),
            (part.as_str(), "wwn"),
            ("2:0:0:0", "hctl"),
            ("/dev/sdc", "block"),
            ("sdc2", "block"),
            (sata.as_str(), "by-id"),
            ("eth1", "nic"),
        ]
    );
    for r in [
        &by_id,
        &by_path,
        "naa.5000c500a1b2c3d4",
        "2:0:0:0",
        "/dev/sdc",
    ] {
        assert_eq!(device(&a.hardware, r), sas_disk(), "{r}");
    }
    assert_eq!(device(&a.hardware, &part)["name"], "sdc2");
    assert_eq!(device(&a.hardware, &sata), sata_disk());
    assert_eq!(device(&a.hardware, "eth1")["pci_address"], "0000:04:00.1");
}

#[test]
fn host_identity_is_filled_from_config_and_roots() {
    let f = FakeSysfs::standard();
    let enricher = Enricher::new(&config(&f)).unwrap();
    let mut a = alert("no devices here");
    enricher.enrich(&mut a);
    assert_eq!(
        a.host.as_deref(),
        Some(&Host {
            hostname: "srvnode-1".into(),
            fqdn: "srvnode-1.data.lab".into(),
            machine_id: Some("4c4c4544004a3510804cb4c04f4e3232".into()),
            boot_id: Some("5e1f0c7a-9b52-4c1e-8f0e-3d2a1b0c9d8e".into()),
            site_id: Some("site-1".into()),
            rack_id: Some("rack-7".into()),
            node_id: Some("srvnode-1".into()),
            cluster_id: Some("cluster-a".into()),
        })
    );
    assert!(a.hardware.is_empty());
}

#[test]
fn unreadable_attributes_are_absent_not_errors() {
    let f = FakeSysfs::standard();
    let scsi = fs::canonicalize(f.sys.join("block/sdc/device")).unwrap();
    // A directory where a file should be: the read fails (EISDIR), even as root.
    fs::remove_file(scsi.join("model")).unwrap();
    fs::create_dir(scsi.join("model")).unwrap();
    fs::remove_file(scsi.join("vpd_pg80")).unwrap();
    let eth0 = fs::canonicalize(f.sys.join("class/net/eth0")).unwrap();
    fs::write(eth0.join("speed"), "-1\n").unwrap();
    fs::remove_file(eth0.join("carrier")).unwrap();
    let enricher = Enricher::new(&config(&f)).unwrap();
    let mut a = alert("sdc eth0");
    enricher.enrich(&mut a);
    let mut want = sas_disk();
    want.as_object_mut().unwrap().remove("model");
    want.as_object_mut().unwrap().remove("serial");
    assert_eq!(device(&a.hardware, "sdc"), want);
    let nic = device(&a.hardware, "eth0");
    assert_eq!(nic.get("speed_mbps"), None);
    assert_eq!(nic.get("carrier"), None);
    assert_eq!(nic["mtu"], 9000);
}

#[test]
fn warm_cache_reads_no_sysfs_and_expires_after_the_ttl() {
    let f = FakeSysfs::standard();
    let mut cfg = config(&f);
    cfg.cache_ttl = 1;
    let enricher = Enricher::new(&cfg).unwrap();
    let mut first = alert("sdc failed, sdx missing");
    enricher.enrich(&mut first);
    assert!(by_ref(&first.hardware, "sdc").found);
    assert!(!by_ref(&first.hardware, "sdx").found);

    // Move the whole tree away: a warm cache answers without touching it.
    let moved = f.dir.path().join("sys.moved");
    fs::rename(&f.sys, &moved).unwrap();
    let mut second = alert("sdc failed, sdx missing");
    enricher.enrich(&mut second);
    assert_eq!(second.hardware, first.hardware);

    // Bring it back with sdx added: once the TTL passes, sdx resolves and sdc is read again.
    fs::rename(&moved, &f.sys).unwrap();
    f.scsi_disk(&fake_sysfs::ScsiDisk {
        name: "sdx",
        pci: "devices/pci0000:00/0000:00:1f.2",
        host: 1,
        port: "ata2",
        hctl: "1:0:0:0",
        vendor: "ATA",
        model: "NEW DISK",
        rev: "1",
        serial: "NEW123",
        wwid: "t10.ATA NEW",
        sectors: 100,
        rotational: false,
        sas_address: None,
    });
    std::thread::sleep(Duration::from_millis(1100));
    let mut third = alert("sdc failed, sdx missing");
    enricher.enrich(&mut third);
    assert_eq!(device(&third.hardware, "sdx")["serial"], "NEW123");
    assert_eq!(device(&third.hardware, "sdc"), sas_disk());
}

#[test]
fn max_refs_caps_the_list_and_hardware_can_be_disabled() {
    let f = FakeSysfs::standard();
    let mut cfg = config(&f);
    cfg.max_refs = 2;
    let enricher = Enricher::new(&cfg).unwrap();
    let mut a = alert("sda sdb sdc sdd");
    enricher.enrich(&mut a);
    let refs: Vec<&str> = a.hardware.iter().map(|h| h.reference.as_str()).collect();
    assert_eq!(refs, ["sda", "sdb"]);

    cfg.hardware = false;
    cfg.sysfs_root = "/nonexistent/sys".into();
    let enricher = Enricher::new(&cfg).unwrap();
    let mut a = alert("sdc");
    enricher.enrich(&mut a);
    assert!(a.hardware.is_empty());
    assert!(a.host.is_some());
}

#[test]
fn a_missing_sysfs_root_is_an_error() {
    let f = FakeSysfs::new();
    let mut cfg = config(&f);
    cfg.sysfs_root = f.dir.path().join("nope");
    assert!(matches!(
        Enricher::new(&cfg),
        Err(EnrichError::SysfsRoot { .. })
    ));
}

fn schema(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schema")
        .join(name);
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn assert_valid(validator: &jsonschema::Validator, instance: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{instance:#}");
}

#[test]
fn uuid_label_partuuid_partlabel_and_mapper_names_resolve() {
    let f = FakeSysfs::standard();
    let enricher = Enricher::new(&config(&f)).unwrap();
    let uuid = format!("/dev/disk/by-uuid/{}", fake_sysfs::FS_UUID);
    let partuuid = format!("/dev/disk/by-partuuid/{}", fake_sysfs::PART_UUID);
    let label = format!("/dev/disk/by-label/{}", fake_sysfs::FS_LABEL);
    let partlabel = format!("/dev/disk/by-partlabel/{}", fake_sysfs::FS_LABEL);
    let mapper = format!("/dev/mapper/{}", fake_sysfs::DM_NAME);
    let mut a = alert(&format!(
        "mount of {uuid} ({partuuid}) failed; {label}, {partlabel}: read-only; {mapper}:          path lost; /dev/mapper/gone and /dev/disk/by-uuid/0000 missing; /dev/mapper/control"
    ));
    enricher.enrich(&mut a);
    let refs: Vec<(&str, &str, bool)> = a
        .hardware
        .iter()
        .map(|h| (h.reference.as_str(), h.ref_kind.as_str(), h.found))
        .collect();
    assert_eq!(
        refs,
        [
            (uuid.as_str(), "by-uuid", true),
            (partuuid.as_str(), "by-partuuid", true),
            (label.as_str(), "by-label", true),
            (partlabel.as_str(), "by-partlabel", true),
            (mapper.as_str(), "mapper", true),
            ("/dev/mapper/gone", "mapper", false),
            ("/dev/disk/by-uuid/0000", "by-uuid", false),
            // /dev/mapper/control is device-mapper's own node, not a device.
        ]
    );
    for r in [&uuid, &partuuid] {
        assert_eq!(device(&a.hardware, r)["name"], "sdc2", "{r}");
        assert_eq!(
            device(&a.hardware, r)["serial"],
            fake_sysfs::SAS_SERIAL,
            "{r}"
        );
    }
    for r in [&label, &partlabel] {
        assert_eq!(device(&a.hardware, r)["name"], "nvme0n1p1", "{r}");
    }
    let dm = device(&a.hardware, &mapper);
    assert_eq!(dm["name"], "dm-0");
    assert_eq!(dm["slaves"][1], sas_disk());

    // A /dev/mapper name whose link is not in the dev root still resolves, by the dm name sysfs
    // holds.
    std::fs::remove_file(f.dev.join("mapper").join(fake_sysfs::DM_NAME)).unwrap();
    let enricher = Enricher::new(&config(&f)).unwrap();
    let mut a = alert(&format!("{mapper} lost"));
    enricher.enrich(&mut a);
    assert_eq!(device(&a.hardware, &mapper)["dm_uuid"], fake_sysfs::DM_UUID);
}

#[test]
fn hardware_and_host_match_their_schema() {
    let f = FakeSysfs::standard();
    let cfg = EnrichConfig {
        max_refs: 32,
        ..config(&f)
    };
    let enricher = Enricher::new(&cfg).unwrap();
    let mut a = alert(&format!(
        "sdc2 sdb nvme0n1 nvme0n1p1 dm-0 eth0 eth1 bond0 sdz lo 2:0:0:0 naa.5000c500a1b2c3d4 \
         /dev/disk/by-id/{} /dev/disk/by-uuid/{} /dev/disk/by-label/{} /dev/mapper/{} \
         /dev/disk/by-partuuid/{} /dev/disk/by-partlabel/{}",
        fake_sysfs::SATA_BY_ID,
        fake_sysfs::FS_UUID,
        fake_sysfs::FS_LABEL,
        fake_sysfs::DM_NAME,
        fake_sysfs::PART_UUID,
        fake_sysfs::FS_LABEL,
    ));
    enricher.enrich(&mut a);
    assert_eq!(a.hardware.len(), 17, "lo is never a reference");
    let hw_schema = schema("hardware.v1.json");
    let validator = jsonschema::validator_for(&hw_schema).unwrap();
    for h in &a.hardware {
        assert_valid(&validator, &serde_json::to_value(h).unwrap());
    }
    // The schema rejects what it should: a found entry without a device, an unknown field.
    assert!(!validator.is_valid(&json!({"reference": "sdc", "ref_kind": "block", "found": true})));
    let mut bad = serde_json::to_value(&a.hardware[0]).unwrap();
    bad["device"]["colour"] = json!("red");
    assert!(!validator.is_valid(&bad));

    // And the whole enriched alert, as iemd writes it, is a valid iem.alert/v1.
    let alert_validator = jsonschema::validator_for(&schema("iem.alert.v1.json")).unwrap();
    let published: Value = serde_json::from_slice(&iemd::alert::encode(&a).unwrap()).unwrap();
    assert_valid(&alert_validator, &published);
    for (h, published) in a
        .hardware
        .iter()
        .zip(published["hardware"].as_array().unwrap())
    {
        assert_valid(&validator, published);
        assert_eq!(published, &serde_json::to_value(h).unwrap());
    }

    let mut host_schema = hw_schema.clone();
    host_schema["$ref"] = json!("#/$defs/host");
    let host_validator = jsonschema::validator_for(&host_schema).unwrap();
    assert_valid(
        &host_validator,
        &serde_json::to_value(a.host.as_ref().unwrap()).unwrap(),
    );
    assert!(!host_validator.is_valid(&json!({"hostname": "x"})));
}

#[test]
fn sspl_bodies_match_their_schema() {
    let f = FakeSysfs::standard();
    let enricher = Enricher::new(&config(&f)).unwrap();
    let validator = jsonschema::validator_for(&schema("sspl-sensor-response.json")).unwrap();

    let mut enriched = alert("IO error on sdc");
    enricher.enrich(&mut enriched);
    let body = iemd::sspl::body(&enriched);
    assert_valid(&validator, &body);
    let s = &body["message"]["sensor_response_type"];
    assert_eq!(s["host_id"], "srvnode-1.data.lab");
    assert_eq!(s["info"]["rack_id"], "rack-7");
    assert_eq!(s["info"]["cluster_id"], "cluster-a");
    assert_eq!(s["specific_info"]["source"], "Hardware");
    assert_eq!(s["specific_info"]["IEC"], "EH0020020002");
    assert!(s["alert_id"].as_str().unwrap().starts_with("1795301401"));

    let mut resolved = alert("Server has joined back the cluster.");
    resolved.severity = Some(Coded {
        code: "I".into(),
        name: "informational".into(),
    });
    resolved.alert_type = None;
    resolved.source_type = Some(Coded {
        code: "O".into(),
        name: "os".into(),
    });
    resolved.code = Some("IO0080010002".into());
    resolved.impact = None;
    assert_valid(&validator, &iemd::sspl::body(&resolved));

    let mut malformed = alert("Drive removed");
    malformed.kind = Kind::Malformed;
    malformed.code = None;
    malformed.severity = None;
    malformed.alert_type = None;
    malformed.source_type = None;
    malformed.component = None;
    malformed.module = None;
    malformed.event = None;
    malformed.reason = Some("legacy 9-digit code".into());
    malformed.time = "not a time".into();
    let body = iemd::sspl::body(&malformed);
    assert_valid(&validator, &body);
    assert_eq!(body["time"], "0");

    // The schema is not vacuous: a wrong alert_type or a missing IEC is rejected.
    let mut bad = iemd::sspl::body(&enriched);
    bad["message"]["sensor_response_type"]["alert_type"] = json!("boom");
    assert!(!validator.is_valid(&bad));
    let mut bad = iemd::sspl::body(&enriched);
    bad["message"]["sensor_response_type"]["specific_info"]
        .as_object_mut()
        .unwrap()
        .remove("IEC");
    assert!(!validator.is_valid(&bad));
}
