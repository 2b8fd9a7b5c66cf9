//! Fast [`Encoder::encode_offsets`] against the reference pipeline: ids and offsets, on
//! tokenizers trained here (byte-level BPE under several normalisers, pre-tokenisers,
//! post-processors and added-token flags) and on the shared real tokenizers and data sets.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{json, Value};
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{ModelWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::super::pretok;
use super::Encoder;

/// A deterministic generator (LCG), so failures reproduce.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as usize
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.next() % v.len()]
    }
}

const WORDS: &[&str] = &[
    "the",
    "The",
    "of",
    "and",
    "in",
    "ing",
    "token",
    "tokenizer",
    "offsets",
    "assistant",
    "user",
    "hello",
    "world",
    "it's",
    "you'll",
    "I'M",
    "don't",
    "中文",
    "分词器",
    "我们",
    "的",
    "是",
    "模型",
    "训练",
    "数据",
    "，",
    "。",
    "！",
    "？",
    "“",
    "”",
    "🎉",
    "👍🏽",
    "🇫🇷",
    "é",
    "naïve",
    "Ünïcödé",
    "ſ",
    "ß",
    "ﬁ",
    "１２３",
    "Ａ",
    "fn",
    "main()",
    "{",
    "}",
    "=>",
    "let",
    "x",
    "+=",
    "1",
    "2024",
    "3.14",
    "0x1F",
    "::",
    "//",
    "#",
    "\"quoted\"",
    "'single'",
    "<",
    ">",
    "|",
    "\u{a0}",
    "\u{3000}",
    "\u{200b}",
    "\u{85}",
];
const SPACES: &[&str] = &[
    " ", " ", " ", " ", "  ", "   ", "    ", "        ", "\n", "\n\n", "\t", "\r\n", " \n",
    "\n    ", "",
];
const ADDED: &[&str] = &[
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<tool>",
    "</s>",
    "<mask>",
    "    ",
    "  ",
];

/// English, Chinese, code, whitespace and emoji mixed, with added-token text sprinkled in.
fn generated_texts(n: usize, seed: u64, with_added: bool) -> Vec<String> {
    let mut rng = Lcg(seed);
    let mut out = vec![
        String::new(),
        "\n".into(),
        "\nhello".into(),
        " ".into(),
        "   leading spaces".into(),
        "trailing spaces   ".into(),
        "中".into(),
        "🎉".into(),
        // Rows the fast path declines: NFC changes the text, a single-word token, a normalised
        // token that NFC would change.
        "cafe\u{301} e\u{301}x and the e\u{301}x".into(),
        "a word, words and word".into(),
        "x e\u{301}x <|im_end|> word".into(),
    ];
    for _ in 0..n {
        let mut t = String::new();
        if rng.next() % 5 == 0 {
            t.push('\n');
        }
        for _ in 0..rng.next() % 40 {
            t.push_str(rng.pick(WORDS));
            if with_added && rng.next() % 9 == 0 {
                t.push_str(rng.pick(SPACES));
                t.push_str(rng.pick(ADDED));
            }
            t.push_str(rng.pick(SPACES));
        }
        out.push(t);
    }
    out
}

/// ChatML documents built from generated turns (special tokens, newlines, spaces before them).
fn chat_documents(texts: &[String]) -> Vec<String> {
    texts
        .chunks(3)
        .enumerate()
        .map(|(i, turns)| {
            let mut doc = String::new();
            for (j, t) in turns.iter().enumerate() {
                let role = ["system", "user", "assistant"][j % 3];
                let sep = if i % 4 == 0 { " " } else { "" };
                doc.push_str(&format!("<|im_start|>{role}\n{t}{sep}<|im_end|>\n"));
            }
            if i % 2 == 0 {
                doc.push_str("<|user|>\nhi<|end|>\n<|assistant|>\n \nok</s> <mask> x <tool> y");
            }
            doc
        })
        .collect()
}

/// A byte-level BPE trained on the generated text (Qwen2 split), as `tokenizer.json`.
fn trained_json() -> &'static Value {
    static JSON: OnceLock<Value> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut tk = Tokenizer::new(ModelWrapper::BPE(BPE::default()));
        let split = Split::new(
            SplitPattern::Regex(pretok::QWEN2_PATTERN.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .unwrap();
        tk.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            split.into(),
            ByteLevel::new(false, false, false).into(),
        ]))));
        let mut trainer: TrainerWrapper = BpeTrainer::builder()
            .vocab_size(700)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        let corpus = generated_texts(3000, 1, false);
        tk.train(&mut trainer, corpus.iter()).unwrap();
        serde_json::from_str(&tk.to_string(false).unwrap()).unwrap()
    })
}

