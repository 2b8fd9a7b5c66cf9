//! SentencePiece-style [`Encoder::encode_offsets`] against the reference pipeline: a BPE with
//! byte fallback trained here (both layouts, every `Metaspace` scheme, `ignore_merges`, unknown
//! tokens, a vocabulary that fails the `▁` proof) and the shared Phi-3-mini, as its file and as
//! transformers 5 rewrites it, on the shared data and adversarial strings.

use std::sync::OnceLock;

use serde_json::{json, Value};
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormSeq};
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, ModelWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
    Tokenizer,
};

use super::super::tests::{all_generated, check, shared_corpus, shared_data};
use crate::tokenize::Encoder;

/// Strings that stress the `▁` mapping, byte fallback and added tokens next to text.
fn adversarial() -> Vec<String> {
    let base = [
        " ",
        "  ",
        "   x",
        "x   ",
        " x ",
        "\t",
        "\n",
        " \n ",
        "\t x\n\ny ",
        "a  b   c    d",
        "▁",
        "▁▁",
        "x▁y",
        " ▁ x",
        "▁ ▁",
        "a ▁▁b ▁",
        "中文 分词",
        "  中文",
        "龘 𪚥 𠀀",
        "x龘y",
        "🎉 👍🏽 🇫🇷",
        "é naïve",
        "\u{a0}\u{3000}\u{200b}",
        "<0xE4>",
        " <0x41> ",
        "<unk>",
        "<|end|>",
        " <|end|> ",
        "a<|end|>b",
        "<|user|>\nhi<|end|>\n<|assistant|>\n ok</s>",
        "<s> x</s>  y",
        "</s></s> ",
        "<|endoftext|>   ",
        "x <|user|>  <|end|>",
    ];
    let mut out: Vec<String> = base.iter().map(ToString::to_string).collect();
    for a in &base[..20] {
        for b in &base[20..] {
            out.push(format!("{a}{b}{a}"));
        }
    }
    out
}

/// Phi-3-style added tokens: (content, rstrip, special).
const ADDED: &[(&str, bool, bool)] = &[
    ("<unk>", false, true),
    ("<s>", false, true),
    ("</s>", true, false),
    ("<|endoftext|>", false, true),
    ("<|assistant|>", true, true),
    ("<|end|>", true, true),
    ("<|user|>", true, true),
];

/// A SentencePiece-style BPE trained on the generated text: `▁`-words (`▁*[^▁]+`, so the
/// vocabulary passes the `▁` proof), a small alphabet (rare chars fall back to bytes), the
/// 256 byte tokens and `<unk>`, in the file layout (Prepend/Replace normaliser).
fn trained_sp_json() -> &'static Value {
    static JSON: OnceLock<Value> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut tk = Tokenizer::new(ModelWrapper::BPE(BPE::default()));
        tk.with_normalizer(Some(NormalizerWrapper::Sequence(NormSeq::new(vec![
            Prepend::new("▁".into()).into(),
            Replace::new(" ", "▁").unwrap().into(),
        ]))))
        .unwrap();
        let split = Split::new(
            SplitPattern::Regex("▁*[^▁]+|▁+".into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .unwrap();
        tk.with_pre_tokenizer(Some(PreTokenizerWrapper::Split(split)));
        let mut specials = vec![AddedToken::from("<unk>", true)];
        specials.extend((0..=255).map(|b| AddedToken::from(format!("<0x{b:02X}>"), true)));
        let mut trainer: TrainerWrapper = BpeTrainer::builder()
            .vocab_size(900)
            .limit_alphabet(80)
            .special_tokens(specials)
            .show_progress(false)
            .build()
            .into();
        let corpus = all_generated();
        tk.train(&mut trainer, corpus.iter()).unwrap();
        let mut v: Value = serde_json::from_str(&tk.to_string(false).unwrap()).unwrap();
        v["pre_tokenizer"] = Value::Null;
        v["model"]["byte_fallback"] = json!(true);
        v["model"]["fuse_unk"] = json!(true);
        v["model"]["unk_token"] = json!("<unk>");
        let vocab = v["model"]["vocab"].as_object().unwrap();
        let size = vocab.len();
        v["added_tokens"] = ADDED
            .iter()
            .enumerate()
            .map(|(i, &(c, r, sp))| {
                let id = vocab
                    .get(c)
                    .and_then(Value::as_u64)
                    .unwrap_or((size + i) as u64);
                json!({"id": id, "content": c, "lstrip": false, "rstrip": r,
                       "normalized": false, "special": sp, "single_word": false})
            })
            .collect();
        v
    })
}

