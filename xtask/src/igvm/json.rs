//! `cargo xtask igvm-dump --json`: the dump's fields as one JSON object, so two builds can be
//! diffed (`diff <(cargo xtask igvm-dump --json a.igvm) <(... b.igvm)`). Addresses, masks and
//! register values are hex strings (as the text dump prints them), counts are numbers; page
//! runs are merged as in the text dump. Top-level keys: `bytes`, `revision`, `architecture`,
//! `vbs_measurement` (SHA-256, hex), `platforms`, `initializations`, `directives`, `vtl0`; a new
//! field is one more key.

use super::{low_u64, variant_name, PAGE, VTL0_CONTEXT_OFFSET};
use anyhow::{bail, Context, Result};
use igvm::registers::X86Register;
use igvm::{IgvmDirectiveHeader as D, IgvmFile, IgvmPlatformHeader};
use serde_json::{json, Map, Value};

fn hex(v: u64) -> Value {
    Value::String(format!("{v:#x}"))
}

/// The file as JSON (see the module comment).
pub fn dump_json(igvm: &[u8]) -> Result<Value> {
    let word = |at: usize| Some(u32::from_le_bytes(igvm.get(at..at + 4)?.try_into().ok()?));
    if word(0) != Some(u32::from_le_bytes(*b"IGVM")) {
        bail!("not an IGVM file (bad magic)");
    }
    let revision = word(4).context("truncated IGVM fixed header")?;
    let arch = match (revision, word(24)) {
        (1, _) | (_, Some(0)) => "x86_64".to_string(),
        (_, Some(1)) => "aarch64".to_string(),
        (_, a) => format!("unknown ({a:?})"),
    };
    let file = IgvmFile::new_from_binary(igvm, None).context("parsing the IGVM file")?;
    let mut top = Map::new();
    top.insert("bytes".into(), json!(igvm.len()));
    top.insert("revision".into(), json!(revision));
    top.insert("architecture".into(), json!(arch));
    top.insert(
        "vbs_measurement".into(),
        json!(super::digest(igvm).context("the measurement")?),
    );
    let platforms: Vec<Value> = file
        .platforms()
        .iter()
        .map(|IgvmPlatformHeader::SupportedPlatform(p)| {
            json!({
                "type": format!("{:?}", p.platform_type),
                "highest_vtl": p.highest_vtl,
                "compatibility_mask": hex(p.compatibility_mask.into()),
                "version": p.platform_version,
                "shared_gpa_boundary": hex(p.shared_gpa_boundary),
            })
        })
        .collect();
    top.insert("platforms".into(), Value::Array(platforms));
    let inits: Vec<Value> = file
        .initializations()
        .iter()
        .map(|i| json!(format!("{i:x?}")))
        .collect();
    top.insert("initializations".into(), Value::Array(inits));
    top.insert("directives".into(), Value::Array(directives(&file)));
    top.insert("vtl0".into(), vtl0(&file));
    Ok(Value::Object(top))
}

/// A run of pages whose (zero?, type, flags, mask) are the same: [start, end), that key.
type PageRun = (u64, u64, (bool, String, u32, u32));

fn directives(file: &IgvmFile) -> Vec<Value> {
    let mut out = Vec::new();
    let mut run: Option<PageRun> = None;
    let flush = |out: &mut Vec<Value>, run: &mut Option<PageRun>| {
        if let Some((start, end, (zero, ty, flags, mask))) = run.take() {
            out.push(json!({
                "kind": "pages",
                "start": hex(start),
                "end": hex(end),
                "pages": (end - start) / PAGE,
                "type": ty,
                "data": if zero { "zero" } else { "data" },
                "flags": hex(flags.into()),
                "compatibility_mask": hex(mask.into()),
            }));
        }
    };
    for d in file.directives() {
        if let D::PageData {
            gpa,
            compatibility_mask,
            flags,
            data_type,
            data,
        } = d
        {
            let key = (
                data.is_empty(),
                format!("{data_type:?}"),
                flags.into_bits(),
                *compatibility_mask,
            );
            match &mut run {
                Some((_, end, k)) if *end == *gpa && *k == key => *end += PAGE,
                _ => {
                    flush(&mut out, &mut run);
                    run = Some((*gpa, gpa + PAGE, key));
                }
            }
            continue;
        }
        flush(&mut out, &mut run);
        out.push(match d {
            D::X64VbsVpContext {
                vtl,
                registers,
                compatibility_mask,
            } => {
                let regs: Map<String, Value> = registers
                    .iter()
                    .map(|r| (variant_name(r), x86_value(r, *vtl)))
                    .collect();
                json!({
                    "kind": "vp_context",
                    "arch": "x86_64",
                    "vtl": *vtl as u8,
                    "compatibility_mask": hex((*compatibility_mask).into()),
                    "registers": regs,
                })
            }
            D::AArch64VbsVpContext {
                vtl,
                registers,
                compatibility_mask,
            } => {
                let regs: Map<String, Value> = registers
                    .iter()
                    .map(|r| {
                        let raw = r.into_vbs_vp_context_reg(*vtl).register_value;
                        (variant_name(r), hex(low_u64(&raw)))
                    })
                    .collect();
                json!({
                    "kind": "vp_context",
                    "arch": "aarch64",
                    "vtl": *vtl as u8,
                    "compatibility_mask": hex((*compatibility_mask).into()),
                    "registers": regs,
                })
            }
            D::ParameterArea {
                number_of_bytes,
                parameter_area_index,
                initial_data,
            } => json!({
                "kind": "parameter_area",
                "index": parameter_area_index,
                "bytes": hex(*number_of_bytes),
                "initial_data_bytes": initial_data.len(),
            }),
            D::VpCount(p) | D::MemoryMap(p) => json!({
                "kind": if matches!(d, D::VpCount(_)) { "vp_count" } else { "memory_map" },
                "area": p.parameter_area_index,
                "offset": hex(p.byte_offset.into()),
            }),
            D::ParameterInsert(p) => json!({
                "kind": "parameter_insert",
                "area": p.parameter_area_index,
                "gpa": hex(p.gpa),
                "compatibility_mask": hex(p.compatibility_mask.into()),
            }),
            other => json!({ "kind": "other", "debug": format!("{other:x?}") }),
        });
    }
    flush(&mut out, &mut run);
    out
}

