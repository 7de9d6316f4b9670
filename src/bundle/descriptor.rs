//! `DiskDescriptor.xml`: its model, read with `roxmltree` and written with `quick-xml`.
//!
//! Reading checks only what is needed to interpret the rest: the XML is well-formed (D1) and
//! the required elements are there with values of the right kind (D2). Everything else the
//! descriptor says is kept as read and judged by [`super::Bundle::validate`]. Elements this
//! crate does not know (`Encryption`, `Miscellaneous`, `UID`, …) are kept as [`XmlElement`]s
//! and written back after the known ones.

use std::fmt;

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;
use uuid::Uuid;

use super::violation::BundleViolation;

/// The root element's name.
pub const ROOT: &str = "Parallels_disk_image";
/// The only version there is.
pub const VERSION: &str = "1.0";
/// The parent of the root snapshot.
pub const NULL_GUID: Uuid = Uuid::nil();
/// The top snapshot (the one the guest writes to) when the descriptor has no `TopGUID`.
pub const DEFAULT_TOP_GUID: Uuid = Uuid::from_u128(0x5fbaabe3_6958_40ff_92a7_860e329aab41);
/// Used by backup software; never the top.
pub const BACKUP_GUID: Uuid = Uuid::from_u128(0x704718e1_2314_44c8_9087_d78ed36b0f4e);

/// An element kept as read: name, attributes, text and children, in order.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct XmlElement {
    /// Tag name.
    pub name: String,
    /// Attributes in order.
    pub attributes: Vec<(String, String)>,
    /// The element's own text (its text children joined), trimmed.
    pub text: String,
    /// Child elements in order.
    pub children: Vec<XmlElement>,
}

impl XmlElement {
    /// An element with only text.
    pub fn text(name: &str, text: impl Into<String>) -> Self {
        XmlElement {
            name: name.to_string(),
            text: text.into(),
            ..Default::default()
        }
    }

    fn from_node(node: roxmltree::Node<'_, '_>) -> Self {
        XmlElement {
            name: node.tag_name().name().to_string(),
            attributes: node
                .attributes()
                .map(|a| (a.name().to_string(), a.value().to_string()))
                .collect(),
            text: own_text(node),
            children: node
                .children()
                .filter(|c| c.is_element())
                .map(Self::from_node)
                .collect(),
        }
    }
}

/// Whether a storage file is raw or an expanding Parallels image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum ImageType {
    /// The file is the raw disk (or segment): no header.
    Plain,
    /// The file is an expanding Parallels image (`.hds` with header and BAT).
    Compressed,
}

impl ImageType {
    /// The name in the descriptor.
    pub fn name(self) -> &'static str {
        match self {
            ImageType::Plain => "Plain",
            ImageType::Compressed => "Compressed",
        }
    }
}

impl fmt::Display for ImageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `Disk_Parameters`. Sizes are in sectors.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DiskParameters {
    /// `Disk_size`: the disk's size in sectors.
    pub disk_size: u64,
    /// `Cylinders`.
    pub cylinders: u64,
    /// `Heads`.
    pub heads: u64,
    /// `Sectors` (per track).
    pub sectors: u64,
    /// `Padding`, if present (must be 0).
    pub padding: Option<u64>,
    /// `PhysicalSectorSize`, if present, as written.
    pub physical_sector_size: Option<String>,
    /// `LogicSectorSize`, if present, as written.
    pub logic_sector_size: Option<String>,
    /// Other children, kept.
    pub extra: Vec<XmlElement>,
}

/// One `Image` of a storage: the file holding one snapshot's data for that segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageEntry {
    /// `GUID` as written (a well-formed one is a UUID in braces).
    pub guid: String,
    /// `Type`.
    pub kind: ImageType,
    /// `File`: relative to the descriptor's folder, or absolute.
    pub file: String,
    /// Other children, kept.
    pub extra: Vec<XmlElement>,
}