/// The trained model under another normaliser, pre-tokeniser, post-processor, with added
/// tokens of every flag combination the fast path handles or declines.
fn variant(normalizer: Value, pre_tokenizer: Value, post_processor: Value) -> Encoder {
    let mut v = trained_json().clone();
    let size = v["model"]["vocab"].as_object().unwrap().len();
    // (content, lstrip, rstrip, normalized, special, single_word)
    let tokens = [
        ("<|im_start|>", false, false, false, true, false),
        ("<|im_end|>", false, false, false, true, false),
        ("<|endoftext|>", false, false, false, true, false),
        ("<tool>", true, true, false, false, false),
        ("</s>", false, true, false, true, false),
        ("<mask>", true, false, false, true, false),
        ("    ", false, false, true, false, false),
        ("  ", false, false, true, false, false),
        ("e\u{301}x", false, false, true, false, false),
        ("word", false, false, false, false, true),
    ];
    v["added_tokens"] = tokens
        .iter()
        .enumerate()
        .map(|(i, &(c, l, r, n, s, w))| {
            json!({"id": size + i, "content": c, "lstrip": l, "rstrip": r, "normalized": n,
                   "special": s, "single_word": w})
        })
        .collect();
    v["normalizer"] = normalizer;
    v["pre_tokenizer"] = pre_tokenizer;
    v["post_processor"] = post_processor;
    Encoder::from_json(&v.to_string()).unwrap()
}

fn split_pre(pattern: &str) -> Value {
    json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}
    ]})
}

fn byte_level_post(trim: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": trim, "use_regex": true})
}

/// Compare every text both ways; the share of rows the fast path took.
pub(super) fn check(enc: &Encoder, texts: &[String], label: &str) -> f64 {
    let mut fast = 0usize;
    for t in texts {
        fast += usize::from(enc.encode_fast(t).is_some());
        for special in [false, true] {
            let got = enc.encode_offsets(t, special).unwrap();
            let want = enc.encode_offsets_reference(t, special).unwrap();
            assert_eq!(got.0, want.0, "{label}: ids of {t:?} (special {special})");
            assert_eq!(
                got.1, want.1,
                "{label}: offsets of {t:?} (special {special})"
            );
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let share = fast as f64 / texts.len().max(1) as f64;
    eprintln!(
        "{label}: {:.1}% of {} rows fast",
        100.0 * share,
        texts.len()
    );
    share
}

pub(super) fn all_generated() -> Vec<String> {
    let mut texts = generated_texts(600, 7, true);
    let chat = chat_documents(&generated_texts(150, 9, false));
    texts.extend(chat);
    texts
}

#[test]
fn trained_byte_level_encodes_like_the_reference() {
    let texts = all_generated();
    let n = trained_json()["model"]["vocab"].as_object().unwrap().len();
    let template = json!({"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "</s>", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {
            "<|endoftext|>": {"id": "<|endoftext|>", "ids": [n + 2], "tokens": ["<|endoftext|>"]},
            "</s>": {"id": "</s>", "ids": [n + 4, 1], "tokens": ["</s>", "x"]}}});
    let gpt2 = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                      "use_regex": true});
    let cases = [
        (
            "qwen2+NFC",
            json!({"type": "NFC"}),
            split_pre(pretok::QWEN2_PATTERN),
            byte_level_post(false),
        ),
        (
            "cl100k",
            Value::Null,
            split_pre(pretok::CL100K_PATTERN),
            Value::Null,
        ),
        (
            "other regex+NFKC",
            json!({"type": "NFKC"}),
            split_pre(r"\w+|[^\w\s]+|\s+"),
            Value::Null,
        ),
        (
            "gpt2 prefix space",
            Value::Null,
            gpt2,
            byte_level_post(false),
        ),
        (
            "template",
            json!({"type": "NFC"}),
            split_pre(pretok::QWEN2_PATTERN),
            template,
        ),
    ];
    for (label, norm, pre, post) in cases {
        let enc = variant(norm, pre, post);
        assert!(enc.encode_fast_path_disabled_reason().is_none(), "{label}");
        let share = check(&enc, &texts, label);
        // Our NFKC step copies any non-ASCII text, and a copy sends the row to the reference.
        let min = if label.contains("NFKC") { 0.0 } else { 0.9 };
        assert!(share >= min, "{label}: only {share} fast");
    }
}

