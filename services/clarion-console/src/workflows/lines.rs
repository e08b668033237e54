//! Where in a workflow's YAML each validation error belongs.
//!
//! Validation names fields by path (`steps[2].channel`, `trigger.event`);
//! a syntax error names its own line and column (`definition (line 4,
//! column 7)`). To show each error next to the line it is about, the text
//! is parsed again with a location-aware YAML parser (saphyr's events carry
//! their line), into a flat tree of nodes with their lines, and the path is
//! walked down it. A path that does not resolve (a required field left
//! out, a step index past the end) lands on its closest existing ancestor,
//! and failing that on line 1: an error is never dropped.
//!
//! The tree is an arena (nodes refer to each other by index) built without
//! recursion, so a deeply nested text cannot exhaust the stack, neither
//! building nor dropping it.

use saphyr_parser::{Event, Parser};

/// One node: the line it starts on and what it holds.
struct Node {
    line: usize,
    kind: Kind,
}

enum Kind {
    Leaf,
    Seq(Vec<usize>),
    /// (key as text, the key's line, the value's node).
    Map(Vec<(String, usize, usize)>),
}

/// A collection being built, and for a mapping the key waiting for its value.
enum Frame {
    Seq(usize),
    Map {
        node: usize,
        key: Option<(String, usize)>,
    },
}

/// The YAML text's structure with the line of every key and item.
pub struct Located {
    nodes: Vec<Node>,
    root: Option<usize>,
    /// Lines in the text (at least 1).
    line_count: usize,
}

impl Located {
    /// Reads the first document of `text`. A text that stops parsing part
    /// way keeps what was read before (its paths still resolve).
    pub fn parse(text: &str) -> Located {
        let mut b = Builder::default();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            if b.on_event(event, span.start.line()) {
                break;
            }
        }
        Located {
            nodes: b.nodes,
            root: b.root,
            line_count: line_count(text),
        }
    }

    /// The 1-based line a violation's field names: its own line for a
    /// syntax error, else the deepest node of its path that exists.
    pub fn line_of(&self, field: &str) -> usize {
        if let Some(line) = syntax_line(field) {
            return line.clamp(1, self.line_count);
        }
        let mut line = 1;
        let mut at = self.root;
        for seg in segments(field) {
            let Some(node) = at.map(|i| &self.nodes[i]) else {
                break;
            };
            let next = match (&node.kind, seg) {
                (Kind::Map(entries), Segment::Key(k)) => entries
                    .iter()
                    .find(|(key, _, _)| key == k)
                    .map(|(_, key_line, value)| (*key_line, *value)),
                (Kind::Seq(items), Segment::Index(i)) => {
                    items.get(i).map(|&n| (self.nodes[n].line, n))
                }
                _ => None,
            };
            let Some((l, n)) = next else { break };
            line = l;
            at = Some(n);
        }
        line.clamp(1, self.line_count)
    }
}

/// The line of `definition (line L, column C)`, the field serde_norway's
/// errors get (see `clarion_domain::flow::def::error_path`).
fn syntax_line(field: &str) -> Option<usize> {
    let rest = field.strip_prefix("definition (line ")?;
    rest.split(',').next()?.trim().parse().ok()
}

fn line_count(text: &str) -> usize {
    text.lines().count().max(1)
}

#[derive(Debug, PartialEq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `steps[2].chain[0].to` → `steps`, `2`, `chain`, `0`, `to`. A `[` part
/// that is not a number ends the walk there (an ancestor is kept).
fn segments(field: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in field.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Segment::Key(name));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let Some(end) = inner.find(']') else {
                return out;
            };
            match inner[..end].parse() {
                Ok(i) => out.push(Segment::Index(i)),
                Err(_) => return out,
            }
            rest = &inner[end + 1..];
        }
    }
    out
}

#[derive(Default)]
struct Builder {
    nodes: Vec<Node>,
    stack: Vec<Frame>,
    root: Option<usize>,
}

impl Builder {
    /// Takes one event; `true` once the first document is complete.
    /// Nodes join their parent as they start, so a text that stops parsing
    /// part way keeps every node read so far.
    fn on_event(&mut self, event: Event<'_>, line: usize) -> bool {
        match event {
            Event::Scalar(value, ..) => {
                self.add(Node::leaf(line), Some(value.into_owned()));
            }
            Event::Alias(_) => {
                self.add(Node::leaf(line), None);
            }
            Event::SequenceStart(..) => {
                let node = self.add(Node::new(line, Kind::Seq(Vec::new())), None);
                self.stack.push(Frame::Seq(node));
            }
            Event::MappingStart(..) => {
                let node = self.add(Node::new(line, Kind::Map(Vec::new())), None);
                self.stack.push(Frame::Map { node, key: None });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
            }
            Event::DocumentEnd => return self.root.is_some(),
            _ => {}
        }
        false
    }

