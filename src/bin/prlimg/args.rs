//! The argument parsers the subcommands share (clap `value_parser`s) and the recipe reader.

use std::path::Path;

use parallels_image::{bundle::parse_guid_loose, recipe::DataRecipe, BitmapSpec};
use uuid::Uuid;

use crate::output::Failure;

/// A size with qemu-img's suffixes (K, M, G, T, P, E: powers of 1024).
pub fn size(text: &str) -> Result<u64, String> {
    parallels_image::parse_size(text).map_err(|e| e.to_string())
}

/// A bundle snapshot's GUID, with or without braces.
pub fn parse_snapshot(text: &str) -> Result<Uuid, String> {
    parse_guid_loose(text).ok_or_else(|| format!("{text:?} is not a GUID"))
}

/// Edits per variant: N or MIN-MAX (MAX at most 64).
pub fn parse_edits(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let n = |t: &str| {
        t.trim()
            .parse::<usize>()
            .map_err(|_| format!("{s:?} is not N or MIN-MAX"))
    };
    let (a, b) = (n(a)?, n(b)?);
    if a > b || b > 64 {
        return Err(format!("{s:?}: MIN must not exceed MAX, and MAX is at most 64"));
    }
    Ok((a, b))
}

/// The header's inuse: a number (decimal or 0x..) or a 4-letter tag (`v2.1`, `Ynot`).
pub fn parse_inuse(s: &str) -> Result<u32, String> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u32::from_str_radix(hex, 16).map_err(|_| format!("invalid inuse {s:?}"));
    }
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    match s.as_bytes() {
        tag @ [_, _, _, _] if tag.iter().all(u8::is_ascii_graphic) => {
            Ok(u32::from_le_bytes([tag[0], tag[1], tag[2], tag[3]]))
        }
        _ => Err(format!(
            "invalid inuse {s:?} (expected 0, v2.1, Ynot, another 4-letter tag, or a number)"
        )),
    }
}

fn parse_byte(s: &str) -> Result<u8, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("invalid byte {s:?} (expected 0..255 or 0x00..0xff)"))
}

/// Guest data: `OFFSET:LEN:BYTE`.
pub fn parse_data(s: &str) -> Result<DataRecipe, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [offset, len, byte] = parts[..] else {
        return Err(format!("invalid data {s:?} (expected OFFSET:LEN:BYTE)"));
    };
    Ok(DataRecipe {
        offset: size(offset)?,
        len: size(len)?,
        byte: parse_byte(byte)?,
    })
}

/// A bitmap: `UUID:GRANULARITY:OFFSET+LEN,...`.
pub fn parse_bitmap(s: &str) -> Result<BitmapSpec, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [id, granularity, extents] = parts[..] else {
        return Err(format!(
            "invalid bitmap {s:?} (expected UUID:GRANULARITY:OFFSET+LEN,...)"
        ));
    };
    let id = uuid::Uuid::parse_str(id).map_err(|e| format!("invalid bitmap id {id:?}: {e}"))?;
    let mut list = Vec::new();
    for e in extents.split(',').filter(|e| !e.is_empty()) {
        let (o, l) = e
            .split_once('+')
            .ok_or_else(|| format!("invalid dirty range {e:?} (expected OFFSET+LEN)"))?;
        list.push((size(o)?, size(l)?));
    }
    Ok(BitmapSpec {
        id: *id.as_bytes(),
        granularity: size(granularity)?,
        extents: list,
    })
}

/// A fraction from 0.0 to 1.0.
pub fn parse_density(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(d) if (0.0..=1.0).contains(&d) => Ok(d),
        _ => Err(format!("invalid density {s:?} (expected a number from 0.0 to 1.0)")),
    }
}

/// Reads an image or bundle recipe, TOML or JSON by the file name's extension.
pub fn read_recipe<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure::io(path, &e))?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => toml::from_str(&text).map_err(|e| Failure::at(path, toml_reason(&text, &e))),
        Some("json") => serde_json::from_str(&text).map_err(|e| Failure::at(path, e.to_string())),
        _ => Err(Failure::at(path, "a recipe file name must end in .json or .toml")),
    }
}

/// A TOML error on one line: where (line and column, from 1) and serde's reason.
fn toml_reason(text: &str, e: &toml::de::Error) -> String {
    let reason = e.message().trim().replace('\n', "; ");
    let Some(span) = e.span() else {
        return format!("TOML: {reason}");
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("TOML at line {line}, column {column}: {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_parsers() {
        let d = parse_data("1M:64K:0xaa").unwrap();
        assert_eq!((d.offset, d.len, d.byte), (1 << 20, 65536, 0xaa));
        assert_eq!(parse_data("0:1:255").unwrap().byte, 255);
        assert!(parse_data("0:1:256").is_err());
        assert!(parse_data("0:1").is_err());
        let b = parse_bitmap("e4f2eed0-37fe-4539-b50b-85d2e7fd235f:64K:0+128K,1M+64K").unwrap();
        assert_eq!(b.granularity, 65536);
        assert_eq!(b.extents, vec![(0, 131072), (1 << 20, 65536)]);
        assert_eq!(b.id[..4], [0xe4, 0xf2, 0xee, 0xd0]);
        assert_eq!(
            parse_bitmap("e4f2eed0-37fe-4539-b50b-85d2e7fd235f:512:")
                .unwrap()
                .extents,
            vec![]
        );
        assert!(parse_bitmap("nope:64K:").is_err());
        assert!(parse_bitmap("e4f2eed0-37fe-4539-b50b-85d2e7fd235f:64K:5").is_err());
        assert_eq!(parse_density("0.25"), Ok(0.25));
        assert!(parse_density("1.5").is_err());
        assert!(parse_density("NaN").is_err());
    }
}
