//! The message model: segments → fields → repetitions → components → sub-components.
//!
//! Leaf values are stored unescaped (escape sequences resolved), so callers never see `\F\`.
//! All positions in the public API are 1-based, as in HL7 documentation. For header segments
//! (MSH, FHS, BHS) field 1 is the field separator itself and field 2 the encoding characters, so
//! `msh.field(9)` is MSH-9 exactly as written in the standard.

use crate::charset::Charset;
use crate::delimiters::Delimiters;

/// The smallest unit: a component split at the sub-component separator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub(crate) subcomponents: Vec<String>,
}

impl Component {
    /// A component holding one plain value.
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            subcomponents: vec![value.into()],
        }
    }

    /// A component made of several sub-components.
    pub fn from_subcomponents<I, S>(subs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let subcomponents: Vec<String> = subs.into_iter().map(Into::into).collect();
        if subcomponents.is_empty() {
            return Self::new("");
        }
        Self { subcomponents }
    }

    /// The first sub-component (the whole value for simple components).
    pub fn value(&self) -> &str {
        self.subcomponents.first().map_or("", String::as_str)
    }

    /// Sub-component `n` (1-based).
    pub fn subcomponent(&self, n: usize) -> Option<&str> {
        self.subcomponents
            .get(n.checked_sub(1)?)
            .map(String::as_str)
    }

    /// All sub-components.
    pub fn subcomponents(&self) -> &[String] {
        &self.subcomponents
    }

    /// True when every sub-component is empty.
    pub fn is_empty(&self) -> bool {
        self.subcomponents.iter().all(String::is_empty)
    }
}

/// One occurrence of a repeating field, split at the component separator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repetition {
    pub(crate) components: Vec<Component>,
}

impl Repetition {
    /// A repetition made of components.
    pub fn from_components<I>(components: I) -> Self
    where
        I: IntoIterator<Item = Component>,
    {
        let components: Vec<Component> = components.into_iter().collect();
        if components.is_empty() {
            return Self {
                components: vec![Component::new("")],
            };
        }
        Self { components }
    }

    /// Component `n` (1-based).
    pub fn component(&self, n: usize) -> Option<&Component> {
        self.components.get(n.checked_sub(1)?)
    }

    /// First sub-component of component `n`, or `""` when absent.
    pub fn component_value(&self, n: usize) -> &str {
        self.component(n).map_or("", Component::value)
    }

    /// All components.
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// The first component's value.
    pub fn value(&self) -> &str {
        self.component_value(1)
    }

    /// True when every component is empty.
    pub fn is_empty(&self) -> bool {
        self.components.iter().all(Component::is_empty)
    }
}

/// A field, split at the repetition separator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub(crate) repetitions: Vec<Repetition>,
}

impl Field {
    /// A field holding one plain value (escaped when encoded).
    pub fn new(value: impl Into<String>) -> Self {
        Self::from_components([value.into()])
    }

    /// A non-repeating field made of plain components: `Field::from_components(["ACK", "A01"])`.
    pub fn from_components<I, S>(components: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::from_repetitions([Repetition::from_components(
            components.into_iter().map(Component::new),
        )])
    }

    /// A field made of repetitions.
    pub fn from_repetitions<I>(repetitions: I) -> Self
    where
        I: IntoIterator<Item = Repetition>,
    {
        let repetitions: Vec<Repetition> = repetitions.into_iter().collect();
        if repetitions.is_empty() {
            return Self::new("");
        }
        Self { repetitions }
    }

    /// All repetitions (at least one).
    pub fn repetitions(&self) -> &[Repetition] {
        &self.repetitions
    }

    /// Repetition `n` (1-based).
    pub fn repetition(&self, n: usize) -> Option<&Repetition> {
        self.repetitions.get(n.checked_sub(1)?)
    }

    /// Component `n` of the first repetition.
    pub fn component(&self, n: usize) -> Option<&Component> {
        self.repetition(1)?.component(n)
    }

    /// First sub-component of component `n` of the first repetition, or `""`.
    pub fn component_value(&self, n: usize) -> &str {
        self.component(n).map_or("", Component::value)
    }

    /// The first repetition's first component value: what a simple field holds.
    pub fn value(&self) -> &str {
        self.component_value(1)
    }

    /// True when nothing but separators was received.
    pub fn is_empty(&self) -> bool {
        self.repetitions.iter().all(Repetition::is_empty)
    }
}

/// A segment: a three-character id and its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub(crate) id: String,
    /// `fields[0]` is field 1.
    pub(crate) fields: Vec<Field>,
}

impl Segment {
    /// An empty segment with the given id (`"PID"`, `"ZXY"`, …).
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            fields: Vec::new(),
        }
    }

    /// An MSH segment whose MSH-1 and MSH-2 carry `delimiters`.
    pub fn header(delimiters: &Delimiters) -> Self {
        let mut seg = Self::new("MSH");
        seg.fields.push(Field::new(delimiters.field().to_string()));
        seg.fields
            .push(Field::new(delimiters.encoding_characters()));
        seg
    }

    /// The segment id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// True for MSH, FHS and BHS, whose first two fields are the delimiters.
    pub fn is_header(&self) -> bool {
        is_header_id(&self.id)
    }

    /// Field `n` (1-based; `msh.field(9)` is MSH-9).
    pub fn field(&self, n: usize) -> Option<&Field> {
        self.fields.get(n.checked_sub(1)?)
    }

    /// All fields, field 1 first.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The plain value of field `n` (first repetition, component and sub-component), or `""`.
    pub fn value(&self, n: usize) -> &str {
        self.field(n).map_or("", Field::value)
    }

    /// Sets field `n` (1-based), adding empty fields before it as needed.
    pub fn set_field(&mut self, n: usize, field: Field) -> &mut Self {
        let Some(index) = n.checked_sub(1) else {
            return self;
        };
        while self.fields.len() <= index {
            self.fields.push(Field::new(""));
        }
        self.fields[index] = field;
        self
    }

    /// Sets field `n` to a plain value.
    pub fn set(&mut self, n: usize, value: impl Into<String>) -> &mut Self {
        self.set_field(n, Field::new(value))
    }
}

pub(crate) fn is_header_id(id: &str) -> bool {
    matches!(id, "MSH" | "FHS" | "BHS")
}

/// A parsed (or built) HL7 v2 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub(crate) delimiters: Delimiters,
    pub(crate) charset: Charset,
    pub(crate) segments: Vec<Segment>,
}

impl Message {
    /// A message with the given delimiters and segments (the first should be an MSH made with
    /// [`Segment::header`]).
    pub fn new(delimiters: Delimiters, charset: Charset, segments: Vec<Segment>) -> Self {
        Self {
            delimiters,
            charset,
            segments,
        }
    }

    /// The delimiters from MSH-1/MSH-2.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    /// The character set from MSH-18.
    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// All segments in order.
    pub fn all_segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The first segment with this id.
    pub fn segment(&self, id: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.id == id)
    }

    /// Every segment with this id, in order.
    pub fn segments<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Segment> + 'a {
        self.segments.iter().filter(move |s| s.id == id)
    }

    /// The MSH segment, when the message has one first.
    pub fn header(&self) -> Option<&Segment> {
        self.segments.first().filter(|s| s.id == "MSH")
    }

    /// Appends a segment.
    pub fn push(&mut self, segment: Segment) {
        self.segments.push(segment);
    }
}