/// One `Storage`: a segment of the disk, sectors `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Storage {
    /// `Start`, in sectors.
    pub start: u64,
    /// `End`, in sectors (exclusive).
    pub end: u64,
    /// `Blocksize`: the cluster size in sectors of its expanding images.
    pub blocksize: u64,
    /// One image per snapshot.
    pub images: Vec<ImageEntry>,
    /// Other children, kept.
    pub extra: Vec<XmlElement>,
}

/// One `Shot` of `Snapshots`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// `GUID` as written.
    pub guid: String,
    /// `ParentGUID` as written (the null GUID for the root).
    pub parent: String,
    /// Other children, kept.
    pub extra: Vec<XmlElement>,
}

/// `Snapshots`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Snapshots {
    /// `TopGUID` as written, if present.
    pub top_guid: Option<String>,
    /// The snapshots, in order.
    pub shots: Vec<SnapshotEntry>,
    /// Other children, kept.
    pub extra: Vec<XmlElement>,
}

/// The whole descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Descriptor {
    /// The root's `Version` attribute, if present (must be `1.0`).
    pub version: Option<String>,
    /// Other attributes of the root, kept.
    pub attributes: Vec<(String, String)>,
    /// `Disk_Parameters`.
    pub disk: DiskParameters,
    /// `StorageData`: the segments in order.
    pub storages: Vec<Storage>,
    /// Other children of `StorageData`, kept.
    pub storage_extra: Vec<XmlElement>,
    /// `Snapshots`.
    pub snapshots: Snapshots,
    /// Other children of the root, kept.
    pub extra: Vec<XmlElement>,
}

/// The descriptor's GUIDs read once: each text parsed with [`parse_guid`], `None` where it is
/// not a well-formed GUID (the text itself stays in the [`Descriptor`], for messages and XML).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Guids {
    /// `TopGUID`: `None` if absent, `Some(None)` if not a GUID.
    pub top: Option<Option<Uuid>>,
    /// Each Shot's `GUID` and `ParentGUID`, in order.
    pub shots: Vec<(Option<Uuid>, Option<Uuid>)>,
    /// Each storage's images' `GUID`s, in order.
    pub images: Vec<Vec<Option<Uuid>>>,
}

impl Guids {
    /// The index of the Shot with GUID `g`.
    pub fn shot_of(&self, g: Uuid) -> Option<usize> {
        self.shots.iter().position(|(s, _)| *s == Some(g))
    }

    /// The index of the image of snapshot `g` in storage `s`.
    pub fn image_of(&self, s: usize, g: Uuid) -> Option<usize> {
        self.images[s].iter().position(|im| *im == Some(g))
    }
}

impl Descriptor {
    /// Its GUIDs, each text parsed once.
    pub(crate) fn guids(&self) -> Guids {
        Guids {
            top: self.snapshots.top_guid.as_deref().map(parse_guid),
            shots: self
                .snapshots
                .shots
                .iter()
                .map(|s| (parse_guid(&s.guid), parse_guid(&s.parent)))
                .collect(),
            images: self
                .storages
                .iter()
                .map(|st| st.images.iter().map(|im| parse_guid(&im.guid)).collect())
                .collect(),
        }
    }
}

/// Parses a GUID as a descriptor writes it: a hyphenated UUID in braces, any case.
pub fn parse_guid(text: &str) -> Option<Uuid> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    if inner.len() != 36 {
        return None;
    }
    Uuid::try_parse(inner).ok()
}

/// A GUID as a descriptor writes it: `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`, lower case.
pub fn format_guid(guid: Uuid) -> String {
    format!("{{{}}}", guid.hyphenated())
}

/// Parses a GUID given by a person: with or without braces, any form `uuid` reads.
pub fn parse_guid_loose(text: &str) -> Option<Uuid> {
    let t = text.trim();
    let t = t.strip_prefix('{').and_then(|s| s.strip_suffix('}')).unwrap_or(t);
    Uuid::try_parse(t).ok()
}

fn own_text(node: roxmltree::Node<'_, '_>) -> String {
    let mut s = String::new();
    for c in node.children().filter(|c| c.is_text()) {
        s.push_str(c.text().unwrap_or(""));
    }
    s.trim().to_string()
}