    /// Adds a node to its parent: an item, a key, or a key's value.
    fn add(&mut self, node: Node, text: Option<String>) -> usize {
        let line = node.line;
        self.nodes.push(node);
        let n = self.nodes.len() - 1;
        match self.stack.last_mut() {
            None => {
                self.root.get_or_insert(n);
            }
            Some(Frame::Seq(parent)) => {
                if let Kind::Seq(items) = &mut self.nodes[*parent].kind {
                    items.push(n);
                }
            }
            Some(Frame::Map { node, key }) => match key.take() {
                // A key that is not a scalar never matches a path.
                None => *key = Some((text.unwrap_or_default(), line)),
                Some((k, key_line)) => {
                    if let Kind::Map(entries) = &mut self.nodes[*node].kind {
                        entries.push((k, key_line, n));
                    }
                }
            },
        }
        n
    }
}

impl Node {
    fn new(line: usize, kind: Kind) -> Node {
        Node { line, kind }
    }

    fn leaf(line: usize) -> Node {
        Node::new(line, Kind::Leaf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOW: &str = "\
id: visit
name: Visit
trigger:
  event: visit.booked
steps:
  - id: email
    type: send
    channel: email
    template: visit-email
  - { id: wait, type: wait, for: opened, step: email, timeout: 2h }
  -
    id: sms
    type: fallback
    chain:
      - channel: sms
        template: t
      - { channel: fax, template: u }
";

    #[test]
    fn paths_resolve_to_the_line_of_their_key() {
        let l = Located::parse(FLOW);
        assert_eq!(l.line_of("id"), 1);
        assert_eq!(l.line_of("trigger"), 3);
        assert_eq!(l.line_of("trigger.event"), 4);
        assert_eq!(l.line_of("steps"), 5);
        assert_eq!(l.line_of("steps[0]"), 6);
        assert_eq!(l.line_of("steps[0].channel"), 8);
        assert_eq!(l.line_of("steps[0].template"), 9);
    }

    #[test]
    fn flow_style_mappings_and_nested_sequences() {
        let l = Located::parse(FLOW);
        // Every key of a `{ ... }` step is on its line.
        assert_eq!(l.line_of("steps[1]"), 10);
        assert_eq!(l.line_of("steps[1].timeout"), 10);
        // An item whose mapping starts on the next line.
        assert_eq!(l.line_of("steps[2].id"), 12);
        assert_eq!(l.line_of("steps[2].chain"), 14);
        assert_eq!(l.line_of("steps[2].chain[0].template"), 16);
        assert_eq!(l.line_of("steps[2].chain[1].channel"), 17);
    }

    #[test]
    fn unresolved_paths_land_on_their_closest_ancestor() {
        let l = Located::parse(FLOW);
        // A missing field: its step.
        assert_eq!(l.line_of("steps[0].provider"), 6);
        // A step index past the end: the list.
        assert_eq!(l.line_of("steps[9].channel"), 5);
        // A key under a scalar, an unknown top-level field, no path at all.
        assert_eq!(l.line_of("id.x"), 1);
        assert_eq!(l.line_of("goal"), 1);
        assert_eq!(l.line_of("definition"), 1);
        assert_eq!(l.line_of(""), 1);
        assert_eq!(l.line_of("steps[x].id"), 5);
    }

    #[test]
    fn syntax_errors_keep_their_own_line() {
        let text = "id: w\nsteps:\n  - { id: a, type: send\n";
        let l = Located::parse(text);
        assert_eq!(l.line_of("definition (line 3, column 5)"), 3);
        // Past the end (an error at the end of the input): the last line.
        assert_eq!(l.line_of("definition (line 9, column 1)"), 3);
        // What was read before the error still resolves.
        assert_eq!(l.line_of("steps"), 2);
    }

    /// The line serde_norway (the parser the gateway uses) reports for
    /// an error of `text`, and where it lands.
    fn placed(text: &str) -> (String, usize) {
        let err = clarion_domain::flow::Flow::parse(text, 1, |_| None).unwrap_err();
        let field = err.0[0].field.clone();
        let line = Located::parse(text).line_of(&field);
        (field, line)
    }

    #[test]
    fn the_text_is_read_as_serde_norway_reads_it() {
        // A character that cannot start a token, on line 5.
        let (field, line) =
            placed("id: w\nsteps:\n  - id: a\n    type: send\n    channel: @email\n");
        assert!(field.starts_with("definition (line 5,"), "{field}");
        assert_eq!(line, 5);
        // A step without its type: the step's own line.
        let (field, line) = placed("id: w\nsteps:\n  - id: a\n    channel: email\n");
        assert_eq!((field.as_str(), line), ("definition (line 3, column 5)", 3));
    }

    #[test]
    fn deep_nesting_and_empty_texts() {
        let deep = "[".repeat(100_000);
        let l = Located::parse(&deep);
        assert_eq!(l.line_of("a[0][0]"), 1);
        let l = Located::parse("");
        assert_eq!(l.line_of("steps[0].id"), 1);
    }

    #[test]
    fn paths_split_into_keys_and_indexes() {
        use Segment::*;
        assert_eq!(
            segments("steps[2].chain[0].to"),
            [Key("steps"), Index(2), Key("chain"), Index(0), Key("to")]
        );
        assert_eq!(segments("a[1][2]"), [Key("a"), Index(1), Index(2)]);
        assert_eq!(segments("a[b].c"), [Key("a")]);
    }
}
