//! Checks on the config's shape before figment reads it: how deep it nests, and
//! whether a YAML mapping repeats a key.
//!
//! Deep nesting hurts before any validation could see it, and neither parser has a
//! setting to prevent it. libyaml's scanner takes time quadratic in the depth of flow
//! collections: `a: [[[[…]]]]` 100,000 deep takes half a minute before serde_yaml's
//! recursion limit rejects it, blocking whatever thread loads the config. toml_edit
//! stops at 80 nested arrays or inline tables and 80 parts of a dotted key, but the two
//! multiply: a few kilobytes of `{ a.b.….z = { … } }` nest thousands of levels deep,
//! which overflows the stack when serde turns them into figment's values and takes
//! figment seconds to merge. So the text is first read by the same parsers without
//! recursion (YAML event by event, TOML into toml_edit's document, walked with an
//! explicit stack) and refused at the first collection deeper than [`MAX_DEPTH`];
//! figment only reads what passed. The same limit applies to the structured values of
//! `NATSHOOK__…` variables, which figment parses by recursive descent.
//!
//! YAML lets a later key in a mapping replace an earlier one, and figment's YAML
//! provider keeps the last: a second `allow_private: true` below an
//! `allow_private: false` would turn the SSRF guard off unnoticed. A repeated key is
//! an error here, named by its path (TOML rejects repeats itself).

use std::collections::HashMap;

use figment::value::Value;

use super::{ConfigError, Problem};

/// How many collections deep a config may nest (the top-level table is level 1).
/// natshook's own keys need at most 5; the rest is room for `envelope_fields`.
pub const MAX_DEPTH: usize = 64;

/// Key paths in messages are cut to this many characters: the path of a collection 65
/// levels down is mostly `[0][0][0]…`.
const PATH_SHOWN: usize = 80;

fn too_deep(path: &str, at: Option<(usize, usize)>) -> ConfigError {
    let place = match at {
        Some((line, column)) => format!(" at line {line}, column {column}"),
        None => String::new(),
    };
    let path = if path.is_empty() {
        String::new()
    } else {
        format!(" (under {})", shorten(path))
    };
    ConfigError::single(
        "config",
        format!("nests deeper than {MAX_DEPTH} levels{place}{path}"),
    )
}