/// The trained tokenizer in transformers 5's layout (no normaliser, a Metaspace pre-tokeniser,
/// no unknown token), like `AutoTokenizer`'s rewrite of Phi-3.
fn metaspace_layout(v: &Value, scheme: &str, split: bool) -> Value {
    let mut v = v.clone();
    v["normalizer"] = Value::Null;
    v["pre_tokenizer"] = json!({"type": "Metaspace", "replacement": "▁",
                                "prepend_scheme": scheme, "split": split});
    v["model"]["unk_token"] = Value::Null;
    v["model"]["ignore_merges"] = json!(false);
    v
}

/// The counting fast path (which now covers Metaspace plans) agrees with the reference too.
fn check_counts(enc: &Encoder, texts: &[String], label: &str) {
    for t in texts {
        for special in [false, true] {
            let want = enc.count_reference(t, special).unwrap();
            assert_eq!(
                enc.count(t, special).unwrap(),
                want,
                "{label}: count of {t:?}"
            );
        }
    }
}

fn texts() -> Vec<String> {
    let mut t = all_generated();
    t.extend(adversarial());
    t
}

#[test]
fn trained_sentencepiece_encodes_like_the_reference() {
    let base = trained_sp_json();
    let texts = texts();
    let mut cases = vec![("file layout".to_string(), base.clone())];
    for scheme in ["first", "always", "never"] {
        for split in [false, true] {
            let label = format!("metaspace {scheme} split={split}");
            cases.push((label, metaspace_layout(base, scheme, split)));
        }
    }
    let mut v = base.clone();
    v["model"]["ignore_merges"] = json!(true);
    cases.push(("ignore_merges".into(), v));
    let mut v = metaspace_layout(base, "first", false);
    v["model"]["ignore_merges"] = json!(true);
    cases.push(("metaspace ignore_merges".into(), v));
    let mut v = base.clone();
    v["normalizer"] = json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"});
    cases.push(("replace only".into(), v));
    for (label, json) in cases {
        let enc = Encoder::from_json(&json.to_string()).unwrap();
        let reason = enc.encode_fast_path_disabled_reason();
        assert!(reason.is_none(), "{label}: {reason:?}");
        let share = check(&enc, &texts, &label);
        check_counts(&enc, &texts, &label);
        // Only the empty rows take the reference path.
        assert!(share > 0.95, "{label}: only {share} fast");
    }
}

