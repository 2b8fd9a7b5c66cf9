//! Fast path vs reference path on small generated tokenizers (and the shared real ones when
//! `../shared` is present).

use super::*;
use serde_json::json;

/// A byte-level BPE tokenizer in the `tokenizer.json` format with a few merges, built in code.
fn byte_level_json(pattern: &str, normalizer: serde_json::Value) -> String {
    let chars = {
        // GPT-2's byte → char table.
        let mut t = Vec::new();
        let mut n = 0u32;
        for b in 0..=255u8 {
            let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
            t.push(if printable {
                char::from(b)
            } else {
                n += 1;
                char::from_u32(256 + n - 1).unwrap()
            });
        }
        t
    };
    let mut vocab = serde_json::Map::new();
    for (i, c) in chars.iter().enumerate() {
        vocab.insert(c.to_string(), json!(i));
    }
    let map = |s: &str| s.bytes().map(|b| chars[b as usize]).collect::<String>();
    // Merges over common English fragments and one CJK char (3 bytes → 1 token).
    let words = [
        "th", "the", " the", "in", "ing", " a", "an", " an", "er", "  ", "    ", "中", "文",
    ];
    let mut merges = Vec::new();
    for w in words {
        let m = map(w);
        let cs: Vec<char> = m.chars().collect();
        // Left-to-right merges building the word.
        let mut left = cs[0].to_string();
        for c in &cs[1..] {
            let joined = format!("{left}{c}");
            if !vocab.contains_key(&joined) {
                let id = vocab.len();
                vocab.insert(joined.clone(), json!(id));
                merges.push(json!([left.clone(), c.to_string()]));
            }
            left = joined;
        }
    }
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{"id": vocab.len(), "content": "<|end|>", "single_word": false,
                          "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": normalizer,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}
        ]},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    })
    .to_string()
}

/// A SentencePiece-style BPE (Prepend ▁, Replace ' ' → ▁, byte fallback, no pre-tokenizer).
fn sentencepiece_json(byte_fallback: bool) -> String {
    let mut vocab = serde_json::Map::new();
    vocab.insert("<unk>".into(), json!(0));
    if byte_fallback {
        for b in 0..=255u32 {
            vocab.insert(format!("<0x{b:02X}>"), json!(vocab.len()));
        }
    }
    for c in "▁abcdefghijklmnopqrstuvwxyzTH.,中".chars() {
        vocab.insert(c.to_string(), json!(vocab.len()));
    }
    let mut merges = Vec::new();
    for (a, b) in [
        ("▁", "t"),
        ("h", "e"),
        ("▁t", "he"),
        ("i", "n"),
        ("in", "g"),
        ("▁", "a"),
    ] {
        let j = format!("{a}{b}");
        if !vocab.contains_key(&j) {
            vocab.insert(j, json!(vocab.len()));
        }
        merges.push(json!(format!("{a} {b}")));
    }
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": null, "post_processor": null, "decoder": null,
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": true, "byte_fallback": byte_fallback,
                  "vocab": vocab, "merges": merges}
    })
    .to_string()
}

fn texts() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        "the thing in the ring",
        "The  THE the\n\n   theme    in ing",
        "中文中文 文中 and the 中",
        "it's <|end|> the end",
        "tabs\tand\r\nnewlines\n\n\n   ",
        "🎉 ünïcödé e\u{301} Å",
        "ſ ß ﬁ",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let alphabet: Vec<char> = "the ingan Tʼ'sd\n\t中文，。1234!?é\u{301}🎉"
        .chars()
        .collect();
    let mut state: u64 = 42;
    for _ in 0..500 {
        let mut t = String::new();
        for _ in 0..(state % 60) {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            t.push(alphabet[((state >> 33) % alphabet.len() as u64) as usize]);
        }
        state = state.wrapping_add(7);
        v.push(t);
    }
    v
}

fn assert_parity(enc: &Encoder, label: &str) {
    for t in texts() {
        for special in [false, true] {
            assert_eq!(
                enc.count(&t, special).unwrap(),
                enc.count_reference(&t, special).unwrap(),
                "{label}: {t:?}"
            );
        }
    }
}

#[test]
fn byte_level_fast_path_matches_reference() {
    for pattern in [
        pretok::CL100K_PATTERN,
        pretok::QWEN2_PATTERN,
        r"\w+|[^\w\s]+|\s+",
    ] {
        for norm in [
            serde_json::Value::Null,
            json!({"type": "NFC"}),
            json!({"type": "NFKC"}),
        ] {
            let enc = Encoder::from_json(&byte_level_json(pattern, norm)).unwrap();
            assert!(
                enc.fast_path_disabled_reason().is_none(),
                "{:?}",
                enc.fast_reason
            );
            assert_parity(&enc, pattern);
        }
    }
}

#[test]
fn sentencepiece_fast_path_matches_reference() {
    for fb in [true, false] {
        let enc = Encoder::from_json(&sentencepiece_json(fb)).unwrap();
        assert!(
            enc.fast_path_disabled_reason().is_none(),
            "{:?}",
            enc.fast_reason
        );
        assert_parity(&enc, "sentencepiece");
    }
}