/// Sector counts above this are refused (D2): their byte count would not fit 64 bits.
pub const MAX_SECTORS: u64 = u64::MAX >> 9;

struct Ctx<'a, 'input> {
    node: roxmltree::Node<'a, 'input>,
    path: String,
}

impl<'a, 'input> Ctx<'a, 'input> {
    fn children(&self, name: &str) -> Vec<Ctx<'a, 'input>> {
        self.node
            .children()
            .filter(|c| c.is_element() && c.tag_name().name() == name)
            .enumerate()
            .map(|(i, node)| Ctx {
                node,
                path: format!("{}/{name}[{i}]", self.path),
            })
            .collect()
    }

    fn child(&self, name: &str) -> Option<Ctx<'a, 'input>> {
        self.node
            .children()
            .find(|c| c.is_element() && c.tag_name().name() == name)
            .map(|node| Ctx {
                node,
                path: format!("{}/{name}", self.path),
            })
    }

    fn require(&self, name: &str) -> Result<Ctx<'a, 'input>, BundleViolation> {
        self.child(name).ok_or_else(|| BundleViolation::MissingElement {
            path: format!("{}/{name}", self.path),
        })
    }

    fn text_of(&self, name: &str) -> Result<String, BundleViolation> {
        Ok(own_text(self.require(name)?.node))
    }

    fn opt_text(&self, name: &str) -> Option<String> {
        self.child(name).map(|c| own_text(c.node))
    }

    fn number(&self, name: &str) -> Result<u64, BundleViolation> {
        let c = self.require(name)?;
        parse_number(&own_text(c.node), &c.path)
    }

    fn extra(&self, known: &[&str]) -> Vec<XmlElement> {
        self.node
            .children()
            .filter(|c| c.is_element() && !known.contains(&c.tag_name().name()))
            .map(XmlElement::from_node)
            .collect()
    }
}

fn parse_number(text: &str, path: &str) -> Result<u64, BundleViolation> {
    match text.parse::<u64>() {
        Ok(n) if n <= MAX_SECTORS => Ok(n),
        _ => Err(BundleViolation::BadValue {
            path: path.to_string(),
            found: text.chars().take(64).collect(),
            expected: "a whole number of sectors below 2^55",
        }),
    }
}