#[test]
fn sentencepiece_edge_vocabularies_stay_exact() {
    let base = trained_sp_json();
    let texts: Vec<String> = texts().into_iter().step_by(3).collect();
    // No byte fallback: rare chars become (fused or single) unknown tokens; those rows take the
    // reference path, the rest stay fast.
    for fuse in [true, false] {
        let mut v = base.clone();
        v["model"]["byte_fallback"] = json!(false);
        v["model"]["fuse_unk"] = json!(fuse);
        let enc = Encoder::from_json(&v.to_string()).unwrap();
        assert!(enc.encode_fast_path_disabled_reason().is_none());
        let share = check(&enc, &texts, &format!("unk fuse={fuse}"));
        assert!(share > 0.2, "{share}");
    }
    // A token with `▁` after another char: no cut is proven, each split is one word.
    let mut v = base.clone();
    let size = v["model"]["vocab"].as_object().unwrap().len();
    v["model"]["vocab"]["e▁"] = json!(size + ADDED.len());
    v["model"]["merges"]
        .as_array_mut()
        .unwrap()
        .insert(0, json!(["e", "▁"]));
    let enc = Encoder::from_json(&v.to_string()).unwrap();
    assert!(format!("{:?}", enc.fast).contains("Whole"));
    check(&enc, &texts, "e▁ in the vocabulary");
    // A normalised added token under the ▁ normaliser: the whole tokenizer falls back.
    let mut v = base.clone();
    v["added_tokens"][1]["normalized"] = json!(true);
    let enc = Encoder::from_json(&v.to_string()).unwrap();
    assert!(enc.encode_fast_path_disabled_reason().is_some());
    check(&enc, &texts, "normalized added token");
}

#[test]
fn sentencepiece_offsets_of_prefix_spaces_and_bytes() {
    let enc = Encoder::from_json(&trained_sp_json().to_string()).unwrap();
    let ms = metaspace_layout(trained_sp_json(), "first", false);
    let ms = Encoder::from_json(&ms.to_string()).unwrap();
    for t in [" hi", "x 龘", "<|end|> b", " ▁ x"] {
        for e in [&enc, &ms] {
            assert!(e.encode_fast(t).is_some(), "{t:?}");
            assert_eq!(
                e.encode_offsets(t, false).unwrap(),
                e.encode_offsets_reference(t, false).unwrap()
            );
        }
    }
    // The prepended ▁ shares the first char's range; a byte token gets its whole char.
    let (_, offsets) = enc.encode_offsets("x 龘", false).unwrap();
    assert_eq!(offsets.first(), Some(&(0, 1)));
    assert_eq!(offsets.last(), Some(&(2, 5)));
}

#[test]
fn phi3_both_layouts_encode_like_the_reference() {
    let Some(data) = shared_data() else {
        eprintln!("skipped: ../shared/data (beside the checkout) is absent");
        return;
    };
    let file = std::fs::read_to_string(data.join("tokenizers/phi-3-mini/tokenizer.json")).unwrap();
    let file: Value = serde_json::from_str(&file).unwrap();
    // What transformers 5 serialises for `AutoTokenizer` on this file (checked against
    // `tok.backend_tokenizer.to_str()`: the same vocabulary, merges and added tokens).
    let mut hf = metaspace_layout(&file, "first", false);
    hf["model"]["merges"] = file["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| json!(m.as_str().unwrap().split(' ').collect::<Vec<_>>()))
        .collect();
    let (texts, chat) = shared_corpus(&data);
    let phi3_chat: Vec<String> = chat
        .iter()
        .map(|d| {
            d.replace("<|im_start|>user\n", "<|user|>\n")
                .replace("<|im_start|>assistant\n", "<|assistant|>\n ")
                .replace("<|im_end|>\n", "<|end|>\n")
        })
        .collect();
    let mut extra = adversarial();
    extra.extend(chat.iter().step_by(5).cloned());
    std::thread::scope(|s| {
        for (label, json) in [("phi-3 file", file), ("phi-3 transformers", hf)] {
            let (texts, phi3_chat, extra) = (&texts, &phi3_chat, &extra);
            s.spawn(move || {
                let enc = Encoder::from_json(&json.to_string()).unwrap();
                let reason = enc.encode_fast_path_disabled_reason();
                assert!(reason.is_none(), "{label}: {reason:?}");
                assert!(enc.fast_path_disabled_reason().is_none(), "{label}");
                assert!(check(&enc, texts, label) > 0.99);
                check_counts(&enc, texts, label);
                assert!(check(&enc, phi3_chat, &format!("{label} chat")) > 0.99);
                assert!(check(&enc, extra, &format!("{label} adversarial")) > 0.99);
            });
        }
    });
}