#[test]
fn batch_counts_equal_single_counts_for_any_thread_count() {
    let enc = Encoder::from_json(&byte_level_json(
        pretok::QWEN2_PATTERN,
        json!({"type": "NFC"}),
    ))
    .unwrap();
    let owned = texts();
    let rows: Vec<Option<&str>> = owned
        .iter()
        .enumerate()
        .map(|(i, t)| (i % 7 != 3).then_some(t.as_str()))
        .collect();
    let one: Vec<Option<u32>> = rows
        .iter()
        .map(|t| t.map(|t| u32::try_from(enc.count(t, false).unwrap()).unwrap()))
        .collect();
    for threads in [1, 2, 3] {
        crate::parallel::set_num_threads(threads).unwrap();
        assert_eq!(enc.count_batch(&rows, false).unwrap(), one);
    }
    crate::parallel::set_num_threads(0).unwrap();
}

#[test]
fn bounds_hold() {
    let enc = Encoder::from_json(&byte_level_json(
        pretok::CL100K_PATTERN,
        serde_json::Value::Null,
    ))
    .unwrap();
    for t in texts() {
        if let Some((lo, hi)) = enc.count_bounds(&t) {
            let n = enc.count(&t, false).unwrap();
            assert!(lo <= n && n <= hi, "{t:?}: {lo} <= {n} <= {hi}");
        }
    }
}

#[test]
fn unsupported_tokenizers_fall_back_and_say_why() {
    let mut v: serde_json::Value =
        serde_json::from_str(&byte_level_json(pretok::CL100K_PATTERN, json!(null))).unwrap();
    v["normalizer"] = json!({"type": "Strip", "strip_left": true, "strip_right": true});
    let enc = Encoder::from_json(&v.to_string()).unwrap();
    assert!(enc.fast_path_disabled_reason().unwrap().contains("Strip"));
    assert_parity(&enc, "strip");
}

#[test]
fn invalid_json_is_a_tokenizer_error() {
    let err = Encoder::from_json("{not json").unwrap_err();
    assert!(matches!(err, SftError::Tokenizer(_)), "{err}");
}

/// The shared real tokenizers, when `../shared` is beside the checkout.
#[test]
fn shared_tokenizers_fast_path_matches_reference() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/tokenizers");
    if !root.exists() {
        eprintln!("skipped: {} is absent", root.display());
        return;
    }
    for name in [
        "qwen2-bpe151k-rebuilt",
        "cl100k_base",
        "phi-2",
        "phi-3-mini",
    ] {
        let enc = Encoder::from_path(&root.join(name)).unwrap();
        assert!(
            enc.fast_path_disabled_reason().is_none(),
            "{name}: {:?}",
            enc.fast_reason
        );
        assert_parity(&enc, name);
    }
}

#[test]
fn nfc_inert_ranges() {
    use unicode_normalization_alignments::char::canonical_combining_class;
    use unicode_normalization_alignments::{is_nfc_quick, IsNormalized};
    for c in (0u32..=0x11_0000).filter_map(char::from_u32) {
        if super::spec::nfc_inert(c) {
            assert_eq!(canonical_combining_class(c), 0, "{c:?}");
            assert_eq!(is_nfc_quick(std::iter::once(c)), IsNormalized::Yes, "{c:?}");
        }
    }
}

#[test]
fn short_key_in_equals_short_key() {
    let text = "hello world, this is a longer text with pieces";
    for start in 0..text.len() {
        for len in 1..16.min(text.len() - start + 1) {
            if let Some(piece) = text.get(start..start + len) {
                assert_eq!(
                    super::short_key_in(text, piece.as_bytes()),
                    super::short_key(piece.as_bytes())
                );
            }
        }
    }
    let other = String::from("elsewhere");
    assert_eq!(
        super::short_key_in(text, other.as_bytes()),
        super::short_key(other.as_bytes())
    );
}

/// Real Chinese text (the shared legal and medical sets), where most pieces are long runs of
/// CJK chars that start as whole-char tokens ([`super::bpe`]'s `whole_chars`): ids and counts
/// equal to the `tokenizers` crate on every line, for the byte-level shared tokenizers.
#[test]
fn shared_chinese_text_matches_reference() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    let files = [
        "lawyer_llama_zh/legal_counsel_multi_turn_with_article_v2.json",
        "medicalgpt_medical_sft_zh/medical_sft_1K_format.jsonl",
    ];
    if !files.iter().all(|f| data.join(f).exists()) {
        eprintln!(
            "skipped: the shared Chinese sets are absent under {}",
            data.display()
        );
        return;
    }
    let mut lines: Vec<String> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(data.join(f)).unwrap();
        // Up to ~600 kB of each file, cut into lines (JSON escapes and all: still real text).
        let mut taken = 0;
        for line in text.lines() {
            if taken > 600_000 {
                break;
            }
            taken += line.len();
            lines.push(line.to_string());
        }
    }
    for name in ["qwen2-bpe151k-rebuilt", "cl100k_base"] {
        let enc = Encoder::from_path(&data.join("tokenizers").join(name)).unwrap();
        for t in &lines {
            let (ids, offsets) = enc.encode_offsets(t, false).unwrap();
            let (want, want_offsets) = enc.encode_offsets_reference(t, false).unwrap();
            assert_eq!(ids, want, "{name}: {t:?}");
            assert_eq!(offsets, want_offsets, "{name}: {t:?}");
            assert_eq!(enc.count(t, false).unwrap(), want.len(), "{name}: {t:?}");
        }
    }
}
