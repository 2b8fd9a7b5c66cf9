//! Chat templates → token ids and labels (issue #3).
//!
//! A conversation (turns of `role`/`content`, an optional system prompt and tools) is rendered
//! with the model's Jinja chat template by minijinja, configured like transformers' sandbox
//! (`trim_blocks`, `lstrip_blocks`, loop controls, Python string methods, `raise_exception`,
//! a `tojson` that writes what Python's `json.dumps(ensure_ascii=False)` writes). The text is
//! tokenised whole (never turn by turn: a reply starting with a newline merges across the
//! boundary) with byte offsets, and the assistant spans are mapped to tokens exactly as
//! transformers' `return_assistant_tokens_mask` does: from the token holding a span's first
//! character to the token holding its last.
//!
//! Assistant spans come from the template where it has `{% generation %}` blocks: minijinja does
//! not know that tag, so the block is rewritten to print two noncharacters (U+FDD0, U+FDD1)
//! around its body, which are removed after rendering. For templates without such blocks, the
//! conversation is rendered a second time with the markers around each reply's trimmed text;
//! when that render minus the markers equals the plain one, the marked spans are exact, and
//! otherwise each turn's text is found in order. The end-of-turn policy then decides whether the
//! special token after a reply (after any trailing whitespace: `<|im_end|>`, `<|eot_id|>`,
//! `<|end|>`) is learned too.
//!
//! Labels are the ids on learned tokens and −100 elsewhere (not shifted). Cost: the template
//! render (~5% of the time) plus tokenisation; rows are independent and run in parallel.

use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind};
use rayon::prelude::*;

use crate::error::{Result, SftError};
use crate::parallel;
use crate::tokenize::Encoder;

const OPEN: char = '\u{FDD0}';
const CLOSE: char = '\u{FDD1}';

/// ChatML as Qwen writes it (no default system prompt), with generation blocks.
pub const CHATML: &str = "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}{%- if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}{%- else %}{{ message['content'] + '<|im_end|>' + '\\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}";

/// Llama 3 (header tokens, trimmed content, `<|eot_id|>`), with generation blocks.
pub const LLAMA3: &str = "{{- bos_token }}{%- for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}{%- if message['role'] == 'assistant' %}{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}{%- else %}{{ message['content'] | trim + '<|eot_id|>' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

/// Phi-3 (as shipped with Phi-3-mini), with generation blocks.
pub const PHI3: &str = "{%- for message in messages %}{%- if message['role'] == 'assistant' %}{{ '<|assistant|>\\n' }}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}{{ '\\n' }}{%- else %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{ '<|assistant|>\\n' }}{%- else %}{{ eos_token }}{%- endif %}";

/// Built-in templates by name.
pub const BUILTIN: [(&str, &str); 3] = [("chatml", CHATML), ("llama3", LLAMA3), ("phi3", PHI3)];

/// Rewrite `{% generation %}` / `{% endgeneration %}` (with any `-` whitespace control) into
/// prints of the two markers; returns the new source and whether any block was found. A small
/// scanner rather than a regex dependency: the tag grammar is this simple.
fn rewrite_generation(src: &str) -> (String, bool) {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    let mut found = false;
    while let Some(i) = rest.find("{%") {
        out.push_str(&rest[..i]);
        let tag = &rest[i + 2..];
        let (lead, body) = tag.strip_prefix('-').map_or(("", tag), |b| ("-", b));
        let body_trim = body.trim_start();
        let word = ["endgeneration", "generation"]
            .into_iter()
            .find(|w| body_trim.starts_with(w));
        let parsed = word.and_then(|w| {
            let after = body_trim[w.len()..].trim_start();
            let (trail, after) = after.strip_prefix('-').map_or(("", after), |a| ("-", a));
            after.strip_prefix("%}").map(|tail| (w, trail, tail))
        });
        match parsed {
            Some((w, trail, tail)) => {
                let mark = if w == "generation" { OPEN } else { CLOSE };
                out.push_str(&format!("{{{{{lead} '{mark}' {trail}}}}}"));
                found |= w == "generation";
                rest = tail;
            }
            None => {
                out.push_str("{%");
                rest = tag;
            }
        }
    }
    out.push_str(rest);
    (out, found)
}