fn shorten(path: &str) -> String {
    if path.chars().count() <= PATH_SHOWN {
        path.to_string()
    } else {
        let mut cut: String = path.chars().take(PATH_SHOWN - 1).collect();
        cut.push('…');
        cut
    }
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

// ---------------------------------------------------------------------------
// YAML

/// One open YAML collection. A mapping alternates between expecting a key and a value.
enum Frame {
    Seq {
        index: usize,
    },
    Map {
        /// Each key's text and the line it first appears on.
        seen: HashMap<Vec<u8>, usize>,
        /// The current key while its value is read (`?` for a non-text key).
        key: Option<String>,
    },
}

fn yaml_path(stack: &[Frame]) -> String {
    let mut out = String::new();
    for frame in stack {
        match frame {
            Frame::Seq { index } => out.push_str(&format!("[{index}]")),
            Frame::Map { key: Some(k), .. } => push_key(&mut out, k),
            Frame::Map { key: None, .. } => {}
        }
    }
    out
}

/// Reads a YAML config as libyaml's events: a collection deeper than [`MAX_DEPTH`] is
/// an error (reading stops there, so the scanner's cost stays linear), a repeated key
/// a problem to report with the others. A syntax error ends the walk quietly: figment,
/// reading the same text with the same parser, reports it.
pub(super) fn check_yaml(text: &str) -> Result<Vec<Problem>, ConfigError> {
    let mut problems = Vec::new();
    let Some(mut events) = libyaml::Events::new(text) else {
        return Ok(problems); // libyaml could not allocate; figment's read reports it
    };
    let mut stack: Vec<Frame> = Vec::new();
    while let Some((event, line, column)) = events.next() {
        // A node that begins: a collection opens, a scalar or alias is complete.
        let scalar = match event {
            libyaml::Event::StreamEnd => break,
            libyaml::Event::Other => continue,
            libyaml::Event::SequenceStart | libyaml::Event::MappingStart => {
                if stack.len() == MAX_DEPTH {
                    return Err(too_deep(&yaml_path(&stack), Some((line, column))));
                }
                stack.push(match event {
                    libyaml::Event::SequenceStart => Frame::Seq { index: 0 },
                    _ => Frame::Map {
                        seen: HashMap::new(),
                        key: None,
                    },
                });
                continue;
            }
            libyaml::Event::SequenceEnd | libyaml::Event::MappingEnd => {
                stack.pop();
                None
            }
            libyaml::Event::Alias => None,
            libyaml::Event::Scalar(text) => Some(text),
        };
        if let Some(first) = complete(stack.last_mut(), scalar, line) {
            let lines = if first == line {
                format!("twice on line {line}")
            } else {
                format!("lines {first} and {line}")
            };
            problems.push(Problem {
                path: yaml_path(&stack),
                message: format!("repeated key ({lines}): a key may appear only once in a mapping"),
            });
        }
    }
    Ok(problems)
}

/// A complete node (`scalar`: its text, if it is a scalar) in the collection `top`:
/// the next item of a sequence, or a mapping's key or value. For a key the mapping
/// already holds, the line it first appeared on.
fn complete(top: Option<&mut Frame>, scalar: Option<Vec<u8>>, line: usize) -> Option<usize> {
    match top {
        None => None,
        Some(Frame::Seq { index }) => {
            *index += 1;
            None
        }
        Some(Frame::Map {
            key: key @ Some(_), ..
        }) => {
            *key = None;
            None
        }
        Some(Frame::Map { seen, key }) => {
            *key = Some(match &scalar {
                Some(text) => String::from_utf8_lossy(text).into_owned(),
                None => "?".to_string(),
            });
            scalar.and_then(|text| match seen.get(&text) {
                Some(&first) => Some(first),
                None => {
                    seen.insert(text, line);
                    None
                }
            })
        }
    }
}

/// The unsafe part: libyaml's event parser (what serde_yaml, under figment's YAML
/// provider, reads), one event at a time. serde_yaml has no way to read part of a
/// document: it collects every event before deserializing.
mod libyaml {
    use std::marker::PhantomData;
    use std::mem::MaybeUninit;

    pub(super) enum Event {
        StreamEnd,
        SequenceStart,
        SequenceEnd,
        MappingStart,
        MappingEnd,
        Scalar(Vec<u8>),
        Alias,
        /// Stream and document start and end.
        Other,
    }

    /// A libyaml parser reading `'text`. Boxed, so that its address stays put between
    /// calls.
    pub(super) struct Events<'text> {
        parser: Box<MaybeUninit<unsafe_libyaml::yaml_parser_t>>,
        done: bool,
        _text: PhantomData<&'text str>,
    }

    impl<'text> Events<'text> {
        /// `None` if libyaml cannot allocate its buffers.
        pub(super) fn new(text: &'text str) -> Option<Self> {
            let mut parser = Box::new(MaybeUninit::<unsafe_libyaml::yaml_parser_t>::uninit());
            // SAFETY: initialize sets every field of the parser before it is used; on
            // failure it frees what it allocated and the parser is never used again.
            // The parser keeps a pointer to `text`, which outlives it ('text).
            unsafe {
                let p = parser.as_mut_ptr();
                if unsafe_libyaml::yaml_parser_initialize(p).fail {
                    return None;
                }
                unsafe_libyaml::yaml_parser_set_encoding(p, unsafe_libyaml::YAML_UTF8_ENCODING);
                unsafe_libyaml::yaml_parser_set_input_string(p, text.as_ptr(), text.len() as u64);
            }
            Some(Self {
                parser,
                done: false,
                _text: PhantomData,
            })
        }

        /// The next event and where it starts (1-based line and column); `None` after
        /// the end of the stream or an error.
        pub(super) fn next(&mut self) -> Option<(Event, usize, usize)> {
            if self.done {
                return None;
            }
            let mut event = MaybeUninit::<unsafe_libyaml::yaml_event_t>::uninit();
            // SAFETY: the parser was initialized in `new` and has not failed (libyaml
            // must not be called again after an error: `done`). A successful parse
            // fills `event`; the scalar's bytes are copied out before the event is
            // deleted, and a zero-length scalar is not read through its pointer.
            unsafe {
                let e = event.as_mut_ptr();
                if unsafe_libyaml::yaml_parser_parse(self.parser.as_mut_ptr(), e).fail {
                    self.done = true;
                    return None;
                }
                let ev = &*e;
                let kind = match ev.type_ {
                    unsafe_libyaml::YAML_STREAM_END_EVENT => {
                        self.done = true;
                        Event::StreamEnd
                    }
                    unsafe_libyaml::YAML_SEQUENCE_START_EVENT => Event::SequenceStart,
                    unsafe_libyaml::YAML_SEQUENCE_END_EVENT => Event::SequenceEnd,
                    unsafe_libyaml::YAML_MAPPING_START_EVENT => Event::MappingStart,
                    unsafe_libyaml::YAML_MAPPING_END_EVENT => Event::MappingEnd,
                    unsafe_libyaml::YAML_ALIAS_EVENT => Event::Alias,
                    unsafe_libyaml::YAML_SCALAR_EVENT => {
                        let scalar = ev.data.scalar;
                        Event::Scalar(if scalar.length == 0 || scalar.value.is_null() {
                            Vec::new()
                        } else {
                            std::slice::from_raw_parts(scalar.value, scalar.length as usize)
                                .to_vec()
                        })
                    }
                    _ => Event::Other,
                };
                let mark = ev.start_mark;
                unsafe_libyaml::yaml_event_delete(e);
                Some((kind, mark.line as usize + 1, mark.column as usize + 1))
            }
        }
    }

    impl Drop for Events<'_> {
        fn drop(&mut self) {
            // SAFETY: initialized in `new` (a failed initialize never builds `Self`);
            // delete frees libyaml's buffers, whatever state the parse ended in.
            unsafe { unsafe_libyaml::yaml_parser_delete(self.parser.as_mut_ptr()) }
        }
    }
}

