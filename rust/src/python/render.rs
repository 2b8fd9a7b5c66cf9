//! The `render` expression plugin: a messages column (+ system, tools) → ids, labels, error.

use polars::prelude::*;
use pyo3_polars::derive::polars_expr;
use serde::Deserialize;

use super::convert::{str_cells, to_polars};
use crate::error::SftError;
use crate::parallel;
use crate::render::{
    render_batch, ChatTemplate, Conversation, EndOfTurn, RenderOptions, TrainOn, Turn,
};
use crate::tokenize::registry;

#[derive(Deserialize)]
struct RenderKwargs {
    tokenizer: String,
    path: Option<String>,
    template: String,
    bos_token: String,
    eos_token: String,
    train_on: String,
    end_of_turn: String,
    add_generation_prompt: bool,
    /// Which optional inputs follow `messages`: (system, tools).
    has_system: bool,
    has_tools: bool,
}

fn output_type(fields: &[Field]) -> PolarsResult<Field> {
    Ok(Field::new(
        fields[0].name().clone(),
        DataType::Struct(vec![
            Field::new(
                "input_ids".into(),
                DataType::List(Box::new(DataType::UInt32)),
            ),
            Field::new("labels".into(), DataType::List(Box::new(DataType::Int32))),
            Field::new("render_error".into(), DataType::String),
        ]),
    ))
}

fn options(k: &RenderKwargs) -> Result<RenderOptions, SftError> {
    let train_on = match k.train_on.as_str() {
        "assistant" => TrainOn::Assistant,
        "last_assistant" => TrainOn::LastAssistant,
        "all" => TrainOn::All,
        o => return Err(SftError::Config(format!("train_on: unknown {o:?}"))),
    };
    let end_of_turn = match k.end_of_turn.as_str() {
        "template" => EndOfTurn::Template,
        "include" => EndOfTurn::Include,
        "exclude" => EndOfTurn::Exclude,
        o => return Err(SftError::Config(format!("end_of_turn: unknown {o:?}"))),
    };
    Ok(RenderOptions {
        train_on,
        end_of_turn,
        add_generation_prompt: k.add_generation_prompt,
    })
}

/// Per row: the (start, end) range of its turns in the flattened struct fields; null → None.
/// Flattened turns and, per row, their range in them (`None` = null row).
type TurnRanges = (Series, Vec<Option<(usize, usize)>>);

fn turn_ranges(messages: &Series) -> Result<TurnRanges, SftError> {
    let bad = |why: String| SftError::Schema(format!("messages: {why}"));
    let ca = messages
        .list()
        .map_err(|_| {
            bad(format!(
                "expected a list of {{role, content}}, got {}",
                messages.dtype()
            ))
        })?
        .rechunk();
    let arr = ca.downcast_as_array();
    let offsets = arr.offsets().as_slice();
    let validity = arr.validity();
    #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
    let ranges = (0..arr.len())
        .map(|i| {
            validity
                .is_none_or(|v| v.get_bit(i))
                .then(|| (offsets[i] as usize, offsets[i + 1] as usize))
        })
        .collect();
    Ok((ca.get_inner(), ranges))
}

#[polars_expr(output_type_func=output_type)]
fn render(inputs: &[Series], kwargs: RenderKwargs) -> PolarsResult<Series> {
    let enc = registry::get(&kwargs.tokenizer, kwargs.path.as_deref()).map_err(to_polars)?;
    let opts = options(&kwargs).map_err(to_polars)?;
    let source = crate::render::BUILTIN
        .iter()
        .find(|(name, _)| *name == kwargs.template)
        .map_or(kwargs.template.as_str(), |(_, src)| src);
    let template =
        ChatTemplate::new(source, &kwargs.bos_token, &kwargs.eos_token).map_err(to_polars)?;
    let (inner, ranges) = turn_ranges(&inputs[0]).map_err(to_polars)?;
    let st = inner.struct_().map_err(|_| {
        to_polars(SftError::Schema(format!(
            "messages: expected a list of struct {{role, content}}, got {}",
            inputs[0].dtype()
        )))
    })?;
    let field = |name: &str| {
        st.field_by_name(name).map_err(|_| {
            to_polars(SftError::Schema(format!(
                "messages: the turns have no {name:?} field"
            )))
        })
    };
    let (role_s, content_s) = (field("role")?, field("content")?);
    let roles = str_cells(&role_s).map_err(to_polars)?;
    let contents = str_cells(&content_s).map_err(to_polars)?;
    let mut next = 1;
    let mut optional = |present: bool| -> PolarsResult<Option<Vec<Option<&str>>>> {
        if !present {
            return Ok(None);
        }
        next += 1;
        str_cells(&inputs[next - 1]).map(Some).map_err(to_polars)
    };
    let system = optional(kwargs.has_system)?;
    let tools = optional(kwargs.has_tools)?;
    let mut errors: Vec<Option<String>> = vec![None; ranges.len()];
    let convs: Vec<Option<Conversation<'_>>> = ranges
        .iter()
        .enumerate()
        .map(|(row, r)| {
            let Some((a, b)) = *r else {
                errors[row] = Some("messages: null".into());
                return None;
            };
            let mut turns = Vec::with_capacity(b - a);
            for i in a..b {
                match (roles[i], contents[i]) {
                    (Some(role), Some(content)) => turns.push(Turn { role, content }),
                    _ => {
                        errors[row] = Some(format!("turn {}: null role or content", i - a));
                        return None;
                    }
                }
            }
            Some(Conversation {
                turns,
                system: system.as_ref().and_then(|s| s[row]),
                tools: tools.as_ref().and_then(|t| t[row]),
            })
        })
        .collect();
    let out = render_batch(&enc, &template, &convs, &opts).map_err(to_polars)?;
    parallel::add_progress(out.len());
    let n = out.len();
    let mut ids = ListPrimitiveChunkedBuilder::<UInt32Type>::new(
        "input_ids".into(),
        n,
        n * 512,
        DataType::UInt32,
    );
    let mut labels =
        ListPrimitiveChunkedBuilder::<Int32Type>::new("labels".into(), n, n * 512, DataType::Int32);
    for (row, r) in out.into_iter().enumerate() {
        match r {
            Some(Ok(x)) => {
                ids.append_slice(&x.input_ids);
                labels.append_slice(&x.labels);
            }
            other => {
                if let Some(Err(e)) = other {
                    errors[row] = Some(e);
                }
                ids.append_null();
                labels.append_null();
            }
        }
    }
    let err = StringChunked::from_iter_options("render_error".into(), errors.into_iter());
    let fields = [
        ids.finish().into_series(),
        labels.finish().into_series(),
        err.into_series(),
    ];
    StructChunked::from_series(inputs[0].name().clone(), n, fields.iter())
        .map(IntoSeries::into_series)
}