/// Which tokens are learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainOn {
    /// Every assistant turn.
    Assistant,
    /// The last assistant turn only.
    LastAssistant,
    /// Every token.
    All,
}

/// Whether the special token that ends an assistant turn is learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndOfTurn {
    /// As the template's generation blocks say; learned when the template has none.
    Template,
    /// Learned.
    Include,
    /// Not learned.
    Exclude,
}

/// Rendering options.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    /// Which tokens are learned.
    pub train_on: TrainOn,
    /// End-of-turn token policy.
    pub end_of_turn: EndOfTurn,
    /// Append the template's generation prompt (inference; not for training rows).
    pub add_generation_prompt: bool,
}

/// One turn.
#[derive(Debug, Clone, Copy)]
pub struct Turn<'a> {
    /// `system`, `user`, `assistant`, `tool` or `tool_call` (rendered as `assistant`).
    pub role: &'a str,
    /// The text.
    pub content: &'a str,
}

/// A conversation to render.
#[derive(Debug, Clone, Default)]
pub struct Conversation<'a> {
    /// The turns.
    pub turns: Vec<Turn<'a>>,
    /// A system prompt put first as a `system` turn.
    pub system: Option<&'a str>,
    /// Tools as JSON text (a list), passed to the template as `tools`.
    pub tools: Option<&'a str>,
}

/// Token ids and labels of one rendered conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// The id where learned, −100 elsewhere.
    pub labels: Vec<i32>,
}

/// A compiled chat template with the values it reads.
pub struct ChatTemplate {
    env: Environment<'static>,
    has_generation: bool,
    bos_token: String,
    eos_token: String,
}