impl Descriptor {
    /// Reads a descriptor from its text. Fails with the D1 or D2 violation that stops it.
    pub fn parse(text: &str) -> Result<Descriptor, BundleViolation> {
        let doc = roxmltree::Document::parse(text).map_err(|e| BundleViolation::NotXml {
            line: e.pos().row,
            column: e.pos().col,
            reason: e.to_string(),
        })?;
        let root = doc.root_element();
        if root.tag_name().name() != ROOT {
            return Err(BundleViolation::WrongRoot {
                found: root.tag_name().name().to_string(),
            });
        }
        let root = Ctx {
            node: root,
            path: ROOT.to_string(),
        };
        let dp = root.require("Disk_Parameters")?;
        let disk = DiskParameters {
            disk_size: dp.number("Disk_size")?,
            cylinders: dp.number("Cylinders")?,
            heads: dp.number("Heads")?,
            sectors: dp.number("Sectors")?,
            padding: match dp.child("Padding") {
                Some(p) => Some(parse_number(&own_text(p.node), &p.path)?),
                None => None,
            },
            physical_sector_size: dp.opt_text("PhysicalSectorSize"),
            logic_sector_size: dp.opt_text("LogicSectorSize"),
            extra: dp.extra(&[
                "Disk_size",
                "Cylinders",
                "Heads",
                "Sectors",
                "Padding",
                "PhysicalSectorSize",
                "LogicSectorSize",
            ]),
        };
        let sd = root.require("StorageData")?;
        let storage_nodes = sd.children("Storage");
        if storage_nodes.is_empty() {
            return Err(BundleViolation::MissingElement {
                path: format!("{}/Storage", sd.path),
            });
        }
        let mut storages = Vec::with_capacity(storage_nodes.len());
        for s in &storage_nodes {
            let image_nodes = s.children("Image");
            if image_nodes.is_empty() {
                return Err(BundleViolation::MissingElement {
                    path: format!("{}/Image", s.path),
                });
            }
            let mut images = Vec::with_capacity(image_nodes.len());
            for im in &image_nodes {
                let type_text = im.text_of("Type")?;
                let kind = match type_text.as_str() {
                    "Plain" => ImageType::Plain,
                    "Compressed" => ImageType::Compressed,
                    other => {
                        return Err(BundleViolation::BadValue {
                            path: format!("{}/Type", im.path),
                            found: other.chars().take(64).collect(),
                            expected: "Plain or Compressed",
                        })
                    }
                };
                images.push(ImageEntry {
                    guid: im.text_of("GUID")?,
                    kind,
                    file: im.text_of("File")?,
                    extra: im.extra(&["GUID", "Type", "File"]),
                });
            }
            storages.push(Storage {
                start: s.number("Start")?,
                end: s.number("End")?,
                blocksize: s.number("Blocksize")?,
                images,
                extra: s.extra(&["Start", "End", "Blocksize", "Image"]),
            });
        }
        let sn = root.require("Snapshots")?;
        let shot_nodes = sn.children("Shot");
        if shot_nodes.is_empty() {
            return Err(BundleViolation::MissingElement {
                path: format!("{}/Shot", sn.path),
            });
        }
        let mut shots = Vec::with_capacity(shot_nodes.len());
        for s in &shot_nodes {
            shots.push(SnapshotEntry {
                guid: s.text_of("GUID")?,
                parent: s.text_of("ParentGUID")?,
                extra: s.extra(&["GUID", "ParentGUID"]),
            });
        }
        Ok(Descriptor {
            version: root.node.attribute("Version").map(str::to_string),
            attributes: root
                .node
                .attributes()
                .filter(|a| a.name() != "Version")
                .map(|a| (a.name().to_string(), a.value().to_string()))
                .collect(),
            disk,
            storages,
            storage_extra: sd.extra(&["Storage"]),
            snapshots: Snapshots {
                top_guid: sn.opt_text("TopGUID"),
                shots,
                extra: sn.extra(&["TopGUID", "Shot"]),
            },
            extra: root.extra(&["Disk_Parameters", "StorageData", "Snapshots"]),
        })
    }

    /// The descriptor as XML, indented by four spaces as Parallels Desktop writes it. Known
    /// elements come first in the usual order, then the kept unknown ones.
    pub fn to_xml(&self) -> String {
        let mut w = Writer::new_with_indent(Vec::new(), b' ', 4);
        let mut x = Xml(&mut w);
        x.event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
        let mut attrs: Vec<(String, String)> = Vec::new();
        if let Some(v) = &self.version {
            attrs.push(("Version".into(), v.clone()));
        }
        attrs.extend(self.attributes.iter().cloned());
        x.open(ROOT, &attrs);
        x.open("Disk_Parameters", &[]);
        let d = &self.disk;
        x.leaf("Disk_size", &d.disk_size.to_string());
        x.leaf("Cylinders", &d.cylinders.to_string());
        if let Some(p) = &d.physical_sector_size {
            x.leaf("PhysicalSectorSize", p);
        }
        if let Some(p) = &d.logic_sector_size {
            x.leaf("LogicSectorSize", p);
        }
        x.leaf("Heads", &d.heads.to_string());
        x.leaf("Sectors", &d.sectors.to_string());
        if let Some(p) = d.padding {
            x.leaf("Padding", &p.to_string());
        }
        x.elements(&d.extra);
        x.close("Disk_Parameters");
        x.open("StorageData", &[]);
        for s in &self.storages {
            x.open("Storage", &[]);
            x.leaf("Start", &s.start.to_string());
            x.leaf("End", &s.end.to_string());
            x.leaf("Blocksize", &s.blocksize.to_string());
            for im in &s.images {
                x.open("Image", &[]);
                x.leaf("GUID", &im.guid);
                x.leaf("Type", im.kind.name());
                x.leaf("File", &im.file);
                x.elements(&im.extra);
                x.close("Image");
            }
            x.elements(&s.extra);
            x.close("Storage");
        }
        x.elements(&self.storage_extra);
        x.close("StorageData");
        x.open("Snapshots", &[]);
        if let Some(t) = &self.snapshots.top_guid {
            x.leaf("TopGUID", t);
        }
        for s in &self.snapshots.shots {
            x.open("Shot", &[]);
            x.leaf("GUID", &s.guid);
            x.leaf("ParentGUID", &s.parent);
            x.elements(&s.extra);
            x.close("Shot");
        }
        x.elements(&self.snapshots.extra);
        x.close("Snapshots");
        x.elements(&self.extra);
        x.close(ROOT);
        let mut bytes = w.into_inner();
        bytes.push(b'\n');
        String::from_utf8(bytes).expect("quick-xml writes the UTF-8 it is given")
    }
}