#[test]
fn declined_tokenizers_fall_back_and_say_why() {
    let texts: Vec<String> = all_generated().into_iter().step_by(7).collect();
    let trims = variant(
        Value::Null,
        split_pre(pretok::CL100K_PATTERN),
        byte_level_post(true),
    );
    assert!(trims
        .encode_fast_path_disabled_reason()
        .unwrap()
        .contains("trims"));
    check(&trims, &texts, "trim_offsets");
    let mut v = trained_json().clone();
    v["normalizer"] = json!({"type": "Strip", "strip_left": true, "strip_right": true});
    let strip = Encoder::from_json(&v.to_string()).unwrap();
    assert!(strip.encode_fast_path_disabled_reason().is_some());
    check(&strip, &texts, "strip");
}

#[test]
fn partial_char_tokens_cover_the_whole_char() {
    // Rare CJK chars are byte tokens in a 700-token vocabulary: each gets the char's range.
    let enc = variant(Value::Null, split_pre(pretok::QWEN2_PATTERN), Value::Null);
    let (ids, offsets) = enc.encode_offsets("x 龘", false).unwrap();
    assert!(ids.len() > 2, "{ids:?}");
    assert_eq!(offsets[offsets.len() - 1], (2, 5));
    assert_eq!(
        (ids, offsets),
        enc.encode_offsets_reference("x 龘", false).unwrap()
    );
}

// --------------------------------------------------------------------------------------------
// Shared real tokenizers and data
// --------------------------------------------------------------------------------------------

/// `../shared/data` beside the checkout, when present.
pub(crate) fn shared_data() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    root.join("tokenizers").is_dir().then_some(root)
}

fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

/// Records of a data file: a JSON array, or JSON Lines.
fn records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    if text.trim_start().starts_with('[') {
        if let Ok(Value::Array(a)) = serde_json::from_str(&text) {
            return a;
        }
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every distinct string of every record under `data` (sorted), and ChatML documents built
/// from each record's strings (user/assistant turns, special-token text inline).
pub(crate) fn shared_corpus(data: &Path) -> (Vec<String>, Vec<String>) {
    let mut files = Vec::new();
    let mut stack = vec![data.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "tokenizers") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "json" || x == "jsonl") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut all = Vec::new();
    let mut chat = Vec::new();
    for f in files {
        for (i, r) in records(&f).iter().enumerate() {
            let mut strings = Vec::new();
            collect_strings(r, &mut strings);
            if i % 3 == 0 && !strings.is_empty() {
                let mut doc = String::new();
                for (j, s) in strings.iter().enumerate() {
                    let role = if j % 2 == 0 { "user" } else { "assistant" };
                    doc.push_str(&format!("<|im_start|>{role}\n{s}<|im_end|>\n"));
                }
                chat.push(doc);
            }
            all.extend(strings);
        }
    }
    all.sort_unstable();
    all.dedup();
    (all, chat)
}

#[test]
fn shared_tokenizers_encode_like_the_reference() {
    let Some(data) = shared_data() else {
        eprintln!("skipped: ../shared/data (beside the checkout) is absent");
        return;
    };
    let (texts, chat) = shared_corpus(&data);
    let extra: Vec<String> = chat
        .iter()
        .step_by(5)
        .map(|d| format!("\n{}", d.replace("<|im_end|>", " <|im_end|>")))
        .chain(chat.iter().step_by(7).map(|d| {
            d.replace("<|im_start|>", "<|user|>\n")
                .replace("<|im_end|>\n", "<|end|>\n<|endoftext|>")
        }))
        .collect();
    let names = [
        "qwen2-bpe151k-rebuilt",
        "cl100k_base",
        "phi-2",
        "phi-3-mini",
    ];
    std::thread::scope(|s| {
        for name in names {
            let (texts, chat, extra) = (&texts, &chat, &extra);
            let data = &data;
            s.spawn(move || {
                let enc = Encoder::from_path(&data.join("tokenizers").join(name)).unwrap();
                let reason = enc.encode_fast_path_disabled_reason();
                eprintln!("{name}: fast encode disabled: {reason:?}");
                assert!(reason.is_none(), "{name}: {reason:?}");
                let share = check(&enc, texts, name);
                assert!(share > 0.9, "{name}: {share}");
                check(&enc, chat, &format!("{name} chat"));
                check(&enc, extra, &format!("{name} chat variants"));
            });
        }
    });
}
