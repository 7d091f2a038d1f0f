//! A writer for small MaxMind DB files (format 2.0), so network tests
//! build their own ASN database instead of downloading one. Written from
//! the MaxMind DB File Format Specification: a binary search tree of
//! 24-bit records, 16 zero bytes, a data section, then the metadata map
//! after `\xAB\xCD\xEFMaxMind.com`. IPv4 only, which is all tests need.
#![allow(dead_code)]

use std::net::Ipv4Addr;

#[derive(Clone, Copy)]
enum Record {
    Empty,
    Node(u32),
    Data(u32),
}

/// A data-section value.
pub enum Value {
    Text(String),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(String, Value)>),
    Array(Vec<Value>),
}

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (first, extra): (u8, Vec<u8>) = match size {
        0..=28 => (size as u8, vec![]),
        29..=284 => (29, vec![(size - 29) as u8]),
        _ => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
    };
    if kind <= 7 {
        out.push((kind << 5) | first);
    } else {
        // Extended types: type 0 in the control byte, then `kind - 7`.
        out.push(first);
        out.push(kind - 7);
    }
    out.extend(extra);
}

fn unsigned(out: &mut Vec<u8>, kind: u8, value: u64, width: usize) {
    let bytes = value.to_be_bytes();
    let significant: Vec<u8> = bytes[8 - width..].iter().copied().skip_while(|b| *b == 0).collect();
    control(out, kind, significant.len());
    out.extend(significant);
}

impl Value {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Text(text) => {
                control(out, 2, text.len());
                out.extend(text.as_bytes());
            }
            Value::U16(value) => unsigned(out, 5, u64::from(*value), 2),
            Value::U32(value) => unsigned(out, 6, u64::from(*value), 4),
            Value::U64(value) => unsigned(out, 9, *value, 8),
            Value::Map(entries) => {
                control(out, 7, entries.len());
                for (key, value) in entries {
                    Value::Text(key.clone()).encode(out);
                    value.encode(out);
                }
            }
            Value::Array(items) => {
                control(out, 11, items.len());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

/// An ASN database: `(network, prefix length, ASN, organisation)` entries.
pub fn asn_database(entries: &[(Ipv4Addr, u8, u32, &str)]) -> Vec<u8> {
    let mut nodes: Vec<[Record; 2]> = vec![[Record::Empty; 2]];
    let mut data = Vec::new();
    for &(network, prefix, asn, organisation) in entries {
        let offset = data.len() as u32;
        Value::Map(vec![
            ("autonomous_system_number".into(), Value::U32(asn)),
            ("autonomous_system_organization".into(), Value::Text(organisation.into())),
        ])
        .encode(&mut data);
        let bits = u32::from(network);
        let mut node = 0usize;
        for depth in 0..prefix {
            let bit = ((bits >> (31 - depth)) & 1) as usize;
            if depth == prefix - 1 {
                nodes[node][bit] = Record::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Record::Node(next) => next as usize,
                    Record::Empty => {
                        nodes.push([Record::Empty; 2]);
                        let next = nodes.len() - 1;
                        nodes[node][bit] = Record::Node(next as u32);
                        next
                    }
                    Record::Data(_) => panic!("overlapping networks in the test database"),
                };
            }
        }
    }
    let node_count = nodes.len() as u32;
    let mut out = Vec::new();
    for node in &nodes {
        for record in node {
            let value = match *record {
                Record::Empty => node_count,
                Record::Node(next) => next,
                Record::Data(offset) => node_count + 16 + offset,
            };
            out.extend(&value.to_be_bytes()[1..]);
        }
    }
    out.extend([0u8; 16]);
    out.extend(data);
    out.extend(b"\xAB\xCD\xEFMaxMind.com");
    Value::Map(vec![
        ("binary_format_major_version".into(), Value::U16(2)),
        ("binary_format_minor_version".into(), Value::U16(0)),
        ("build_epoch".into(), Value::U64(1_790_000_000)),
        ("database_type".into(), Value::Text("GeoLite2-ASN".into())),
        ("description".into(), Value::Map(vec![("en".into(), Value::Text("palisade test ASN database".into()))])),
        ("ip_version".into(), Value::U16(4)),
        ("languages".into(), Value::Array(vec![Value::Text("en".into())])),
        ("node_count".into(), Value::U32(node_count)),
        ("record_size".into(), Value::U16(24)),
    ])
    .encode(&mut out);
    out
}