fn raise_exception(msg: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// `json.dumps(value, ensure_ascii=False, indent=indent)` as Python writes it.
fn tojson(value: &Value, kwargs: minijinja::value::Kwargs) -> std::result::Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let v = serde_json::to_value(value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = String::new();
    write_json(&v, indent, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn write_json(v: &serde_json::Value, indent: Option<usize>, depth: usize, out: &mut String) {
    use serde_json::Value as J;
    let newline = |out: &mut String, d: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * d));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v {
        J::Array(a) if !a.is_empty() => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                write_json(x, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        J::Object(m) if !m.is_empty() => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push_str(": ");
                write_json(x, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

impl ChatTemplate {
    /// Compile `source` (Jinja) with the `bos_token`/`eos_token` values the template reads.
    ///
    /// # Errors
    /// [`SftError::Config`] with minijinja's message (and line) when the template does not
    /// compile.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let (src, has_generation) = rewrite_generation(source);
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| SftError::Config(format!("template syntax: {e}")))?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", src)
            .map_err(|e| SftError::Config(format!("chat template does not compile: {e:#}")))?;
        Ok(ChatTemplate {
            env,
            has_generation,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// Whether the template marks assistant spans with `{% generation %}`.
    #[must_use]
    pub fn has_generation(&self) -> bool {
        self.has_generation
    }

    /// The rendered text and its assistant spans (byte ranges), before any policy.
    ///
    /// # Errors
    /// [`SftError::Schema`] when the template raises (e.g. roles out of order), a content
    /// holds U+FDD0/U+FDD1, the tools are not JSON, or an assistant reply cannot be located.
    pub fn render_text(
        &self,
        conv: &Conversation<'_>,
        add_generation_prompt: bool,
    ) -> Result<(String, Vec<(usize, usize)>)> {
        for t in &conv.turns {
            if t.content.contains([OPEN, CLOSE]) {
                return Err(SftError::Schema(
                    "content holds U+FDD0/U+FDD1 (reserved noncharacters)".into(),
                ));
            }
        }
        let raw = self.render_raw(conv, add_generation_prompt, false)?;
        if self.has_generation {
            return Ok(split_markers(&raw));
        }
        // No generation blocks: render again with the markers around each reply's trimmed
        // core (whitespace stays outside, so `| trim` and friends see the same text). If the
        // markers come out in pairs and the text without them is the plain render, the spans
        // are exact; otherwise find each turn's text in order.
        let marked = self.render_raw(conv, add_generation_prompt, true)?;
        let (text, spans) = split_markers(&marked);
        let replies = conv
            .turns
            .iter()
            .filter(|t| is_reply(t.role) && !t.content.trim().is_empty())
            .count();
        if text == raw && spans.len() == replies {
            return Ok((raw, spans));
        }
        let mut spans = Vec::new();
        let mut cursor = 0;
        for t in &conv.turns {
            let needle = t.content.trim();
            if needle.is_empty() {
                continue;
            }
            match raw[cursor..].find(needle) {
                Some(at) => {
                    if is_reply(t.role) {
                        spans.push((cursor + at, cursor + at + needle.len()));
                    }
                    cursor += at + needle.len();
                }
                None if is_reply(t.role) => {
                    return Err(SftError::Schema(
                        "an assistant reply is not in the rendered text (the template changes \
                         it); use a template with {% generation %} blocks"
                            .into(),
                    ))
                }
                None => {}
            }
        }
        Ok((raw, spans))
    }

    fn render_raw(
        &self,
        conv: &Conversation<'_>,
        add_generation_prompt: bool,
        mark_replies: bool,
    ) -> Result<String> {
        let mut msgs: Vec<Value> = Vec::with_capacity(conv.turns.len() + 1);
        let msg = |role: &str, content: Value| {
            Value::from_pairs([("role", Value::from(role)), ("content", content)])
        };
        if let Some(s) = conv.system {
            msgs.push(msg("system", Value::from(s)));
        }
        for t in &conv.turns {
            let role = if t.role == "tool_call" {
                "assistant"
            } else {
                t.role
            };
            let core = t.content.trim();
            let content = if mark_replies && is_reply(t.role) && !core.is_empty() {
                let start = t.content.len() - t.content.trim_start().len();
                let end = start + core.len();
                Value::from(format!(
                    "{}{OPEN}{core}{CLOSE}{}",
                    &t.content[..start],
                    &t.content[end..]
                ))
            } else {
                Value::from(t.content)
            };
            msgs.push(msg(role, content));
        }
        let tools = match conv.tools {
            None => Value::from(()),
            Some(text) => {
                let v: serde_json::Value = serde_json::from_str(text)
                    .map_err(|e| SftError::Schema(format!("tools: not JSON: {e}")))?;
                Value::from(minijinja::value::Serde(v))
            }
        };
        let ctx = Value::from_pairs([
            ("messages", Value::from(msgs)),
            ("bos_token", Value::from(self.bos_token.as_str())),
            ("eos_token", Value::from(self.eos_token.as_str())),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("tools", tools),
        ]);
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| SftError::Config(e.to_string()))?;
        tmpl.render(ctx)
            .map_err(|e| SftError::Schema(format!("template: {e}")))
    }
}

fn is_reply(role: &str) -> bool {
    role == "assistant" || role == "tool_call"
}

/// Remove the markers; spans between each OPEN and the next CLOSE (byte ranges of the result).
/// The text between markers is copied in slices found by a SIMD search for the markers' first
/// two bytes (U+FDD0 and U+FDD1 are `EF B7 90` and `EF B7 91` in UTF-8).
fn split_markers(raw: &str) -> (String, Vec<(usize, usize)>) {
    let bytes = raw.as_bytes();
    let mut text = String::with_capacity(raw.len());
    let mut spans = Vec::new();
    let mut open = None;
    let mut last = 0usize;
    for at in memchr::memmem::find_iter(bytes, b"\xEF\xB7") {
        let third = bytes.get(at + 2).copied();
        if at < last || !matches!(third, Some(0x90 | 0x91)) {
            continue;
        }
        text.push_str(&raw[last..at]);
        last = at + 3;
        if third == Some(0x90) {
            open = Some(text.len());
        } else if let Some(a) = open.take() {
            spans.push((a, text.len()));
        }
    }
    text.push_str(&raw[last..]);
    (text, spans)
}

/// The first token whose byte range overlaps the character at byte `at` (transformers'
/// `char_to_token`, which works in characters: a token covers a character when it covers any
/// of its bytes).
fn token_at(offsets: &[(usize, usize)], text: &str, at: usize) -> Option<usize> {
    let end = at + text[at..].chars().next().map_or(1, char::len_utf8);
    let first = offsets.partition_point(|&(_, e)| e <= at);
    offsets[first..]
        .iter()
        .position(|&(s, e)| s < end && e > at && e > s)
        .map(|i| first + i)
        .filter(|&i| offsets[i].0 < end)
}

/// Start of the character that ends at byte `end` (the last character of `text[..end]`).
fn last_char_start(text: &str, end: usize) -> usize {
    text[..end].char_indices().next_back().map_or(0, |(i, _)| i)
}

/// Render and tokenise one conversation.
///
/// # Errors
/// As [`ChatTemplate::render_text`], or [`SftError::Tokenizer`].
pub fn render(
    encoder: &Encoder,
    template: &ChatTemplate,
    specials: &[String],
    conv: &Conversation<'_>,
    opts: &RenderOptions,
) -> Result<Rendered> {
    let (text, mut spans) = template.render_text(conv, opts.add_generation_prompt)?;
    let policy = match opts.end_of_turn {
        EndOfTurn::Template if template.has_generation() => None,
        EndOfTurn::Template | EndOfTurn::Include => Some(true),
        EndOfTurn::Exclude => Some(false),
    };
    if let Some(include) = policy {
        for span in &mut spans {
            if include {
                // Whitespace between the reply and the end token (a reply ending in "\n")
                // is learned with the token.
                let rest = &text[span.1..];
                let ws = rest.len() - rest.trim_start().len();
                // A span that already ends in a special token (a generation block holding
                // it) is complete: the next special token opens the next turn.
                let done = specials
                    .iter()
                    .any(|s| text[span.0..span.1].ends_with(s.as_str()));
                if let Some(s) = specials
                    .iter()
                    .find(|s| !done && rest[ws..].starts_with(s.as_str()))
                {
                    span.1 += ws + s.len();
                }
            } else if let Some(s) = specials
                .iter()
                .find(|s| text[span.0..span.1].ends_with(s.as_str()))
            {
                span.1 -= s.len();
            }
        }
    }
    if opts.train_on == TrainOn::LastAssistant {
        let last = spans.pop();
        spans.clear();
        spans.extend(last);
    }
    let (ids, offsets) = encoder.encode_offsets(&text, false)?;
    let mut mask = vec![opts.train_on == TrainOn::All; ids.len()];
    if opts.train_on != TrainOn::All {
        for &(a, b) in &spans {
            if a >= text.len() {
                break;
            }
            let Some(first) = token_at(&offsets, &text, a) else {
                break;
            };
            let last = if b > a {
                token_at(&offsets, &text, last_char_start(&text, b))
            } else {
                // An empty span: transformers looks up the character before it.
                if a == 0 {
                    None
                } else {
                    token_at(&offsets, &text, last_char_start(&text, a))
                }
            };
            let stop = last.map_or(ids.len(), |l| l + 1);
            for m in mask.iter_mut().take(stop).skip(first) {
                *m = true;
            }
        }
    }
    #[allow(clippy::cast_possible_wrap)]
    let labels = ids
        .iter()
        .zip(&mask)
        .map(|(&id, &m)| if m { id as i32 } else { -100 })
        .collect();
    Ok(Rendered {
        input_ids: ids,
        labels,
    })
}

/// Render every conversation in parallel; `None` rows stay `None`, a failing row is its error
/// message (the run goes on).
///
/// # Errors
/// [`SftError::Interrupted`] on Ctrl-C.
pub fn render_batch(
    encoder: &Encoder,
    template: &ChatTemplate,
    convs: &[Option<Conversation<'_>>],
    opts: &RenderOptions,
) -> Result<Vec<Option<std::result::Result<Rendered, String>>>> {
    let specials = encoder.special_tokens();
    parallel::install(|| {
        convs
            .par_iter()
            .with_min_len(64)
            .map(|c| {
                c.as_ref().map(|c| {
                    render(encoder, template, &specials, c, opts).map_err(|e| e.to_string())
                })
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_markers_matches_a_char_scan() {
        let reference = |raw: &str| {
            let (mut text, mut spans, mut open) = (String::new(), Vec::new(), None);
            for c in raw.chars() {
                match c {
                    OPEN => open = Some(text.len()),
                    CLOSE => {
                        if let Some(a) = open.take() {
                            spans.push((a, text.len()));
                        }
                    }
                    _ => text.push(c),
                }
            }
            (text, spans)
        };
        let alphabet = [
            OPEN, CLOSE, 'a', '中', '\u{FDD2}', '\u{FDC0}', '\u{FF0C}', '\u{EFB7}', ' ',
        ];
        let mut state = 9u64;
        for _ in 0..5000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let len = (state >> 59) as usize;
            let raw: String = (0..len)
                .map(|i| alphabet[((state >> (i * 2 % 60)) % alphabet.len() as u64) as usize])
                .collect();
            assert_eq!(split_markers(&raw), reference(&raw), "{raw:?}");
        }
    }

    fn conv<'a>(turns: &[(&'a str, &'a str)]) -> Conversation<'a> {
        Conversation {
            turns: turns
                .iter()
                .map(|&(role, content)| Turn { role, content })
                .collect(),
            system: None,
            tools: None,
        }
    }

    #[test]
    fn generation_tags_are_rewritten() {
        let (s, found) = rewrite_generation("a{%- generation -%}b{% endgeneration %}{% if x %}");
        assert!(found);
        assert_eq!(s, "a{{- '\u{FDD0}' -}}b{{ '\u{FDD1}' }}{% if x %}");
        assert!(!rewrite_generation("{% for generation in x %}").1);
    }

    #[test]
    fn generation_blocks_mark_spans_and_are_removed() {
        let t = ChatTemplate::new(CHATML, "", "").unwrap();
        assert!(t.has_generation());
        let (text, spans) = t
            .render_text(&conv(&[("user", "hi"), ("assistant", "\nyo")]), false)
            .unwrap();
        assert_eq!(
            text,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n\nyo<|im_end|>\n"
        );
        assert_eq!(&text[spans[0].0..spans[0].1], "\nyo<|im_end|>");
    }

    #[test]
    fn templates_without_generation_find_replies() {
        let src = "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}</s>{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let (text, spans) = t
            .render_text(&conv(&[("user", "a"), ("assistant", "  b b ")]), false)
            .unwrap();
        assert_eq!(text, "<user>a</s><assistant>b b</s>");
        assert_eq!(&text[spans[0].0..spans[0].1], "b b");
    }

    #[test]
    fn raise_exception_and_bad_templates_are_errors() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
        let e = t.render_text(&conv(&[("user", "x")]), false).unwrap_err();
        assert!(e.to_string().contains("roles must alternate"), "{e}");
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
        let t = ChatTemplate::new(CHATML, "", "").unwrap();
        assert!(t
            .render_text(&conv(&[("user", "\u{FDD0}")]), false)
            .is_err());
    }

    #[test]
    fn tojson_writes_what_python_writes() {
        let t = ChatTemplate::new(
            "{{ tools | tojson }}|{{ tools | tojson(indent=2) }}",
            "",
            "",
        )
        .unwrap();
        let c = Conversation {
            tools: Some(r#"[{"name": "f", "b": [1, 2.5, "é"], "a": {}}]"#),
            ..Conversation::default()
        };
        let (text, _) = t.render_text(&c, false).unwrap();
        assert_eq!(
            text,
            "[{\"name\": \"f\", \"b\": [1, 2.5, \"é\"], \"a\": {}}]|[\n  {\n    \"name\": \"f\",\n    \"b\": [\n      1,\n      2.5,\n      \"é\"\n    ],\n    \"a\": {}\n  }\n]"
        );
    }

    #[test]
    fn token_lookup_follows_char_to_token() {
        let text = "ab中c";
        // Tokens: "a", "b" + first byte of 中, rest of 中, "c".
        let offsets = [(0, 1), (1, 3), (3, 5), (5, 6)];
        assert_eq!(token_at(&offsets, text, 0), Some(0));
        assert_eq!(token_at(&offsets, text, 2), Some(1));
        assert_eq!(token_at(&offsets, text, 5), Some(3));
        assert_eq!(last_char_start(text, 5), 2);
        assert_eq!(token_at(&[(0, 1)], "ab", 1), None);
    }
}
