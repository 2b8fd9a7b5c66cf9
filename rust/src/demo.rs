//! A built-in bilingual SFT data set and tokenizer, so that `sftfast demo` runs offline with
//! nothing outside the package.
//!
//! Rows are generated from a seeded splitmix64 stream: English and Chinese questions and answers
//! over a small vocabulary, log-normal lengths (a long tail past 4k tokens), skewed categories,
//! and a few deliberately bad rows (empty and null answers) so every drop reason shows up.
//! The tokenizer is a byte-level BPE in the Qwen2 layout (NFC, Qwen2 split regex, ByteLevel)
//! trained with the `tokenizers` crate's trainer on the generated text.

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, ModelWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Result, SftError};
use crate::tokenize::pretok::QWEN2_PATTERN;

const EN_WORDS: &[&str] = &[
    "the",
    "model",
    "data",
    "answer",
    "question",
    "explain",
    "why",
    "how",
    "what",
    "which",
    "write",
    "a",
    "short",
    "function",
    "that",
    "returns",
    "list",
    "of",
    "numbers",
    "in",
    "python",
    "translate",
    "sentence",
    "into",
    "french",
    "classify",
    "review",
    "as",
    "positive",
    "negative",
    "summarize",
    "article",
    "about",
    "climate",
    "change",
    "history",
    "science",
    "step",
    "by",
    "first",
    "then",
    "finally",
    "because",
    "is",
    "are",
    "can",
    "should",
    "we",
    "you",
    "it",
    "training",
    "language",
    "learning",
    "example",
    "result",
    "value",
    "error",
    "code",
    "test",
    "and",
    "or",
    "not",
    "with",
    "for",
    "to",
    "from",
    "on",
    "each",
    "every",
    "number",
    "total",
    "cost",
    "apples",
    "oranges",
    "buys",
    "sells",
    "price",
    "dollars",
    "hours",
    "minutes",
    "days",
];

const ZH_WORDS: &[&str] = &[
    "我们",
    "模型",
    "数据",
    "问题",
    "回答",
    "解释",
    "为什么",
    "如何",
    "什么",
    "请",
    "写",
    "一个",
    "简短",
    "函数",
    "返回",
    "列表",
    "数字",
    "翻译",
    "句子",
    "英文",
    "分类",
    "评论",
    "正面",
    "负面",
    "总结",
    "文章",
    "关于",
    "气候",
    "变化",
    "历史",
    "科学",
    "首先",
    "然后",
    "最后",
    "因为",
    "是",
    "可以",
    "应该",
    "训练",
    "语言",
    "学习",
    "例子",
    "结果",
    "价值",
    "错误",
    "代码",
    "测试",
    "和",
    "或者",
    "不",
    "法律",
    "医生",
    "病人",
    "症状",
    "治疗",
    "合同",
    "责任",
    "公司",
    "员工",
    "工资",
];

const CATEGORIES: &[(&str, u32)] = &[
    ("open_qa", 40),
    ("classification", 20),
    ("translation", 12),
    ("code", 12),
    ("math", 10),
    ("brainstorming", 6),
];

/// One generated row.
#[derive(Debug, Clone)]
pub struct DemoRow {
    /// Row id.
    pub id: u64,
    /// Task category (skewed).
    pub category: &'static str,
    /// `en` or `zh`.
    pub lang: &'static str,
    /// The prompt.
    pub question: String,
    /// The reply (`None` for a few deliberately null rows).
    pub answer: Option<String>,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    #[allow(clippy::cast_precision_loss)]
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    #[allow(clippy::cast_possible_truncation)]
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Log-normal word count with the given median.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn length(&mut self, median: f64, sigma: f64) -> usize {
        let (u1, u2) = (self.unit().max(1e-12), self.unit());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (median * (sigma * z).exp()).round().max(1.0) as usize
    }
}