// ---------------------------------------------------------------------------
// TOML

/// Stack for parsing TOML: toml_edit's parser recurses once per nested array or
/// inline table and a dotted key's parts multiply the depth of what it builds; its
/// worst case (79 inline tables, each under a 79-part key) needs a few MiB in a debug
/// build, more than a tokio blocking thread's 2 MiB. Only the pages used are mapped.
const TOML_STACK: usize = 32 << 20;

/// Parses a TOML config with toml_edit (the parser under figment's TOML provider) on a
/// thread with a known stack, and refuses it if it nests deeper than [`MAX_DEPTH`]. A
/// syntax error is reported here, on one line: toml_edit's own message quotes the
/// whole offending line, all 200 KB of it for a file nested on one line.
pub(super) fn check_toml(text: &str) -> Result<(), ConfigError> {
    let parsed = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("config-toml".into())
            .stack_size(TOML_STACK)
            .spawn_scoped(s, || toml_depth(text))
            .map(|t| t.join())
    });
    match parsed {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(ConfigError::single("config", "the TOML parser failed")),
        Err(e) => Err(ConfigError::single(
            "config",
            format!("cannot start a thread to parse the config: {e}"),
        )),
    }
}

fn toml_depth(text: &str) -> Result<(), ConfigError> {
    use toml_edit::{Item, Table, Value as TomlValue};

    let doc = match toml_edit::ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let at = e.span().map(|s| line_column(text, s.start));
            let message = e.message().trim().replace('\n', "; ");
            return Err(if message.contains("recursion limit exceeded") {
                too_deep("", at)
            } else {
                let place = at
                    .map(|(l, c)| format!(" at line {l}, column {c}"))
                    .unwrap_or_default();
                ConfigError::single("config", format!("TOML syntax error{place}: {message}"))
            });
        }
    };
    enum Node<'a> {
        Table(&'a Table),
        Item(&'a Item),
        Value(&'a TomlValue),
    }
    let mut stack = vec![(Node::Table(doc.as_table()), 1, String::new())];
    while let Some((node, depth, path)) = stack.pop() {
        let value = match node {
            Node::Item(Item::Value(v)) | Node::Value(v) => Some(v),
            _ => None,
        };
        let children: Vec<(Node, String)> = match (node, value) {
            (Node::Table(t) | Node::Item(Item::Table(t)), _) => t
                .iter()
                .map(|(k, item)| (Node::Item(item), child_key(&path, k)))
                .collect(),
            (Node::Item(Item::ArrayOfTables(a)), _) => a
                .iter()
                .enumerate()
                .map(|(i, t)| (Node::Table(t), child_index(&path, i)))
                .collect(),
            (_, Some(TomlValue::Array(a))) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (Node::Value(v), child_index(&path, i)))
                .collect(),
            (_, Some(TomlValue::InlineTable(t))) => t
                .iter()
                .map(|(k, v)| (Node::Value(v), child_key(&path, k)))
                .collect(),
            _ => continue,
        };
        if depth > MAX_DEPTH {
            return Err(too_deep(&path, None));
        }
        stack.extend(children.into_iter().map(|(n, p)| (n, depth + 1, p)));
    }
    Ok(())
}