/// Writing into a `Vec` cannot fail; this wrapper says so once.
struct Xml<'w>(&'w mut Writer<Vec<u8>>);

impl Xml<'_> {
    fn event(&mut self, e: Event<'_>) {
        self.0.write_event(e).expect("writing XML into a Vec cannot fail");
    }

    fn open(&mut self, name: &str, attrs: &[(String, String)]) {
        let mut start = BytesStart::new(name);
        for (k, v) in attrs {
            start.push_attribute((k.as_str(), v.as_str()));
        }
        self.event(Event::Start(start));
    }

    fn close(&mut self, name: &str) {
        self.event(Event::End(BytesEnd::new(name)));
    }

    fn leaf(&mut self, name: &str, text: &str) {
        if text.is_empty() {
            self.event(Event::Empty(BytesStart::new(name)));
            return;
        }
        self.event(Event::Start(BytesStart::new(name)));
        self.event(Event::Text(BytesText::new(text)));
        self.event(Event::End(BytesEnd::new(name)));
    }

    fn elements(&mut self, list: &[XmlElement]) {
        for e in list {
            self.element(e);
        }
    }

    fn element(&mut self, e: &XmlElement) {
        if e.children.is_empty() && e.attributes.is_empty() {
            self.leaf(&e.name, &e.text);
            return;
        }
        self.open(&e.name, &e.attributes);
        if !e.text.is_empty() {
            self.event(Event::Text(BytesText::new(&e.text)));
        }
        self.elements(&e.children);
        self.close(&e.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_in_braces_only() {
        let g = "{5fbaabe3-6958-40ff-92a7-860e329aab41}";
        assert_eq!(parse_guid(g), Some(DEFAULT_TOP_GUID));
        assert_eq!(parse_guid(&g.to_uppercase()), Some(DEFAULT_TOP_GUID));
        assert_eq!(parse_guid("5fbaabe3-6958-40ff-92a7-860e329aab41"), None);
        assert_eq!(parse_guid("{5fbaabe3695840ff92a7860e329aab41}"), None);
        assert_eq!(
            parse_guid_loose("5fbaabe3-6958-40ff-92a7-860e329aab41"),
            Some(DEFAULT_TOP_GUID)
        );
        assert_eq!(parse_guid_loose(g), Some(DEFAULT_TOP_GUID));
        assert_eq!(format_guid(DEFAULT_TOP_GUID), g);
    }

    #[test]
    fn guids_read_once_none_where_malformed() {
        let mut d = Descriptor::default();
        assert_eq!(d.guids(), Guids::default());
        d.snapshots.top_guid = Some("5fbaabe3-6958-40ff-92a7-860e329aab41".into());
        d.snapshots.shots.push(SnapshotEntry {
            guid: format_guid(DEFAULT_TOP_GUID),
            parent: format_guid(NULL_GUID),
            extra: Vec::new(),
        });
        let g = d.guids();
        assert_eq!(g.top, Some(None));
        assert_eq!(g.shots, vec![(Some(DEFAULT_TOP_GUID), Some(NULL_GUID))]);
        assert_eq!(g.shot_of(DEFAULT_TOP_GUID), Some(0));
        assert_eq!(g.shot_of(BACKUP_GUID), None);
    }
}