fn sentence(rng: &mut Rng, zh: bool, words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        if zh {
            s.push_str(ZH_WORDS[rng.below(ZH_WORDS.len())]);
            if i % 9 == 8 {
                s.push('，');
            }
        } else {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(EN_WORDS[rng.below(EN_WORDS.len())]);
            if i % 11 == 10 {
                s.push(',');
            }
        }
    }
    s.push(if zh { '。' } else { '.' });
    s
}

/// Generate `n` rows from `seed` (same seed, same rows).
pub fn demo_rows(n: usize, seed: u64) -> Vec<DemoRow> {
    let mut rng = Rng(seed ^ 0x5f7f_a57f_0000_0001);
    let total: u32 = CATEGORIES.iter().map(|c| c.1).sum();
    (0..n)
        .map(|i| {
            let zh = rng.below(5) < 2;
            let mut pick = rng.below(total as usize);
            let mut category = CATEGORIES[0].0;
            for (name, w) in CATEGORIES {
                if pick < *w as usize {
                    category = name;
                    break;
                }
                pick -= *w as usize;
            }
            let qlen = rng.length(14.0, 0.6);
            let question = sentence(&mut rng, zh, qlen);
            let answer = match rng.below(200) {
                0 => None,
                1 => Some(String::new()),
                _ => {
                    let alen = rng.length(90.0, 1.0);
                    Some(sentence(&mut rng, zh, alen))
                }
            };
            DemoRow {
                id: i as u64,
                category,
                lang: if zh { "zh" } else { "en" },
                question,
                answer,
            }
        })
        .collect()
}

/// Train a small byte-level BPE (Qwen2 layout) on `texts`; returns its `tokenizer.json` text.
///
/// # Errors
/// [`SftError::Tokenizer`] when training fails.
pub fn train_tokenizer(texts: &[String], vocab_size: usize) -> Result<String> {
    let err = |e: Box<dyn std::error::Error + Send + Sync>| SftError::Tokenizer(e.to_string());
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(vec![
            AddedToken::from("<|endoftext|>", true),
            AddedToken::from("<|im_start|>", true),
            AddedToken::from("<|im_end|>", true),
        ])
        .build()
        .into();
    let mut tk = Tokenizer::new(ModelWrapper::BPE(BPE::default()));
    tk.with_normalizer(Some(NFC)).map_err(err)?;
    let split = Split::new(
        SplitPattern::Regex(QWEN2_PATTERN.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(err)?;
    tk.with_pre_tokenizer(Some(Sequence::new(vec![
        split.into(),
        ByteLevel::new(false, false, false).into(),
    ])));
    tk.with_decoder(Some(ByteLevel::new(false, false, false)));
    tk.train(&mut trainer, texts.iter()).map_err(err)?;
    tk.to_string(false).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::Encoder;

    #[test]
    fn rows_are_deterministic_and_bilingual() {
        let a = demo_rows(500, 7);
        let b = demo_rows(500, 7);
        assert_eq!(
            a.iter().map(|r| &r.question).collect::<Vec<_>>(),
            b.iter().map(|r| &r.question).collect::<Vec<_>>()
        );
        assert!(a.iter().any(|r| r.lang == "zh") && a.iter().any(|r| r.lang == "en"));
        assert!(a.iter().any(|r| r.answer.is_none()));
    }

    #[test]
    fn trained_tokenizer_takes_the_fast_path_and_matches_reference() {
        let rows = demo_rows(300, 1);
        let texts: Vec<String> = rows
            .iter()
            .flat_map(|r| [r.question.clone(), r.answer.clone().unwrap_or_default()])
            .collect();
        let json = train_tokenizer(&texts, 800).unwrap();
        let enc = Encoder::from_json(&json).unwrap();
        assert!(enc.fast_path_disabled_reason().is_none());
        for t in &texts {
            assert_eq!(
                enc.count(t, false).unwrap(),
                enc.count_reference(t, false).unwrap()
            );
        }
    }
}