/// The path of a collection's entry, no longer extended once it is too long to show.
fn child_key(path: &str, key: &str) -> String {
    let mut p = path.to_string();
    if p.len() <= PATH_SHOWN * 4 {
        push_key(&mut p, key);
    }
    p
}

fn child_index(path: &str, i: usize) -> String {
    let mut p = path.to_string();
    if p.len() <= PATH_SHOWN * 4 {
        p.push_str(&format!("[{i}]"));
    }
    p
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

// ---------------------------------------------------------------------------
// Environment overrides and the merged config

/// Refuses a `NATSHOOK__…` value that figment would parse deeper than [`MAX_DEPTH`].
/// figment parses a value by recursive descent with no limit: `[` or `{` at the start
/// of a value opens a collection, `"…"` (with `\` escapes) and `'c'` at the start of a
/// value are strings, and parsing ends at the first error (the text then stays a plain
/// string). This follows the same rules as far as nesting goes, so it counts what
/// figment would descend into and no bracket inside a string.
pub(super) fn check_env_value(name: &str, value: &str) -> Result<(), ConfigError> {
    let mut chars = value.chars().peekable();
    let (mut depth, mut at_value) = (0usize, true);
    while let Some(c) = chars.next() {
        match c {
            c if c.is_ascii_whitespace() => {}
            '"' if at_value => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                at_value = false;
            }
            '\'' if at_value => {
                chars.next();
                chars.next();
                at_value = false;
            }
            '[' | '{' if at_value => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(ConfigError::single(
                        name,
                        format!("nests deeper than {MAX_DEPTH} levels"),
                    ));
                }
            }
            ']' | '}' => {
                depth = depth.saturating_sub(1);
                at_value = false;
            }
            ',' | '=' => at_value = true,
            _ => at_value = false,
        }
    }
    Ok(())
}

/// Refuses a merged config deeper than [`MAX_DEPTH`]: YAML aliases can repeat a
/// collection inside another, deeper than the text itself nests.
pub(super) fn check_value(value: &Value) -> Result<(), ConfigError> {
    let mut stack = vec![(value, 1usize, String::new())];
    while let Some((value, depth, path)) = stack.pop() {
        let children: Vec<(&Value, String)> = match value {
            Value::Dict(_, d) => d.iter().map(|(k, v)| (v, child_key(&path, k))).collect(),
            Value::Array(_, a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (v, child_index(&path, i)))
                .collect(),
            _ => continue,
        };
        if depth > MAX_DEPTH {
            return Err(too_deep(&path, None));
        }
        stack.extend(children.into_iter().map(|(v, p)| (v, depth + 1, p)));
    }
    Ok(())
}