/// A register's value: a number as hex, a segment or table register as an object.
fn x86_value(r: &X86Register, vtl: igvm::hv_defs::Vtl) -> Value {
    use X86Register as X;
    match r {
        X::Gdtr(t) | X::Idtr(t) => json!({ "base": hex(t.base), "limit": hex(t.limit.into()) }),
        X::Cs(s) | X::Ds(s) | X::Es(s) | X::Fs(s) | X::Gs(s) | X::Ss(s) | X::Tr(s) => json!({
            "selector": hex(s.selector.into()),
            "base": hex(s.base),
            "limit": hex(s.limit.into()),
            "attributes": hex(s.attributes.into()),
        }),
        _ => hex(low_u64(&r.into_vbs_vp_context_reg(vtl).register_value)),
    }
}

/// The VTL0 boot page (found by its magic, as the text dump does): where, its header, the
/// payload's page regions (those outside the region holding the boot page) and the raw
/// context bytes as hex; `null` when the file carries no VTL0 payload.
fn vtl0(file: &IgvmFile) -> Value {
    let Some(boot) = super::vtl0_boot(file) else {
        return Value::Null;
    };
    let header = boot.header();
    let super::Vtl0Boot { at, page, payload } = boot;
    let (version, arch, size) = (header.version, header.arch, header.context_size as usize);
    let payload: Vec<Value> = payload
        .iter()
        .map(|r| json!({ "start": hex(r.start), "end": hex(r.end), "pages": (r.end - r.start) / PAGE }))
        .collect();
    let context = page
        .get(VTL0_CONTEXT_OFFSET..VTL0_CONTEXT_OFFSET + size)
        .map(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>());
    json!({
        "boot_page": hex(at),
        "version": version,
        "arch": super::vtl0_arch_name(arch),
        "context_bytes": size,
        "payload": payload,
        "context": context,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::igvm::VTL0_BOOT_MAGIC;
    use igvm::registers::SegmentRegister;
    use igvm::IgvmRevision;
    use igvm_defs::{
        IgvmPageDataFlags, IgvmPageDataType, IgvmPlatformType, IGVM_VHS_PARAMETER,
        IGVM_VHS_PARAMETER_INSERT, IGVM_VHS_SUPPORTED_PLATFORM,
    };

    /// A small x64 file: three data pages and a zero page (two runs), a VTL2 context, a VP
    /// count parameter area inserted at 0x200000, and a VTL0 boot page at 0x300000.
    fn file() -> Vec<u8> {
        let page = |gpa: u64, data: Vec<u8>| D::PageData {
            gpa,
            compatibility_mask: 1,
            flags: IgvmPageDataFlags::new(),
            data_type: IgvmPageDataType::NORMAL,
            data,
        };
        let mut boot = vec![0u8; PAGE as usize];
        boot[..8].copy_from_slice(&VTL0_BOOT_MAGIC.to_le_bytes());
        boot[8..12].copy_from_slice(&1u32.to_le_bytes());
        boot[12..16].copy_from_slice(&1u32.to_le_bytes());
        boot[16..20].copy_from_slice(&4u32.to_le_bytes());
        boot[VTL0_CONTEXT_OFFSET..VTL0_CONTEXT_OFFSET + 4].copy_from_slice(&[1, 2, 3, 0xab]);
        let directives = vec![
            page(0x10_0000, vec![1; PAGE as usize]),
            page(0x10_1000, vec![2; PAGE as usize]),
            page(0x10_2000, vec![3; PAGE as usize]),
            page(0x10_3000, vec![]),
            D::ParameterArea {
                number_of_bytes: PAGE,
                parameter_area_index: 0,
                initial_data: vec![],
            },
            D::VpCount(IGVM_VHS_PARAMETER {
                parameter_area_index: 0,
                byte_offset: 8,
            }),
            D::ParameterInsert(IGVM_VHS_PARAMETER_INSERT {
                gpa: 0x20_0000,
                compatibility_mask: 1,
                parameter_area_index: 0,
            }),
            page(0x30_0000, boot),
            page(0x40_0000, vec![4; PAGE as usize]),
            D::X64VbsVpContext {
                vtl: igvm::hv_defs::Vtl::Vtl2,
                registers: vec![
                    X86Register::Rip(0x10_0040),
                    X86Register::Cs(SegmentRegister {
                        base: 0,
                        limit: 0xffff_ffff,
                        selector: 8,
                        attributes: 0xa09b,
                    }),
                ],
                compatibility_mask: 1,
            },
        ];
        let platform = IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
            compatibility_mask: 1,
            highest_vtl: 2,
            platform_type: IgvmPlatformType::VSM_ISOLATION,
            platform_version: 1,
            shared_gpa_boundary: 0,
        });
        let igvm = IgvmFile::new(IgvmRevision::V1, vec![platform], vec![], directives).unwrap();
        let mut out = Vec::new();
        igvm.serialize(&mut out).unwrap();
        out
    }

    #[test]
    fn the_json_dump_has_every_field_the_text_dump_has() {
        let bytes = file();
        let j = dump_json(&bytes).unwrap();
        assert_eq!(j["bytes"], json!(bytes.len()));
        assert_eq!(j["revision"], json!(1));
        assert_eq!(j["architecture"], json!("x86_64"));
        // The measurement: SHA-256 as 64 hex digits, different for a file whose page data
        // differs in one byte.
        let m = j["vbs_measurement"].as_str().unwrap();
        assert!(
            m.len() == 64 && m.bytes().all(|b| b.is_ascii_hexdigit()),
            "{m}"
        );
        let last = bytes.len() - 1;
        let mut other = bytes.clone();
        other[last] ^= 1;
        let o = dump_json(&other).expect("the file's last byte is page data");
        assert_ne!(o["vbs_measurement"], j["vbs_measurement"]);
        assert_eq!(
            j["platforms"],
            json!([{ "type": "VSM_ISOLATION", "highest_vtl": 2, "compatibility_mask": "0x1",
                     "version": 1, "shared_gpa_boundary": "0x0" }])
        );
        let d = j["directives"].as_array().unwrap();
        let kinds: Vec<&str> = d.iter().map(|x| x["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "pages",
                "pages",
                "parameter_area",
                "vp_count",
                "parameter_insert",
                "pages",
                "pages",
                "vp_context"
            ]
        );
        assert_eq!(
            d[0],
            json!({ "kind": "pages", "start": "0x100000", "end": "0x103000", "pages": 3,
                    "type": "NORMAL", "data": "data", "flags": "0x0",
                    "compatibility_mask": "0x1" })
        );
        assert_eq!(d[1]["data"], json!("zero"));
        assert_eq!(
            (&d[1]["start"], &d[1]["pages"]),
            (&json!("0x103000"), &json!(1))
        );
        assert_eq!(
            d[3],
            json!({ "kind": "vp_count", "area": 0, "offset": "0x8" })
        );
        assert_eq!(d[4]["gpa"], json!("0x200000"));
        assert_eq!(
            (&d[5]["start"], &d[5]["pages"]),
            (&json!("0x300000"), &json!(1))
        );
        assert_eq!(
            d[7],
            json!({ "kind": "vp_context", "arch": "x86_64", "vtl": 2, "compatibility_mask": "0x1",
                    "registers": { "Rip": "0x100040", "Cs": { "selector": "0x8", "base": "0x0",
                    "limit": "0xffffffff", "attributes": "0xa09b" } } })
        );
        assert_eq!(
            j["vtl0"],
            json!({ "boot_page": "0x300000", "version": 1, "arch": "x86_64", "context_bytes": 4,
                    "context": "010203ab",
                    "payload": [
                        { "start": "0x100000", "end": "0x104000", "pages": 4 },
                        { "start": "0x200000", "end": "0x201000", "pages": 1 },
                        { "start": "0x400000", "end": "0x401000", "pages": 1 }
                    ] })
        );
        // The text dump says the same of the same file.
        let text = super::super::dump(&bytes).unwrap();
        for needle in [
            "pages 0x100000..0x103000 (3 pages) NORMAL data",
            "VTL0 boot page at 0x300000: version 1, arch x86_64, context 4 bytes",
        ] {
            assert!(text.contains(needle), "{needle:?} in\n{text}");
        }
        assert!(dump_json(b"IGVMjunk").is_err());
        assert!(dump_json(b"nope").is_err());
    }
}
